"""The Docker engine: the one DOCKER_HOST names (or the local socket), via the docker SDK."""
from __future__ import annotations

import os

from ..core.errors import ExitCode, UserError, connection_reason

# Builds and pushes stream for minutes: a long read timeout, not the SDK's 60 s.
TIMEOUT = 600
last_failure = ""  # why the last client(required=False) found no engine, for messages


def describe() -> str:
    """Where the engine is expected, for messages."""
    return os.environ.get("DOCKER_HOST") or "the local socket (/var/run/docker.sock)"


def client(required: bool = True):
    """A ``docker.DockerClient`` for the engine; ``None`` if it is unreachable and not ``required``."""
    import docker

    global last_failure
    try:
        engine = docker.from_env(timeout=TIMEOUT)
        engine.ping()
        return engine
    except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
        last_failure = connection_reason(exc)
        if not required:
            return None
        raise no_engine(describe(), last_failure) from None


def no_engine(where: str, reason: str) -> UserError:
    """The one red line for an engine that does not answer (exit 4)."""
    return UserError(
        f"no Docker engine at {where}: {reason}",
        hint="start dockerd (`systemctl start docker`) or point DOCKER_HOST at a running engine",
        code=ExitCode.NO_ENGINE,
    )


def has_image(engine, ref: str) -> bool:
    import docker

    try:
        engine.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def image_platform(engine, ref: str):
    """The platform (steps/image/platform.py) of a local image, from its config (Os/Architecture/Variant)."""
    from ..core.platforms import Platform

    return Platform.of_image(engine.images.get(ref).attrs)


def engine_platform(engine):
    """The platform the engine runs natively (its version's Os/Arch: an Apple Silicon Mac's is linux/arm64)."""
    from ..core.platforms import Platform

    info = engine.version()
    return Platform.parse(f"{info.get('Os') or 'linux'}/{info.get('Arch') or 'amd64'}")
