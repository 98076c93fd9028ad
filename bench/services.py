"""The real services a benchmark needs, from the test fixtures' modules (tests/services/)."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import common  # puts the project on sys.path

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


@contextlib.contextmanager
def nomad_user():
    """The ``nomad`` user configure-host gives the job folder to, as the tests have it
    (tests/host/conftest.py): created when missing, removed afterwards if this run created it."""
    from tests.services import accounts

    accounts.acquire_shared("nomad", system=True, user_group=True, no_create_home=True, shell="/bin/false")
    try:
        yield "nomad"
    finally:
        accounts.release_shared("nomad")


def stand_in_base(client) -> str:
    return base_image.ensure(client)


VERSION = "0.0.1"


@contextlib.contextmanager
def project_image(prefix: str, build: bool = True, base: str | None = None):
    """(client, settings, version) for a bench-only image name, built from docker/ (unless build=False)
    on the stand-in base (or ``base``); the tags it made are removed afterwards, the layers kept."""
    import os
    import uuid

    from mlflow_self_host.steps.image import build as image_build
    from mlflow_self_host.core.settings import Settings
    from mlflow_self_host.core.version import Version

    with engine() as eng:
        os.environ["DOCKER_HOST"] = eng.base_url  # the package finds the engine as users' tasks do
        client = eng.client()
        settings = Settings.load(root=common.ROOT, overrides={
            "registry": "bench.local", "image": f"{prefix}-{uuid.uuid4().hex[:6]}",
            "base_image": base or stand_in_base(client)})
        version = Version(VERSION)
        if build:
            image_build.build(settings, version)
        try:
            yield client, settings, version
        finally:
            for image in client.images.list(name=settings.image_repo()):
                for tag in image.tags:
                    client.images.remove(tag, noprune=True)
