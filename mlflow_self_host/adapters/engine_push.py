"""The engine pushes ``{image}:{tag}`` to the registry (publish.py's push change): the registry's
credentials, per-layer progress, and the engine's errors, which arrive as stream events, as one line each.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core import console
from ..core.errors import ExitCode, UserError
from . import registry as reg


DAEMON_JSON = "/etc/docker/daemon.json"


@dataclass
class PushResult:
    ref: str
    digest: str = ""
    sent: list[str] = field(default_factory=list)  # layer ids sent
    existing: list[str] = field(default_factory=list)  # layer ids the registry already had


def auth(settings) -> dict | None:
    if settings.registry_username and settings.registry_password:
        return {"username": settings.registry_username, "password": settings.registry_password}
    return None


def _login(engine, settings) -> None:
    import docker

    credentials = auth(settings)
    if not credentials:
        return
    try:
        engine.login(registry=settings.registry, reauth=True, **credentials)
    except docker.errors.APIError as exc:
        raise _classify(settings, _scrub(str(exc.explanation or exc), settings)) from None


def engine_push(engine, settings, tag: str) -> PushResult:
    """The engine pushes ``{image}:{tag}`` (publish.py's push change), with per-layer progress."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    _login(engine, settings)
    target = f"{settings.image_repo()}:{tag}"
    result = PushResult(target)
    console.step(f"pushing {target}")
    events = engine.api.push(settings.image_repo(), tag=tag, stream=True, decode=True, auth_config=auth(settings))
    columns = (TextColumn("  {task.description}"), BarColumn(), DownloadColumn())
    with Progress(*columns, console=console.err, transient=False, disable=console._quiet()) as progress:
        layers: dict[str, int] = {}
        for event in events:
            if "error" in event or "errorDetail" in event:
                message = (event.get("errorDetail") or {}).get("message") or event.get("error") or "unknown error"
                raise _classify(settings, _scrub(message, settings))
            aux = event.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                result.digest = aux["Digest"]
            layer, status = event.get("id"), event.get("status", "")
            if not layer or layer == tag:
                continue
            if layer not in layers:
                layers[layer] = progress.add_task(f"{layer} {status}", total=None)
            task = layers[layer]
            detail = event.get("progressDetail") or {}
            if detail.get("total"):
                progress.update(task, total=detail["total"], completed=detail.get("current", 0))
            progress.update(task, description=f"{layer} {status}")
            if status == "Pushed":
                result.sent.append(layer)
                _finish(progress, task)
            elif status.startswith(("Layer already exists", "Mounted from")):
                result.existing.append(layer)
                _finish(progress, task)
    if not result.digest:
        result.digest = reg.digest(settings, tag) or ""
    return result


def _finish(progress, task) -> None:
    total = progress.tasks[task].total or 1
    progress.update(task, total=total, completed=total)


def _scrub(text: str, settings) -> str:
    password = settings.registry_password
    return text.replace(password, "****") if password else text


def _classify(settings, message: str) -> UserError:
    """An engine's push or login error as one line and what to do next."""
    text = message.lower()
    first = " ".join(message.split())[:300]
    if "server gave http response to https client" in text or "does not look like a tls handshake" in text:
        return UserError(
            f"the Docker engine refuses the plain-HTTP registry {settings.registry} (not insecure-allowed)",
            hint=(f'add "insecure-registries": ["{settings.registry}"] to {DAEMON_JSON} on the engine\'s host, '
                  "restart dockerd (`systemctl restart docker`), then push again"),
            code=ExitCode.INSECURE_REFUSED,
        )
    if any(m in text for m in ("unauthorized", "authentication required", "no basic auth credentials",
                               "denied", "401")):
        return reg.unauthorized(settings, first)
    if any(m in text for m in ("no such host", "connection refused", "i/o timeout", "no route to host",
                               "timeout", "dial tcp", "connection reset", "eof")):
        return reg.unreachable(settings, first)
    if "does not exist locally" in text:
        return UserError(first, hint="run `inv build` first (or `inv build push`)", code=ExitCode.NOT_BUILT)
    return UserError(f"push to {settings.registry} failed: {first}", code=ExitCode.FAILED)
