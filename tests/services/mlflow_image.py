"""The project's MLflow image, built once per session from the stand-in base with `inv build`'s code.

Each session uses its own image name (the registry repository), so sessions of other engineers on
the same engine and registry never see each other's tags. The tag is removed afterwards with
``noprune``: the layers stay as the engine's build cache, so the next session builds in seconds.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import clean_env  # noqa: F401 - the tests import it from here too

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
VERSION = "0.99"


@dataclass
class MLflowImage:
    settings_overrides: dict  # registry, image, base_image: point the tasks at this image
    version: str
    image_id: str

    def settings(self, **more):
        from mlflow_self_host.core.settings import Settings

        return Settings.load(root=PROJECT_ROOT, env=clean_env(), overrides={**self.settings_overrides, **more})

    def ref(self) -> str:
        return self.settings().image_ref(self.version)


def build(engine, registry, base_image: str) -> MLflowImage:
    from mlflow_self_host.steps.image import build as image_build
    from mlflow_self_host.core.version import Version

    # The package finds the engine the way users do: DOCKER_HOST.
    os.environ["DOCKER_HOST"] = engine.base_url
    overrides = {"registry": registry.address, "image": f"mlflow-test-{uuid.uuid4().hex[:8]}",
                 "base_image": base_image}
    image = MLflowImage(overrides, VERSION, "")
    image.image_id = image_build.build(image.settings(), Version(VERSION))
    return image


def remove(engine, image: MLflowImage) -> None:
    """Untag what the session made (the tests may rebuild and add tags), keeping the layers."""
    import docker

    client = engine.client()
    repo = image.settings().image_repo()
    for tagged in client.images.list(name=repo):
        for tag in tagged.tags:
            if tag.startswith(repo + ":"):
                try:
                    client.images.remove(tag, noprune=True)
                except docker.errors.APIError:
                    pass  # gone already, or in use by a container the test left
