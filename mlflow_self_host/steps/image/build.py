"""``inv build``: the MLflow image ``{registry}/{image}:v{version}`` from docker/, with the docker SDK.

The classic builder (no buildx here): RUN steps use the host's network, output is streamed, and a
failing step is one red line with the step and its error. ``build_image`` is the one build: `inv build`
(always: a version tag is a release) and the build changes of pushlatest, deploy (publish.py) and `inv up`
(local/), which build only when the engine lacks the tag (or, deploy, has it for another platform).

It builds for one platform (steps/image/platform.py: the ``platform`` setting, else the Nomad clients', else
this machine's), passed to the engine. Docker 20.10's classic builder ignores that platform when it has
the base image locally for another one (it builds on what it has, measured), so a local base of another
platform is pulled for the wanted one first, and the built image's platform is checked afterwards. RUN
steps of a foreign platform run only where the engine's host has QEMU emulation (binfmt_misc); without
it they fail with "exec format error", which is said as such with what to install.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from ...core import console
from ...adapters import git
from ...core.errors import ExitCode, UserError
from ...core import plan as plans
from ...core.plan import Plan
from . import deps
from ...adapters import engine as engine_mod
from . import platform as platform_mod
from .deps import DOCKER_DIR, context_dir  # noqa: F401 - build.X too

@dataclass(frozen=True)
class Op:
    """``build`` (``platform``: for which, "" = the wanted one, decided when it builds; ``missing``: the
    engine lacks the image), ``tag`` the image ``tag`` in the registry's repository, ``push`` ``tag``."""

    kind: str
    tag: str = ""
    platform: str = ""
    source: str = ""  # build: why that platform
    missing: bool = False
    no_cache: bool = False


def build_args(settings, version, schema_args: dict | None = None) -> dict:
    """The Dockerfile's ARGs: the base image, the OCI label values and the schema labels' (``schema_args``:
    schema.build_args of the venv stage's MLflow; absent: the Dockerfile's defaults, no schema)."""
    return {**(schema_args or {}), 
        "BASE_IMAGE": settings.base_image,
        "VERSION": version.text,
        "REVISION": git.output(settings.root, "rev-parse", "HEAD") or "unknown",
        "CREATED": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "SOURCE": _without_credentials(git.output(settings.root, "config", "--get", "remote.origin.url")) or "unknown",
        "REQUIREMENTS_LOCK": deps.digest(settings),
    }


def _without_credentials(url: str) -> str:
    """A remote URL without ``user:token@`` (labels are public)."""
    import re

    return re.sub(r"//[^/@]*@", "//", url)




def make_plan(settings, version, no_cache: bool = False, choice=None) -> Plan:
    """`inv build`: always one build (a version tag is a release: `inv build` rebuilds it on purpose).
    Pure; ``choice`` the platform decided (platform.wanted): several, or none, is refused here."""
    ref = settings.image_ref(version.text)
    result = Plan(f"build {ref}")
    target = choice.single() if choice is not None else None
    where = f" for {choice} ({choice.source})" if choice is not None else ""
    result.add("build", ref, f"from {settings.base_image}, context {DOCKER_DIR}/{where}"
               + (", no cache" if no_cache else ""),
               op=Op("build", platform=str(target or ""), source=choice.source if choice else "", no_cache=no_cache))
    return result


def build(settings, version, no_cache: bool = False, dry_run: bool = False, choice=None) -> str:
    """Build the image for the wanted platform; returns its id ("" on a dry run). ``choice``: the
    platform already decided (platform.wanted), else it is decided here."""
    from .. import runner

    choice = choice or platform_mod.wanted(settings)
    applying = Apply(settings, version, choice)
    runner.run([runner.Step("build", plan=lambda _: make_plan(settings, version, no_cache, choice),
                            apply_one=applying.apply_one)], dry_run=dry_run)
    return applying.built


class Apply:
    """The build change for ``choice``'s platform; ``built`` is the image id it gave ("" before)."""

    def __init__(self, settings, version, choice):
        self.settings, self.version, self.choice = settings, version, choice
        self.built = ""

    def apply_one(self, change):
        op, choice = change.op, self.choice
        if op.kind == "build":
            self.built = build_image(self.settings, self.version, choice.single(), choice.source,
                                     no_cache=op.no_cache)
            return plans.QUIET  # build_image says what it built
        raise ValueError(f"unknown build op {op.kind!r}")


