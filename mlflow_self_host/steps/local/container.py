"""The container mode: the image on this engine with host networking, ./data's folders mounted."""
from __future__ import annotations

import os

from ...core import console
from .server import SERVER_UID, Folders, ready, server_env, wait_healthy


def get(engine, name: str):
    """The container ``name``, or None."""
    import docker

    try:
        return engine.containers.get(name)
    except docker.errors.NotFound:
        return None


def user_for(euid: int, uid: int, gid: int) -> str | None:
    """The container's user: None (the image's, uid 1000) for root, who gives ./data to uid 1000, and
    for uid 1000; else this user, so that it owns what the server writes."""
    if euid == 0 or uid == SERVER_UID:
        return None
    return f"{uid}:{gid}"


def not_owned(folder) -> int:
    """How many paths in ``folder`` (itself included) uid 1000 does not own."""
    return sum(1 for path in [folder, *folder.rglob("*")] if path.lstat().st_uid != SERVER_UID)


def prepare_folder(path, chown: bool) -> None:
    """Create ``path``; with ``chown`` (root), give it and everything in it to uid 1000."""
    path.mkdir(parents=True, exist_ok=True)
    if chown:
        for item in [path, *path.rglob("*")]:
            if item.lstat().st_uid != SERVER_UID:
                os.lchown(item, SERVER_UID, SERVER_UID)


def run(engine, settings, folders: Folders, ref: str, user: str | None) -> str:
    """Start the container from ``ref`` and wait until healthy; returns the ready line."""
    env = server_env(settings, "sqlite:////mnt/backend_store/mlflow.db", "/mnt/artifacts", "127.0.0.1")
    if user:
        env["HOME"] = "/tmp"
    console.step(f"starting container {settings.local_container} from {ref}")
    container = engine.containers.run(
        ref, name=settings.local_container, detach=True, network_mode="host", environment=env,
        user=user, mem_limit=f"{settings.memory}m", restart_policy={"Name": "unless-stopped"},
        labels={"mlflow-self-host.local": str(folders.data)},
        volumes={str(folders.backend): {"bind": "/mnt/backend_store", "mode": "rw"},
                 str(folders.artifacts): {"bind": "/mnt/artifacts", "mode": "rw"}},
    )

    def failed() -> str | None:
        container.reload()
        if container.status in ("exited", "dead"):
            return container.logs(tail=20).decode(errors="replace")
        return None

    wait_healthy(settings, failed, f"`docker logs {settings.local_container}`")
    return ready(settings, folders, f"container {settings.local_container}")


def remove(engine, name: str, stop: bool = False) -> None:
    container = get(engine, name)
    if container is None:
        return
    if stop and container.status == "running":
        container.stop(timeout=20)
    container.remove(force=True, v=False)
