"""``inv build``: the MLflow image ``{registry}/{image}:v{version}`` from docker/, with the docker SDK.

The classic builder (no buildx here): RUN steps use the host's network, output is streamed, and a
failing step is one red line with the step and its error. ``ensure_built`` builds only when the
engine lacks the tag (push, pushlatest, up and deploy call it).
"""
from __future__ import annotations

import datetime
from pathlib import Path

from .. import console, git
from ..errors import UserError
from ..plan import Plan, show
from . import engine as engine_mod

DOCKER_DIR = "docker"  # the build context: Dockerfile, entrypoint.sh, requirements.txt
EXIT_BUILD_FAILED = 5


def context_dir(settings) -> Path:
    return settings.root / DOCKER_DIR


def build_args(settings, version) -> dict:
    """The Dockerfile's ARGs: the base image and the OCI label values."""
    return {
        "BASE_IMAGE": settings.base_image,
        "VERSION": version.text,
        "REVISION": git.output(settings.root, "rev-parse", "HEAD") or "unknown",
        "CREATED": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "SOURCE": _without_credentials(git.output(settings.root, "config", "--get", "remote.origin.url")) or "unknown",
    }


def _without_credentials(url: str) -> str:
    """A remote URL without ``user:token@`` (labels are public)."""
    import re

    return re.sub(r"//[^/@]*@", "//", url)




def plan(settings, version, no_cache: bool = False) -> Plan:
    ref = settings.image_ref(version.text)
    result = Plan(f"build {ref}")
    result.add("build", ref, f"from {settings.base_image}, context {DOCKER_DIR}/" + (", no cache" if no_cache else ""))
    return result


def build(settings, version, no_cache: bool = False, dry_run: bool = False) -> str:
    """Build the image; returns its id ("" on a dry run)."""
    steps = plan(settings, version, no_cache)
    if dry_run:
        show(steps, dry_run=True)
        return ""
    context = context_dir(settings)
    if not (context / "Dockerfile").is_file():
        raise UserError(f"{context / 'Dockerfile'} is missing", hint="run the task from the project folder")
    engine = engine_mod.client()
    ref = settings.image_ref(version.text)
    console.step(f"building {ref} from {settings.base_image}")
    events = engine.api.build(
        path=str(context), dockerfile="Dockerfile", tag=ref, buildargs=build_args(settings, version),
        network_mode="host", forcerm=True, rm=True, nocache=no_cache, pull=False, decode=True,
    )
    image_id = _follow(events, settings)
    if not image_id:
        image_id = engine.images.get(ref).id
    console.done(f"built {ref} ({image_id.removeprefix('sha256:')[:12]})")
    return image_id


def ensure_built(settings, version) -> str:
    """The image id of ``v{version}``, building it first only if the engine lacks the tag."""
    engine = engine_mod.client()
    ref = settings.image_ref(version.text)
    if engine_mod.has_image(engine, ref):
        return engine.images.get(ref).id
    console.info(f"{ref} is not built yet: building it")
    return build(settings, version)


def _follow(events, settings) -> str:
    """Stream the build output; raise a UserError naming the failing step."""
    step, image_id, recent = "", "", []
    for event in events:
        if "error" in event or "errorDetail" in event:
            message = (event.get("errorDetail") or {}).get("message") or event.get("error") or "unknown error"
            raise _failure(step, message.strip(), recent, settings)
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


def _failure(step: str, message: str, recent: list[str], settings) -> UserError:
    where = f"{step.split(' : ')[0].lower()} ({_short(step.split(' : ', 1)[1])})" if step else "the build"
    if step.split(" : ", 1)[-1].upper().startswith("FROM") or (not step and "pull access denied" in message):
        return UserError(
            f"build failed at {where}: cannot get the base image {settings.base_image}: {_short(message)}",
            hint="pull or `docker load` it on the engine, or pass --base-image / MSH_BASE_IMAGE with one it has",
            code=EXIT_BUILD_FAILED,
        )
    last = next((line for line in reversed(recent) if "error" in line.lower()), recent[-1] if recent else "")
    return UserError(
        f"build failed at {where}: {_short(message)}",
        hint=(f"last output: {_short(last)}; " if last else "") + "the step's output is above; fix it and build again",
        code=EXIT_BUILD_FAILED,
    )


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