def build_image(settings, version, target, source: str, no_cache: bool = False) -> str:
    """Build ``v{version}`` for the platform ``target`` (``source``: why that one) on the engine; returns
    the image id. The one place that builds: `inv build`, and the build op of push, deploy and `inv up`."""
    context = context_dir(settings)
    if not (context / "Dockerfile").is_file():
        raise UserError(f"{context / 'Dockerfile'} is missing", hint="run the task from the project folder")
    engine = engine_mod.client()
    ref = settings.image_ref(version.text)
    native = engine_mod.engine_platform(engine)
    _base_for(engine, settings, target)
    console.step(f"building {ref} from {settings.base_image} for {target} ({source})")
    if not target.same(native):
        console.info(f"  {target} is not the engine's own platform ({native}): its RUN steps run under QEMU "
                     "emulation on the engine's host (slower)")
    common = dict(path=str(context), dockerfile="Dockerfile", network_mode="host", forcerm=True, rm=True,
                  pull=False, decode=True, platform=str(target))
    schema_args, venv_id = {}, ""
    if has_venv_stage(context / "Dockerfile"):  # built first: its MLflow's schema becomes the final stage's labels
        venv_id = _follow(engine.api.build(target=VENV_STAGE, buildargs=build_args(settings, version),
                                           nocache=no_cache, **common), settings, target, native)
        schema_args = read_schema_once(settings, engine, venv_id)
    # --no-cache: the venv stage just built is the only cache the final build may use (not built twice)
    cache = {"cache_from": [venv_id]} if no_cache and venv_id else {"nocache": no_cache}
    events = engine.api.build(tag=ref, buildargs=build_args(settings, version, schema_args), **cache, **common)
    image_id = _follow(events, settings, target, native)
    if not image_id:
        image_id = engine.images.get(ref).id
    built = engine_mod.image_platform(engine, ref)
    if not built.same(target):
        raise UserError(f"the engine built {ref} for {built}, not {target}",
                        hint=f"its FROM image is {built}: build from {settings.base_image} (docker/Dockerfile's "
                             f"FROM ${{BASE_IMAGE}}), or `docker pull --platform {target}` the image it starts from",
                        code=ExitCode.BUILD_FAILED)
    console.done(f"built {ref} for {target} ({image_id.removeprefix('sha256:')[:12]})")
    return image_id


VENV_STAGE = "venv"  # docker/Dockerfile's stage that installs MLflow into /opt/mlflow
VENV_DIR = "/opt/mlflow"


def has_venv_stage(dockerfile: Path) -> bool:
    import re

    return bool(re.search(rf"^\s*FROM\s+\S+\s+AS\s+{VENV_STAGE}\s*$", dockerfile.read_text(encoding="utf-8"),
                          re.M | re.I))


def read_schema_once(settings, engine, image_id: str) -> dict:
    """read_schema, kept in cache_dir by the venv stage's image id (content-addressed: the same id is the
    same files), so a rebuild with an unchanged venv does not create a container again."""
    import json
    import os

    path = Path(os.path.expanduser(settings.cache_dir)) / "image-schema" / f"{image_id.split(':')[-1]}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    found = read_schema(engine, image_id)
    if found:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(found), encoding="utf-8")
        except OSError:
            pass  # not kept: read again next time
    return found


def read_schema(engine, image_id: str) -> dict:
    """schema.build_args of the MLflow in ``image_id``'s venv: its migration scripts and its version read
    from a created container's files (``get_archive``; never started, so a foreign platform is read as
    well). {} when the image has no MLflow there (labels left empty: "unknown" for deploy)."""
    import docker

    from ...core import schema_chain as schema

    if not image_id:
        return {}
    container = engine.api.create_container(image_id, command=["true"], entrypoint=[])
    try:
        config = _files(engine, container, f"{VENV_DIR}/pyvenv.cfg").get("pyvenv.cfg", "")
        python = next((line.split("=", 1)[1].strip() for line in config.splitlines()
                       if line.split("=", 1)[0].strip() in ("version", "version_info")), "")
        site = f"{VENV_DIR}/lib/python{'.'.join(python.split('.')[:2])}/site-packages"
        scripts = _files(engine, container, f"{site}/mlflow/store/db_migrations/versions")
        meta = _files(engine, container, f"{site}/mlflow/version.py").get("version.py", "")
    except docker.errors.NotFound:
        return {}
    finally:
        engine.api.remove_container(container, force=True)
    import re

    found = re.search(r"""^VERSION\s*=\s*["']([^"']+)["']""", meta, re.M)
    order = schema.parse_scripts(text for name, text in scripts.items() if name.endswith(".py"))
    return schema.build_args(found.group(1) if found else "unknown", order) if order else {}


