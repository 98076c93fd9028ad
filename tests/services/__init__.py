"""Real services for the tests, each started on loopback in a temp folder and stopped afterwards.

Under CI=true a service that cannot start fails the run; elsewhere its tests are skipped with the
reason (and the apt package that provides it).
"""
from __future__ import annotations

import os
import shutil
import socket
import time

import pytest


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


def stop_process(proc, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except Exception:  # noqa: BLE001
        proc.kill()
        proc.wait(5)
