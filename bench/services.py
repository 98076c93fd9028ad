"""The real services a benchmark needs, from the test fixtures' modules (tests/services/)."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import common  # noqa: F401 - puts the project on sys.path

from tests.services import base_image, docker_engine, registry as registry_service


@contextlib.contextmanager
def engine():
    """The engine DOCKER_HOST names, or a private dockerd for the benchmark's duration."""
    found = docker_engine.reuse_from_env()
    if found:
        yield found
        return
    with tempfile.TemporaryDirectory(prefix="msh-bench-docker-") as tmp:
        started = docker_engine.start(Path(tmp))
        try:
            yield started
        finally:
            docker_engine.stop(started)


@contextlib.contextmanager
def registry():
    with tempfile.TemporaryDirectory(prefix="msh-bench-registry-") as tmp:
        reg = registry_service.start(Path(tmp))
        try:
            yield reg
        finally:
            registry_service.stop(reg)


def stand_in_base(client) -> str:
    return base_image.ensure(client)
