"""A private Docker engine: dockerd from Debian's docker.io on its own socket, or the one DOCKER_HOST names.

overlay2 where it works (far faster), vfs otherwise; no iptables, no bridge: builds and containers
use host networking. Measured facts: ../shared/reference/docker-notes.md.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import need_binary, stop_process, unavailable, wait_for


@dataclass
class Engine:
    base_url: str  # unix:///...sock, for DOCKER_HOST and docker.DockerClient(base_url=...)
    driver: str
    proc: subprocess.Popen | None = None
    root: Path | None = None
    log: Path | None = None
    env: dict = field(default_factory=dict)

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.base_url, timeout=600)


def _ping(base_url: str) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=base_url, timeout=5)
        return client.ping()
    except Exception:  # noqa: BLE001
        return False


def _driver(base_url: str) -> str:
    import docker

    return docker.DockerClient(base_url=base_url, timeout=10).info().get("Driver", "?")


def reuse_from_env() -> Engine | None:
    url = os.environ.get("DOCKER_HOST")
    if url and _ping(url):
        return Engine(base_url=url, driver=_driver(url))
    return None


def _launch(root: Path, driver: str) -> tuple[subprocess.Popen, str, Path]:
    dockerd = need_binary("dockerd", "docker.io")
    sock = root / "docker.sock"
    log = root / f"dockerd-{driver}.log"
    for sub in ("exec", "data"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cmd = [
        dockerd, "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false",
        f"--host=unix://{sock}", f"--exec-root={root / 'exec'}", f"--data-root={root / 'data'}",
        f"--pidfile={root / 'docker.pid'}", f"--storage-driver={driver}",
    ]
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"unix://{sock}", log


def start(root: Path) -> Engine:
    """Start dockerd under ``root``: overlay2 first, vfs if overlay2 fails."""
    if os.geteuid() != 0:
        unavailable("dockerd needs root")
    last_log = ""
    for driver in ("overlay2", "vfs"):
        proc, url, log = _launch(root, driver)
        try:
            wait_for(lambda: proc.poll() is None and _ping(url), 60, f"dockerd ({driver})", 0.3)
            return Engine(base_url=url, driver=_driver(url), proc=proc, root=root, log=log,
                          env={"DOCKER_HOST": url})
        except TimeoutError:
            stop_process(proc)
            cleanup_mounts(root)
            last_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    unavailable(f"dockerd did not start with overlay2 or vfs; last log:\n{last_log}")


def cleanup_mounts(root: Path) -> None:
    """A stopped dockerd leaves EXEC_ROOT/netns/default (and overlay mounts) mounted: unmount them."""
    prefix = str(root)
    with open("/proc/mounts") as fh:
        mounts = [line.split()[1] for line in fh]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


def stop(engine: Engine) -> None:
    if engine.proc is None:
        return  # reused, not ours
    stop_process(engine.proc, timeout=30)
    cleanup_mounts(engine.root)
