"""Real services for the tests, each started on loopback in a temp folder and stopped afterwards.

Under CI=true a service that cannot start fails the run; elsewhere its tests are skipped with the
reason (and the apt package that provides it).

What a session creates on the machine that has a name (users, groups, sudoers files, network
interfaces, folders outside pytest's temp root) carries this session's tag (``session_name``), so
that two test sessions never share one and the end-of-session check (``leftovers.py``) knows its own.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest

# The pytest process's pid (as the bridge network's name has always had it); 6 digits at most, so
# "msh" + a letter + the tag fits a network interface's 15 characters.
SESSION_TAG = str(os.getpid() % 1_000_000)


# What test sessions keep between runs on this machine (the Docker engines' data: images and build cache; the base
# image's tar; the native server's environment), apart from the user's own ~/.cache/mlflow-self-host, which the
# suite never touches (leftovers.py fails the run if it changed).
TEST_CACHE = Path(os.environ.get("MSH_TEST_CACHE") or Path.home() / ".cache" / "mlflow-self-host-tests")
# The suite's ``cache_dir`` setting (MSH_CACHE_DIR: the native server's virtual environment), as ``clean_env`` sets it.
CACHE_DIR = TEST_CACHE / "cache_dir"
# Folders outside pytest's temp folder that this session alone uses (a kept engine data root it holds the lock
# of): a mount left under one is the session's (leftovers.py).
OWN_PATHS: list[Path] = []


def session_name(prefix: str) -> str:
    """``prefix`` + this session's tag: a name no other test session uses (``mshtest-12345``)."""
    return f"{prefix}{SESSION_TAG}"


def is_session_name(name: str, tag: str = SESSION_TAG) -> bool:
    """A name ``session_name`` gave in the session tagged ``tag``: letters (and - or _), then the tag."""
    return re.fullmatch(rf"[a-z][a-z_-]*{re.escape(tag)}", name) is not None


# MLflow's admin password of the suite (auth: basic is the default): in ``clean_env``. Tests look for it in outputs.
ADMIN_PASSWORD = "suite-admin-" + "pw-7f3a9c1e"


def clean_env() -> dict:
    """The environment a test runs the project with: none of the developer's MSH_/NOMAD_/PIHOLE_ settings, the
    suite's own ``cache_dir`` (``CACHE_DIR``), so nothing it builds lands in the user's cache, and the suite's
    MLflow admin password (``ADMIN_PASSWORD``: auth is on by default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSH_", "NOMAD_", "PIHOLE_", "MLFLOW_TRACKING_"))}
    env["MSH_CACHE_DIR"] = str(CACHE_DIR)
    env["MSH_MLFLOW_ADMIN_PASSWORD"] = ADMIN_PASSWORD
    return env


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str):
    """Fail under CI, skip elsewhere."""
    if in_ci():
        pytest.fail(f"service unavailable under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def need_binary(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if not path:
        unavailable(f"{name} is not installed (apt-get install {package})")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, interval: float = 0.2):
    """Call ``check`` until it returns a truthy value; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s" + (f": {last}" if last else ""))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def parents() -> dict[int, int]:
    """pid → parent pid of every process now (read from /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    found[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass  # ended meanwhile
    return found


def descendants(pid: int) -> list[int]:
    """The processes under ``pid`` now (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for child, parent in parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_pids(pids, timeout: float = 10) -> None:
    """SIGTERM ``pids``, then SIGKILL those still running after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + timeout
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [pid for pid in pids if alive(pid)]
        if not pids:
            return


def stop_process(proc, timeout: float = 20) -> None:
    """Stop ``proc`` and every process it started (read before it stops: its children would go to init,
    as sshd's per-connection processes and a shell's background jobs do)."""
    if proc is None:
        return
    below = descendants(proc.pid)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except Exception:  # noqa: BLE001
            proc.kill()
            proc.wait(5)
    stop_pids([pid for pid in below if alive(pid)], timeout=5)
