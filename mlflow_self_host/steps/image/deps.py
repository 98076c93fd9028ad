"""`inv deps`: the image's locked dependencies, docker/requirements.lock, made from the top-level files.

- docker/requirements.txt: what the tracking server needs (ranges, edited by hand);
- docker/requirements-nodeps.txt: packages installed without their dependencies (the full mlflow, for
  its web UI and server code only: its other dependencies are left out on purpose);
- docker/requirements.lock: every package of both, pinned, with the hashes of all its files, made by
  uv (`uv pip compile --universal --generate-hashes`, for every Python from 3.10), and installed by
  the Dockerfile with `pip install --require-hashes --no-deps`. The same commit builds the same server;
  a file that does not match its hash fails the build. The image's label
  ``io.mlflow-self-host.requirements-lock`` records the lock's sha256.

A regeneration keeps the versions already locked where the inputs still allow them (uv reads the old
lock as its preferences); ``upgrade`` takes the newest allowed. It shows what changed.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ...core.errors import UserError

DOCKER_DIR = "docker"  # the build context: Dockerfile, entrypoint.sh, requirements.lock
INPUT = "requirements.txt"
NODEPS = "requirements-nodeps.txt"
LOCK = "requirements.lock"
PYTHON_FROM = "3.10"
HEADER = """\
# The image's locked dependencies: `inv deps` makes this file from requirements.txt and (without their
# dependencies) requirements-nodeps.txt with uv; do not edit it by hand. Every package is pinned with
# the hashes of its files; the Dockerfile installs it with `pip install --require-hashes --no-deps`.
"""
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def context_dir(settings) -> Path:
    return settings.root / DOCKER_DIR


def lock_path(settings) -> Path:
    return context_dir(settings) / LOCK


def digest(settings) -> str:
    """sha256 of the lock file (the image's label), or "unlocked" when there is none."""
    path = lock_path(settings)
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "unlocked"


def pins(text: str) -> dict[str, str]:
    """{"numpy ; python_full_version >= '3.12'": "2.5.5", ...} of a lock's text."""
    found = {}
    for line in text.splitlines():
        m = _PIN.match(line.strip())
        if m:
            name = m.group(1).lower().replace("_", "-")
            found[name + (f" ; {m.group(3).strip()}" if m.group(3) else "")] = m.group(2)
    return found


def changes(old: dict[str, str], new: dict[str, str]) -> list[tuple[str, str, str]]:
    """(package, old version or "", new version or "") for what differs, by package."""
    return [(name, old.get(name, ""), new.get(name, "")) for name in sorted(set(old) | set(new))
            if old.get(name) != new.get(name)]


def _uv() -> list[str]:
    found = shutil.which("uv", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if not found:
        raise UserError("uv is not installed (it makes the lock)",
                        hint="pip install uv (it is in the project's dependencies: pip install -e .)")
    return [found]


def _compile(source: Path, output: Path, upgrade: bool, no_deps: bool) -> None:
    # --no-python-downloads: the lock is universal from PYTHON_FROM on, so any local interpreter will do for the
    # few sdists uv builds; without it uv fetches a managed CPython PYTHON_FROM first (about 30 MB; offline or
    # behind a proxy that lets only the package index through, 9 s of failed retries per compile).
    cmd = _uv() + ["pip", "compile", str(source), "--generate-hashes", "--universal", "--python-version",
                   PYTHON_FROM, "--no-python-downloads", "--no-header", "--quiet", "-o", str(output)]
    if upgrade:
        cmd.append("--upgrade")
    if no_deps:
        cmd.append("--no-deps")
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise UserError(f"uv could not lock {source.name}: {lines[-1] if lines else 'exit ' + str(result.returncode)}",
                        hint="check the versions asked for in docker/requirements*.txt; the index must be reachable")


def generate(settings, upgrade: bool = False) -> str:
    """The lock's text for the inputs as they are now (the old lock as preferences)."""
    docker = context_dir(settings)
    old = lock_path(settings)
    with tempfile.TemporaryDirectory(prefix="msh-deps-") as tmp:
        parts = []
        for source, no_deps in ((docker / INPUT, False), (docker / NODEPS, True)):
            if not source.exists():
                raise UserError(f"{source} is missing", hint="run from the project folder")
            output = Path(tmp) / f"{source.stem}.lock"
            if old.exists() and not upgrade:
                output.write_text(old.read_text())  # uv keeps what it can of an existing output file
            _compile(source, output, upgrade, no_deps)
            names = {n.split(" ;")[0] for n in pins(output.read_text())}
            parts.append((source.name, output.read_text(), names))
    # mlflow's --no-deps pin also appears in the main lock when something depends on it: keep one
    main_text, nodeps_text = parts[0][1], parts[1][1]
    nodeps_names = parts[1][2]
    main_kept = _without(main_text, nodeps_names)
    return (HEADER + f"\n# from {INPUT}\n" + main_kept.strip() + "\n"
            + f"\n# from {NODEPS} (installed without their dependencies)\n" + nodeps_text.strip() + "\n")


def _without(text: str, names: set[str]) -> str:
    """The lock text without the entries (a pin line and its hash lines) of ``names``."""
    out, skipping = [], False
    for line in text.splitlines():
        m = _PIN.match(line.strip()) if not line.startswith((" ", "\t")) else None
        if m or (line and not line.startswith((" ", "\t", "#"))):
            skipping = bool(m) and m.group(1).lower().replace("_", "-") in names
        if not skipping:
            out.append(line)
    return "\n".join(out)


def make_plan(old_text: str, new_text: str, check: bool = False):
    """The lock file's change: none when it is what the inputs give (``check`` refuses a difference). Pure."""
    from ...core.plan import Plan

    diff = changes(pins(old_text), pins(new_text))
    plan = Plan(f"docker/{LOCK}")
    if new_text == old_text:
        plan.reason = f"up to date ({len(pins(new_text))} packages): no change"
        return plan
    if check:
        raise UserError(f"docker/{LOCK} is not what docker/{INPUT} and docker/{NODEPS} give now"
                        + (f" ({len(diff)} package{'s' if len(diff) != 1 else ''} differ)" if diff else
                           " (its hashes or layout differ)"),
                        hint="run `inv deps` and commit the lock")
    plan.add("write", f"docker/{LOCK}", f"{len(pins(new_text))} packages, {len(diff)} changed", op=new_text)
    return plan


def run(settings, upgrade: bool = False, dry_run: bool = False, check: bool = False) -> list:
    """`inv deps`: regenerate the lock (read: uv compiles into a temporary folder), show what changed, write
    it (the runner's one step); ``dry_run``/``check`` write nothing (``check`` fails when the lock is not
    what the inputs give)."""
    from ...core import console
    from .. import runner

    path = lock_path(settings)
    old_text = path.read_text() if path.exists() else ""
    said: list = []

    def read() -> str:
        console.step(f"locking docker/{INPUT} and docker/{NODEPS} with uv{' (--upgrade)' if upgrade else ''}")
        new_text = generate(settings, upgrade=upgrade)
        said.extend(changes(pins(old_text), pins(new_text)))
        for name, before, after in said:
            if not before:
                console.info(f"+ {name}=={after}")
            elif not after:
                console.info(f"- {name}=={before}")
            else:
                console.info(f"~ {name} {before} → {after}")
        return new_text

    def write(change) -> str:
        tmp = path.with_suffix(".lock.tmp")
        tmp.write_text(change.op)
        tmp.replace(path)
        return f"wrote docker/{LOCK}: {change.detail}"

    runner.run([runner.Step("lock file", read=read, plan=lambda new_text: make_plan(old_text, new_text, check),
                            apply_one=write)], dry_run=dry_run)
    if dry_run:
        console.info(f"dry run: docker/{LOCK} not written")
    return said
