"""The end-of-session check: a test session leaves the machine as it found it, or the run fails.

``pytest_sessionstart`` marks the session (``ENV_MARKER`` in the environment every process it starts
inherits) and takes a snapshot; ``pytest_sessionfinish`` runs after every fixture's teardown, looks
again, and fails the run (exit 1) listing what is left. tests/conftest.py imports both hooks.

Only what is this session's own counts, so that other sessions and other users of the machine never
make it fail:
- processes: pytest's descendants, and every process whose environment carries ``ENV_MARKER`` with
  this session's pid (daemons that went to init: dnsmasq, containerd-shim, an ``inv up`` server), with
  their descendants; a zombie (ended, not yet reaped) does not count;
- ports: listening TCP and bound UDP sockets (/proc/net/{tcp,tcp6,udp,udp6}) held by one of those
  processes (matched by socket inode in /proc/PID/fd), or by pytest itself and new since the start;
- users and groups (/etc/passwd, /etc/group), files in /etc/sudoers.d and network interfaces
  (/sys/class/net) new since the start with this session's names (``is_session_name``); and a shared
  user (``nomad``) a test session created, that no running test session holds any more (accounts.py);
- mounts (/proc/self/mounts) new since the start, under pytest's temp folder or under a folder with
  this session's name;
- the user's own cache folder (``user_caches``: ~/.cache/mlflow-self-host, and MSH_CACHE_DIR as the shell set
  it): an entry new, changed (size, mtime) or gone since the start, one level deep, and each environment's
  completion marker. The suite keeps its caches under TEST_CACHE (tests/services/__init__.py) and never
  writes here, so any change fails the run (a process other than the suite, the user's `inv up` meanwhile,
  shows up too: the line names what changed).
A container the session's engine runs is one of its processes (dockerd, containerd-shim); a network
namespace the session makes would hold a process too.

Under pytest-xdist each worker is a session of its own (its pid is its tag): it checks what it left itself
and hands the lines to the controller (``workeroutput``), whose own check adds them and fails the run (the
controller does not look at the user's cache again when workers did).
"""
from __future__ import annotations

import gc
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import OWN_PATHS, SESSION_TAG, TEST_CACHE, accounts, is_session_name

ENV_MARKER = "MLFLOW_SELF_HOST_TEST_SESSION"  # = the pytest pid; not MSH_*, which project_env removes
GRACE = 10.0  # seconds for what is ending anyway (a process after SIGTERM, ssh's ControlPersist master)
_BEFORE = pytest.StashKey["Snapshot"]()
VENV_MARKER = ".msh-complete"  # mlflow_self_host.steps.local.VENV_MARKER: not imported, the check loads nothing


@dataclass(frozen=True)
class Snapshot:
    users: frozenset[str]
    groups: frozenset[str]
    sudoers: frozenset[str]
    interfaces: frozenset[str]
    mounts: frozenset[tuple[str, str, str]]  # (device, mount point, type)
    own_sockets: frozenset[int]  # inodes of the listening sockets pytest itself holds
    user_cache: frozenset[tuple[str, int, int]]  # (path, size, mtime in ns) in the user's cache folders


def snapshot() -> Snapshot:
    return Snapshot(users=frozenset(_names("/etc/passwd")), groups=frozenset(_names("/etc/group")),
                    sudoers=frozenset(_entries(accounts.SUDOERS)), interfaces=frozenset(_entries("/sys/class/net")),
                    mounts=frozenset(_mounts()), own_sockets=frozenset(_socket_inodes(os.getpid()) & set(_listening())),
                    user_cache=frozenset(_cache_entries(user_caches())))


def user_caches() -> list[Path]:
    """The user's own cache folders: the default cache_dir, and MSH_CACHE_DIR as the user's shell sets it (unless it
    is the suite's own, under TEST_CACHE)."""
    found = [Path.home() / ".cache" / "mlflow-self-host"]
    own = os.environ.get("MSH_CACHE_DIR")
    if own:
        path = Path(os.path.expanduser(own))
        if path not in found and TEST_CACHE not in (path, *path.parents):
            found.append(path)
    return found


