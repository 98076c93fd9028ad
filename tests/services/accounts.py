"""The system accounts the tests log in as or give files to, and their removal when the session ends.

- A session's own user (``acquire(session_name("mshtest-"))``): created when first acquired, with a
  home, a group of its name and, with ``sudo``, a sudoers file; removed with all three when the last
  holder in this process releases it (only when this process created it).
- A shared user with a fixed name (``acquire_shared("nomad")``, as Nomad's package makes it: tests
  give folders to ``nomad`` by name): created only when missing, with ``COMMENT`` in its GECOS field;
  every test session that uses it registers under ``HOLDERS``; the last one to leave removes it, and
  only when a test session created it (a ``nomad`` user made otherwise, a developer's, is never touched).

Changes of the account files are serialized between test sessions with ``flock`` on /etc/passwd
(useradd's own locks guard the files themselves).
"""
from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

from . import alive, stop_pids

COMMENT = "mlflow-self-host tests"  # the GECOS field of a shared user a test session created
HOLDERS = Path("/run/mlflow-self-host-tests")  # HOLDERS/<user>/<pid>-<start time>: sessions using it
SUDOERS = Path("/etc/sudoers.d")
SHARED = ("nomad",)  # the users with fixed names (acquire_shared)

_held: dict[str, int] = {}  # user -> acquisitions not yet released, in this process
_created: set[str] = set()  # users this process created (session users)


@contextmanager
def _accounts_lock():
    with open("/etc/passwd") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def comment(name: str) -> str | None:
    try:
        return pwd.getpwnam(name).pw_gecos
    except KeyError:
        return None


def sudoers_file(name: str) -> Path:
    return SUDOERS / name


def acquire(name: str, sudo: bool = True) -> None:
    """This session's user ``name`` (login shell, home; with ``sudo``, passwordless sudo), created
    when missing. Release it with ``release``."""
    with _accounts_lock():
        if not exists(name):
            subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/bash",
                            "--comment", COMMENT, name], check=True)
            _created.add(name)
        # An account with a "!" password is locked, and sshd (without PAM) refuses it.
        subprocess.run(["usermod", "-p", "*", name], check=True)
        if sudo:
            sudoers_file(name).write_text(f"{name} ALL=(ALL) NOPASSWD:ALL\n")
            os.chmod(sudoers_file(name), 0o440)
    _held[name] = _held.get(name, 0) + 1


def release(name: str) -> None:
    """One ``acquire`` of ``name`` undone; the last removes the user if this process created it."""
    _held[name] = _held.get(name, 0) - 1
    if _held[name] > 0:
        return
    del _held[name]
    if name in _created:
        with _accounts_lock():
            remove(name)
        _created.discard(name)


def remove(name: str) -> None:
    """Delete user ``name``: its processes, home and mail spool (``userdel -r``), its group and its
    sudoers file. Raises when it is still there afterwards."""
    sudoers_file(name).unlink(missing_ok=True)
    if exists(name):
        uid = pwd.getpwnam(name).pw_uid
        stop_pids(_processes_of(uid))  # userdel refuses a user with running processes
        done = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True)
        if exists(name):
            raise RuntimeError(f"userdel {name} failed: {done.stderr.strip()}")
    if group_exists(name):
        subprocess.run(["groupdel", name], check=True, capture_output=True)


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _holder_name(pid: int) -> str:
    return f"{pid}-{_start_time(pid)}"


def live_holders(name: str) -> list[int]:
    """The pids of the test sessions that hold shared user ``name`` now (pid and start time match)."""
    found = []
    for entry in (HOLDERS / name).glob("*-*") if (HOLDERS / name).is_dir() else []:
        pid = int(entry.name.split("-")[0])
        if alive(pid) and _holder_name(pid) == entry.name:
            found.append(pid)
    return found


def acquire_shared(name: str, **useradd) -> None:
    """Shared user ``name``, created when missing (``useradd`` options as keywords, e.g.
    ``system=True``), held by this session until ``release_shared``."""
    if _held.get(name, 0) == 0:
        with _accounts_lock():
            if not exists(name):
                options = [f"--{key.replace('_', '-')}" + ("" if value is True else f"={value}")
                           for key, value in useradd.items() if value]
                subprocess.run(["useradd", *options, "--comment", COMMENT, name], check=True)
            (HOLDERS / name).mkdir(parents=True, exist_ok=True)
            (HOLDERS / name / _holder_name(os.getpid())).touch()
    _held[name] = _held.get(name, 0) + 1


def release_shared(name: str) -> None:
    """One ``acquire_shared`` undone; the last session to leave removes a user a test session created."""
    _held[name] = _held.get(name, 0) - 1
    if _held[name] > 0:
        return
    del _held[name]
    with _accounts_lock():
        live = set(live_holders(name)) - {os.getpid()}
        if (HOLDERS / name).is_dir():
            for entry in (HOLDERS / name).iterdir():  # ours, and those of sessions that ended unseen
                if int(entry.name.split("-")[0]) not in live:
                    entry.unlink(missing_ok=True)
        if live:
            return
        shutil.rmtree(HOLDERS / name, ignore_errors=True)
        try:
            HOLDERS.rmdir()
        except OSError:
            pass  # another shared user still has holders
        if comment(name) == COMMENT:
            remove(name)
