"""The previous MLflow release's image (3.16.1), for the upgrade tests: docker/'s Dockerfile and scripts with
the lock of tests/services/mlflow_3_16/ instead of docker/requirements.lock, built with `inv build`'s code.

3.16.1's schema head is b7e2c1a4d9f3; 3.17.2 (docker/requirements.lock) adds two migrations on top of it
(75868b020152, then its head dc11669786a5). The build context is a copy of docker/ with the old lock, so every
layer but the venv's is the current image's: the engine's kept build cache (tests/services/docker_engine.py,
under TEST_CACHE) makes a warm build take seconds, as for tests/services/mlflow_image.py.

``project(root)`` makes the settings root the build reads (invoke.yaml, version.txt, docker/ with the old
lock); tests/services/project_repo.py repositories get the old lock with ``use_lock(repo)``.

The lock: ``python -m tests.services.mlflow_old_image lock`` makes tests/services/mlflow_3_16/requirements.lock
from the two requirements files beside it with `inv deps`' own code (uv, hashes, the old lock as preferences).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from .mlflow_image import PROJECT_ROOT, MLflowImage, clean_env

MLFLOW_VERSION = "3.16.1"
SCHEMA_HEAD = "b7e2c1a4d9f3"
NEW_MLFLOW_VERSION = "3.17.2"  # docker/requirements.lock's
NEW_SCHEMA_HEAD = "dc11669786a5"
NEW_MIGRATIONS = ("75868b020152", "dc11669786a5")  # oldest first: what `mlflow db upgrade` runs from SCHEMA_HEAD
VERSION = "0.98"  # the project version the old image is tagged with (the current one's is 0.99)
LOCK_DIR = Path(__file__).resolve().parent / "mlflow_3_16"
FILES = ("requirements.txt", "requirements-nodeps.txt", "requirements.lock")


def use_lock(root: Path) -> None:
    """Put the old release's requirements files and lock in ``root``/docker (a project copy)."""
    for name in FILES:
        shutil.copy(LOCK_DIR / name, Path(root) / "docker" / name)


def project(root: Path) -> Path:
    """A settings root for the build: invoke.yaml, version.txt, and docker/ with the old lock."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("invoke.yaml", "version.txt"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    shutil.copytree(PROJECT_ROOT / "docker", root / "docker", dirs_exist_ok=True)
    use_lock(root)
    return root


class OldImage(MLflowImage):
    """MLflowImage whose settings root is the old release's build context."""

    def __init__(self, settings_overrides: dict, version: str, image_id: str, root: Path):
        super().__init__(settings_overrides, version, image_id)
        self.root = root

    def settings(self, **more):
        from mlflow_self_host.core.settings import Settings

        return Settings.load(root=self.root, env=clean_env(), overrides={**self.settings_overrides, **more})


def build(engine, registry, base_image: str, root: Path) -> OldImage:
    """Build (or find in the build cache) the 3.16.1 image, tagged ``{registry}/mlflow-old-*:v0.98``."""
    from mlflow_self_host.core.version import Version
    from mlflow_self_host.steps.image import build as image_build

    os.environ["DOCKER_HOST"] = engine.base_url
    overrides = {"registry": registry.address, "image": f"mlflow-old-{uuid.uuid4().hex[:8]}",
                 "base_image": base_image}
    image = OldImage(overrides, VERSION, "", project(root))
    image.image_id = image_build.build(image.settings(), Version(VERSION))
    return image


def lock() -> None:
    """Write tests/services/mlflow_3_16/requirements.lock from the requirements files beside it (uv)."""
    from types import SimpleNamespace

    from mlflow_self_host.steps.image import deps

    with tempfile.TemporaryDirectory(prefix="msh-old-lock-") as tmp:
        (Path(tmp) / "docker").mkdir()
        for name in FILES:
            if (LOCK_DIR / name).exists():
                shutil.copy(LOCK_DIR / name, Path(tmp) / "docker" / name)
        if not (LOCK_DIR / "requirements.lock").exists():  # start from the current lock's versions
            shutil.copy(PROJECT_ROOT / "docker" / "requirements.lock", Path(tmp) / "docker" / "requirements.lock")
        text = deps.generate(SimpleNamespace(root=Path(tmp)))
    (LOCK_DIR / "requirements.lock").write_text(text)
    print(f"wrote {LOCK_DIR / 'requirements.lock'}: {len(deps.pins(text))} packages")


if __name__ == "__main__" and sys.argv[1:] == ["lock"]:
    lock()