def left(before: Snapshot, temp_root: Path | None, tag: str = SESSION_TAG, user_cache: bool = True) -> list[str]:
    """What this session has left, one line per thing ("user mshtest-123", "process 42 (sleep 300)"); with
    ``user_cache``, what changed in the user's cache folder ("in the user's cache: new /root/.cache/...")."""
    me = os.getpid()
    found = []
    processes = session_processes()
    for pid, command in sorted(processes.items()):
        found.append(f"process {pid} ({command})")
    listening = _listening()
    for pid in [me, *sorted(processes)]:
        for inode in sorted(_socket_inodes(pid) & set(listening)):
            if pid == me and inode in before.own_sockets:
                continue
            found.append(f"port {listening[inode]} held by " + ("pytest itself" if pid == me else f"process {pid}"))
    users, groups = set(_names("/etc/passwd")), set(_names("/etc/group"))
    for kind, now, then in (("user", users, before.users), ("group", groups, before.groups)):
        for name in sorted(now - then):
            if is_session_name(name, tag) or (name in accounts.SHARED and _shared_left(name, users)):
                found.append(f"{kind} {name}")
    for name in sorted(set(_entries(accounts.SUDOERS)) - before.sudoers):
        if is_session_name(name, tag):
            found.append(f"sudoers file {accounts.SUDOERS / name}")
    for name in sorted(set(_entries("/sys/class/net")) - before.interfaces):
        if is_session_name(name, tag):
            found.append(f"network interface {name}")
    for device, point, kind in sorted(set(_mounts()) - before.mounts):
        if _session_path(point, temp_root, tag):
            found.append(f"mount {point} ({kind} {device})")
    if user_cache:
        then = {path: (size, mtime) for path, size, mtime in before.user_cache}
        now = {path: (size, mtime) for path, size, mtime in _cache_entries(user_caches())}
        for path in sorted(then.keys() | now.keys()):
            if then.get(path) != now.get(path):
                what = "new" if path not in then else "gone" if path not in now else "changed"
                found.append(f"in the user's cache: {what} {path}")
    return found


def left_after_grace(before: Snapshot, temp_root: Path | None, grace: float | None = None,
                     user_cache: bool = True) -> list[str]:
    """``left``, asked again for up to ``grace`` seconds while it finds something."""
    deadline = time.monotonic() + (GRACE if grace is None else grace)
    while True:
        gc.collect()  # a socket in a reference cycle is closed only when collected
        found = left(before, temp_root, user_cache=user_cache)
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.5)


# --- the hooks (tests/conftest.py imports them) ------------------------------------------------------
def pytest_sessionstart(session):
    os.environ[ENV_MARKER] = str(os.getpid())
    session.config.stash[_BEFORE] = snapshot()


class WorkersLeftovers:
    """The controller's collector of what each xdist worker found (registered by ``pytest_configure``)."""

    def __init__(self):
        self.found: list[str] = []
        self.workers = 0

    def pytest_testnodedown(self, node, error):
        output = getattr(node, "workeroutput", None) or {}
        self.found += output.get("leftovers", [])
        self.workers += 1


def pytest_configure(config):
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(WorkersLeftovers(), "msh-workers-leftovers")