def _files(engine, container, path: str) -> dict:
    """{base name: text} of the files at ``path`` (a file or a folder, not below) in ``container``."""
    import io
    import tarfile

    stream, _ = engine.api.get_archive(container, path)
    out = {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream)), mode="r") as tar:
        for member in tar:
            if member.isfile() and member.name.count("/") <= 1:
                out[member.name.rsplit("/", 1)[-1]] = tar.extractfile(member).read().decode("utf-8", "replace")
    return out


def _base_for(engine, settings, target) -> None:
    """The classic builder builds on a local base image whatever its platform: one of another platform is
    pulled for ``target`` first (the engine keeps one platform per tag). A missing base is pulled by the
    build itself, for the build's platform."""
    import docker

    base = settings.base_image
    try:
        have = engine_mod.image_platform(engine, base)
    except docker.errors.ImageNotFound:
        return
    if have.same(target):
        return
    console.step(f"the engine has {base} for {have}: pulling it for {target}")
    try:
        for event in engine.api.pull(base, platform=str(target), stream=True, decode=True):
            if event.get("error"):
                raise docker.errors.APIError(event["error"])
    except docker.errors.APIError as exc:
        raise UserError(
            f"cannot get the base image {base} for {target}: {_short(str(exc.explanation or exc))}",
            hint=f"the engine has it only for {have}; pass --base-image / MSH_BASE_IMAGE with one it can pull "
                 f"for {target}, or build for {have} (platform setting)", code=ExitCode.BUILD_FAILED) from None


def _follow(events, settings, target=None, native=None) -> str:
    """Stream the build output; raise a UserError naming the failing step."""
    step, image_id, recent = "", "", []
    for event in events:
        if "error" in event or "errorDetail" in event:
            message = (event.get("errorDetail") or {}).get("message") or event.get("error") or "unknown error"
            raise _failure(step, message.strip(), recent, settings, target, native)
        if "aux" in event and isinstance(event["aux"], dict) and event["aux"].get("ID"):
            image_id = event["aux"]["ID"]
        text = event.get("stream")
        if not text:
            continue
        for line in text.rstrip("\n").splitlines():
            if line.startswith("Step ") and " : " in line:
                step = line
                recent = []
                console.err.print(f"[bold]{console.escape(line)}[/]")
            elif line.strip():
                recent = (recent + [line.strip()])[-5:]
                console.info(f"  {line}")
    return image_id


EMULATION_HINT = ("on the engine's host install QEMU's binfmt handlers: `sudo apt-get install qemu-user-static "
                  "binfmt-support` (Debian, Ubuntu, Raspberry Pi OS), or `docker run --privileged --rm "
                  "tonistiigi/binfmt --install {arch}`; Docker Desktop has them. Or build on a {target} machine "
                  "(DOCKER_HOST=ssh://user@that-host)")


def _failure(step: str, message: str, recent: list[str], settings, target=None, native=None) -> UserError:
    where = f"{step.split(' : ')[0].lower()} ({_short(step.split(' : ', 1)[1])})" if step else "the build"
    if target is not None and native is not None and not target.same(native) and \
            any("exec format error" in line for line in recent + [message]):
        return UserError(
            f"build failed at {where}: the engine cannot run {target} programs (exec format error): it runs "
            f"{native} and has no emulation for {target.arch}",
            hint=EMULATION_HINT.format(arch=target.arch, target=target), code=ExitCode.BUILD_FAILED)
    if step.split(" : ", 1)[-1].upper().startswith("FROM") or (not step and "pull access denied" in message):
        return UserError(
            f"build failed at {where}: cannot get the base image {settings.base_image}: {_short(message)}",
            hint="pull or `docker load` it on the engine, or pass --base-image / MSH_BASE_IMAGE with one it has",
            code=ExitCode.BUILD_FAILED,
        )
    last = next((line for line in reversed(recent) if "error" in line.lower()), recent[-1] if recent else "")
    return UserError(
        f"build failed at {where}: {_short(message)}",
        hint=(f"last output: {_short(last)}; " if last else "") + "the step's output is above; fix it and build again",
        code=ExitCode.BUILD_FAILED,
    )


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
