"""A private Docker engine: dockerd from Debian's docker.io on its own socket, or the one DOCKER_HOST names.

Its socket, exec root and log are the session's (pytest's temp folder); its data root (images, layers, the
build cache) is kept between sessions in a slot of ``TEST_CACHE/docker`` that no running session holds (a
``flock`` held while the engine runs; one slot per concurrent session or xdist worker), so the real MLflow
image is built once per lock (and Dockerfile) and reused: a rebuild with the same inputs takes seconds. At
each start the slot is cleared of what a crashed session may have left (stopped containers, unused networks)
and of dangling images older than a week.

overlay2 where it works (far faster), vfs otherwise; no default bridge (docker0 is left alone): builds
and local-mode containers use host networking. With iptables on, a user-defined bridge network
(``bridge_network``) publishes container ports on 127.0.0.1, as Nomad's docker driver maps a task's
port; the chains dockerd adds are removed when it stops. Measured facts: ../shared/reference/docker-notes.md.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import OWN_PATHS, TEST_CACHE, need_binary, stop_process, unavailable, wait_for

SLOTS = 8  # concurrent sessions (or xdist workers) with a kept data root; more get a fresh one in their temp folder


@dataclass
class Engine:
    base_url: str  # unix:///...sock, for DOCKER_HOST and docker.DockerClient(base_url=...)
    driver: str
    proc: subprocess.Popen | None = None
    root: Path | None = None
    log: Path | None = None
    env: dict = field(default_factory=dict)
    slot_lock: object = None  # the open file whose flock holds the data-root slot
    data: Path | None = None  # the data root (a kept slot, or in root)

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


def _slot():
    """(folder, open lock file) of the first data-root slot no running session holds; (None, None) if all are."""
    import fcntl

    base = TEST_CACHE / "docker"
    base.mkdir(parents=True, exist_ok=True)
    for n in range(SLOTS):
        lock = open(base / f"slot{n}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return base / f"slot{n}", lock
    return None, None


def _launch(root: Path, driver: str, data: Path) -> tuple[subprocess.Popen, str, Path]:
    dockerd = need_binary("dockerd", "docker.io")
    sock = root / "docker.sock"
    log = root / f"dockerd-{driver}.log"
    for folder in (root / "exec", data):
        folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        # iptables for the bridge network's port mapping, but no ip_forward (and so no FORWARD policy
        # change): the published ports are on 127.0.0.1, reached through docker-proxy
        dockerd, "--iptables=true", "--ip-forward=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false",
        f"--host=unix://{sock}", f"--exec-root={root / 'exec'}", f"--data-root={data}",
        f"--pidfile={root / 'docker.pid'}", f"--storage-driver={driver}",
    ]
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"unix://{sock}", log


def _chains() -> set[tuple[str, str]]:
    """(table, chain) pairs that exist now."""
    found = set()
    for table in ("filter", "nat"):
        result = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            if line.startswith("-N "):
                found.add((table, line.split()[1]))
    return found


def start(root: Path) -> Engine:
    """Start dockerd under ``root``: overlay2 first, vfs if overlay2 fails."""
    if os.geteuid() != 0:
        unavailable("dockerd needs root")
    need_binary("iptables", "iptables")
    slot, lock = _slot()
    # One dockerd starts at a time: two starting together race on iptables' DOCKER-* chains ("No chain/target/match
    # by that name"), and the loser fell back to vfs (builds about 3x slower).
    import fcntl

    (TEST_CACHE / "docker").mkdir(parents=True, exist_ok=True)
    starting = open(TEST_CACHE / "docker" / "start.lock", "w")
    fcntl.flock(starting, fcntl.LOCK_EX)
    try:
        return _start_in(root, slot, lock)
    finally:
        starting.close()


def _start_in(root: Path, slot, lock) -> Engine:
    (root / "chains-before").write_text("\n".join(f"{t} {c}" for t, c in sorted(_chains())))  # under the start lock
    last_log = ""
    for driver in ("overlay2", "vfs"):
        data = (slot / driver) if slot else (root / "data")
        proc, url, log = _launch(root, driver, data)
        try:
            wait_for(lambda: proc.poll() is None and _ping(url), 60, f"dockerd ({driver})", 0.3)
            engine = Engine(base_url=url, driver=_driver(url), proc=proc, root=root, log=log,
                            env={"DOCKER_HOST": url}, slot_lock=lock, data=data)
            if slot is not None:
                OWN_PATHS.append(data)
            try:
                _clear(engine)
            except Exception as exc:  # noqa: BLE001 - an engine that cannot list or remove: stop it, say why
                stop(engine)
                unavailable(f"the Docker engine's kept data root {data} could not be cleared: {exc}")
            return engine
        except TimeoutError:
            stop_process(proc)
            cleanup_mounts(root)
            cleanup_mounts(data)
            last_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    if lock is not None:
        lock.close()
    unavailable(f"dockerd did not start with overlay2 or vfs; last log:\n{last_log}")


def _clear(engine: Engine) -> None:
    """What an earlier session may have left in a kept data root: stopped containers, unused networks (a
    network's bridge interface would come back at each start), dangling images older than a week."""
    client = engine.client()
    for container in client.containers.list(all=True):
        container.remove(force=True)
    client.networks.prune()
    client.images.prune(filters={"dangling": True, "until": "168h"})


def cleanup_mounts(root: Path) -> None:
    """A stopped dockerd leaves EXEC_ROOT/netns/default (and overlay mounts) mounted: unmount them."""
    prefix = str(root)
    with open("/proc/mounts") as fh:
        mounts = [line.split()[1] for line in fh]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


def _unused_subnet() -> str:
    """A 10.213.N.0/24 no interface of this machine uses (another test session's engine may have one)."""
    import random

    used = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    free = [n for n in range(1, 255) if f" 10.213.{n}." not in used]
    return f"10.213.{random.choice(free)}.0/24"


def bridge_network(engine: Engine, name: str, subnet: str | None = None):
    """A user-defined bridge network (the engine's own bridge is off); returns the docker Network.
    ``name`` is also the Linux bridge's name (15 characters at most): make it unique per session."""
    import docker

    subnet = subnet or _unused_subnet()
    client = engine.client()
    try:
        client.networks.get(name).remove()
    except docker.errors.NotFound:
        pass
    pool = docker.types.IPAMPool(subnet=subnet)
    return client.networks.create(name, driver="bridge", ipam=docker.types.IPAMConfig(pool_configs=[pool]),
                                  options={"com.docker.network.bridge.name": name[:15]})


def remove_network(engine: Engine, name: str) -> None:
    import docker

    try:
        network = engine.client().networks.get(name)
        for container in network.containers:
            container.remove(force=True)
        network.remove()
    except docker.errors.NotFound:
        pass


def stop(engine: Engine) -> None:
    if engine.proc is None:
        return  # reused, not ours
    stop_process(engine.proc, timeout=30)
    cleanup_mounts(engine.root)
    if engine.data is not None:
        cleanup_mounts(engine.data)
    _remove_new_chains(engine.root)
    if engine.slot_lock is not None:
        engine.slot_lock.close()


def _remove_new_chains(root: Path) -> None:
    """Flush and delete the chains dockerd added (they outlive it), keeping any that were there before;
    nothing while another dockerd runs (another test session's engine uses the same chains)."""
    try:
        before = {tuple(line.split()) for line in (root / "chains-before").read_text().splitlines() if line}
    except FileNotFoundError:
        return
    if subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode == 0:
        return
    added = [pair for pair in _chains() if pair not in before and pair[1].startswith("DOCKER")]
    for table, chain in added:  # first every jump into them, then the chains
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        for rule in rules.splitlines():
            if rule.startswith("-A ") and f"-j {chain}" in rule:
                subprocess.run(["iptables", "-t", table, "-D", *rule.split()[1:]], capture_output=True)
    for table, chain in added:
        subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True)
    for table, chain in added:
        subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True)