def pytest_sessionfinish(session, exitstatus):
    before = session.config.stash.get(_BEFORE, None)
    if before is None:
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    temp_root = getattr(factory, "_basetemp", None) or getattr(factory, "_given_basetemp", None)
    workers = session.config.pluginmanager.get_plugin("msh-workers-leftovers")
    found = left_after_grace(before, temp_root, user_cache=workers is None or not workers.workers)  # else theirs
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:  # an xdist worker: the controller reports it and fails the run
        worker = session.config.workerinput.get("workerid", "?")
        worker_output["leftovers"] = [f"{line} (xdist worker {worker})" for line in found]
        return
    found += workers.found if workers is not None else []
    if not found:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [*found, "the run fails: a test session must leave the machine as it found it (tests/services/leftovers.py);",
             "remove these by hand, then fix the fixture that made them"]
    if reporter is not None:
        reporter.write("\n")  # after the progress line
        reporter.write_sep("=", f"left on the machine by this test session ({len(found)})", red=True)
        for line in lines:
            reporter.write_line(line, red=True)
    else:
        print("\n".join(lines))
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- reading the machine -----------------------------------------------------------------------------
def session_processes() -> dict[int, str]:
    """pid → command line of every running process of this session but pytest itself."""
    me, marker = os.getpid(), f"{ENV_MARKER}={os.getpid()}".encode()
    parents, states, roots = {}, {}, {me}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            parents[pid], states[pid] = int(fields[1]), fields[0]
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                roots.add(pid)
        except OSError:
            pass  # another user's (not readable without root), or ended
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    ours, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in ours:
            ours.add(pid)
            todo.extend(children.get(pid, []))
    found = {}
    for pid in ours - {me}:
        if states.get(pid, "Z") == "Z":
            continue
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found[pid] = command[:200] or "?"
    return found


def _listening() -> dict[int, str]:
    """socket inode → "tcp 127.0.0.1:5000" for every listening TCP and bound, unconnected UDP socket."""
    found = {}
    for proto, wanted in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != wanted:
                continue
            if proto.startswith("udp") and not fields[2].endswith(":0000"):
                continue  # a connected UDP socket (a client's), not a server's
            found[int(fields[9])] = f"{proto.rstrip('6')} {_address(fields[1])}"
    return found


def _address(hex_address: str) -> str:
    """/proc/net's "0100007F:1388" → "127.0.0.1:5000" (IPv6 as [..]:port)."""
    import ipaddress

    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is host order
    ip = ipaddress.ip_address(raw)
    return f"{ip}:{int(port, 16)}" if ip.version == 4 else f"[{ip}]:{int(port, 16)}"


def _socket_inodes(pid: int) -> set[int]:
    found = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def _names(path: str) -> list[str]:
    try:
        return [line.split(":", 1)[0] for line in Path(path).read_text().splitlines() if ":" in line]
    except OSError:
        return []


def _entries(folder) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _mounts() -> list[tuple[str, str, str]]:
    def unescape(text: str) -> str:
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)

    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3:
            found.append((unescape(fields[0]), unescape(fields[1]), fields[2]))
    return found


def _cache_entries(folders: list[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime in ns) of each entry of ``folders``, and of each folder's environment marker."""
    found = []
    for folder in folders:
        for entry in _entries(folder):
            for path in (folder / entry, folder / entry / VENV_MARKER):
                try:
                    stat = path.lstat()
                except OSError:
                    continue  # no marker (not an environment), or gone meanwhile
                found.append((str(path), stat.st_size, stat.st_mtime_ns))
    return found


def _session_path(point: str, temp_root: Path | None, tag: str) -> bool:
    """Under pytest's temp folder or a folder the session alone uses (``OWN_PATHS``), or under a folder named for
    this session (``msh-host-123-x1y2``)."""
    for root in ([temp_root] if temp_root is not None else []) + OWN_PATHS:
        if point == str(root) or point.startswith(str(root).rstrip("/") + "/"):
            return True
    return any(re.fullmatch(rf"[a-z][a-z_-]*{re.escape(tag)}(-.*)?", part) for part in Path(point).parts)


def _shared_left(name: str, users: set[str]) -> bool:
    """Shared user (or its group) ``name`` was made by a test session and no running one holds it."""
    if accounts.live_holders(name):
        return False
    return name not in users or accounts.comment(name) == accounts.COMMENT
