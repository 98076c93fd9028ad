"""The native server's environment, built by the first `inv up` without a Docker engine, as a user sees it
piped to a file: what it builds and where, then plain progress lines (the packages counted as pip downloads
and installs them) and how long it took; no spinner's or bar's control characters. The lock here pins three
tiny packages (a stand-in `mlflow` among them) that pip installs from a local folder (PIP_NO_INDEX), so the
build takes seconds and needs no network; docker/entrypoint.sh runs the stub server of test_local_flags.py."""
from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.flags.conftest import inv, make_project
from tests.flags.test_local_flags import STUB_NATIVE_SERVER, healthy
from tests.services import clean_env, free_port

PACKAGES = {"mlflow": "9.9.9", "msh-tiny-one": "1.0", "msh-tiny-two": "2.0"}


def wheel(folder: Path, name: str, version: str) -> Path:
    """A pure-Python wheel of one module, as a build backend writes it."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {f"{module}/__init__.py": f"__version__ = {version!r}\n",
             f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}

    def digest(text: str) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()

    record = "".join(f"{path},sha256={digest(text)},{len(text.encode())}\n" for path, text in files.items())
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for name_in, text in {**files, f"{dist_info}/RECORD": record + f"{dist_info}/RECORD,,\n"}.items():
            whl.writestr(zipfile.ZipInfo(name_in, date_time=(2026, 1, 1, 0, 0, 0)), text)  # the same bytes each time
    return path


def tiny_project(tmp_path: Path) -> tuple[Path, dict, Path]:
    """(project, env, cache): a project whose lock pins the tiny packages, found in a local folder only."""
    project = make_project(tmp_path / "project", docker=None)
    docker, wheels = project / "docker", tmp_path / "wheels"
    docker.mkdir()
    wheels.mkdir()
    lock = ["# a lock as `inv deps` writes it, of three tiny packages"]
    for name, version in PACKAGES.items():
        sha = hashlib.sha256(wheel(wheels, name, version).read_bytes()).hexdigest()
        lock.append(f"{name}=={version} \\\n    --hash=sha256:{sha}\n    # via -r requirements.txt")
    lock.append("msh-never==1.0 ; python_full_version < '3.0' \\\n    --hash=sha256:" + "0" * 64)  # not for this Python
    (docker / "requirements.lock").write_text("\n".join(lock) + "\n")
    (docker / "mlflow_stub_server.py").write_text(STUB_NATIVE_SERVER)
    (docker / "entrypoint.sh").write_text(f'#!/bin/sh\nexec {sys.executable} "$(dirname "$0")/mlflow_stub_server.py"\n')
    cache = tmp_path / "cache"
    env = {**clean_env(), "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock", "MSH_CACHE_DIR": str(cache),
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_CONFIG_FILE": "/dev/null"}
    return project, env, cache


def test_first_up_shows_what_it_builds_where_and_the_packages_as_plain_lines(tmp_path):
    """A package pip cannot find: one red line naming it, no environment kept; with it there: the build as plain
    lines, and the next `inv up` uses the environment as it is."""
    project, env, cache = tiny_project(tmp_path)
    wheels = Path(env["PIP_FIND_LINKS"])
    (wheels / "msh_tiny_two-2.0-py3-none-any.whl").unlink()
    port = free_port()
    failed = inv("up", "--port", str(port), cwd=project, env=env, expect=1)
    red = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert red == ["error: installing mlflow==9.9.9 and its locked requirements failed: ERROR: No matching "
                   "distribution found for msh-tiny-two==2.0"], failed.stderr
    assert "Traceback" not in failed.stderr and not list(cache.glob("mlflow-server-*/.msh-complete"))

    wheel(wheels, "msh-tiny-two", "2.0")
    try:
        first = inv("up", "--port", str(port), cwd=project, env=env)
        assert first.stdout.strip() == f"http://127.0.0.1:{port}/" and healthy(f"http://127.0.0.1:{port}/")
        (venv,) = cache.glob("mlflow-server-*")
        lines = first.stderr.splitlines()
        header = f"▸ creating the native MLflow environment (MLflow 9.9.9, 3 packages) in {venv}: once, about a minute"
        assert header in lines
        start = lines.index(next(line for line in lines if "creating the native" in line)) + 1
        end = lines.index(next(line for line in lines if line.startswith("✓ created the native")))
        assert re.fullmatch(r"✓ created the native MLflow environment: 3 packages in \d+ s", lines[end])
        phases = [line for line in lines[start:end] if not line.endswith(" s)")]
        assert phases == ["  creating the virtual environment", "  downloading 3 packages", "  installing 3 packages"]
        between = [line for line in lines[start:end] if line.endswith(" s)")]  # a slow machine: still going, counted
        assert all(re.fullmatch(r"  (creating the virtual environment|downloading: \d/3|installing: \d/3) \(\d+ s\)",
                                line) for line in between), first.stderr
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", first.stderr), repr(first.stderr)  # no \r, no escapes
        installed = subprocess.run([str(venv / "bin" / "python"), "-c", "import mlflow, msh_tiny_two; "
                                    "print(mlflow.__version__)"], capture_output=True, text=True)
        assert installed.stdout == "9.9.9\n", installed.stderr

        inv("down", cwd=project, env=env)
        again = inv("up", "--port", str(port), cwd=project, env=env)
        assert "creating the native" not in again.stderr and "packages" not in again.stderr
    finally:
        subprocess.run([sys.executable, "-m", "invoke", "down"], cwd=project, env=env, capture_output=True, timeout=60)


def test_without_a_terminal_a_line_per_phase_then_the_count_at_most_every_5_s_and_at_least_every_10_s(capsys):
    from mlflow_self_host.steps.local.install_progress import Display, PipProgress

    now = [100.0]
    display, progress = Display(clock=lambda: now[0], terminal=False), PipProgress(total=87)

    def at(seconds: float, *pip_lines: str) -> None:
        now[0] = 100.0 + seconds
        for line in pip_lines:
            progress.read(line)
        display.update(progress)

    at(0)
    at(3, "Collecting alembic==1.0 (from -r requirements.lock (line 7))")
    at(4, *["Collecting x==1"] * 9)  # moved, but a line 1 s ago
    at(8.5, *["Collecting x==1"] * 20)
    at(18.4)  # not moved, 9.9 s since the last line
    at(18.6)  # 10.1 s: still going
    at(19, "Installing collected packages: " + ", ".join(f"p{n}" for n in range(86)))
    progress.counted(40)
    at(25)
    assert capsys.readouterr().err.splitlines() == [
        "  creating the virtual environment", "  downloading 87 packages", "  downloading: 30/87 (8 s)",
        "  downloading: 30/87 (19 s)", "  installing 86 packages", "  installing: 40/86 (25 s)"]
