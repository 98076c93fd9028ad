"""The end-of-session check (tests/services/leftovers.py), on pytest sessions of its own in subprocesses:
a clean one passes, one that leaves a user, a group, a sudoers file, a process (a child, and a daemon
that went to init), a listening port, a network interface and a mount fails, naming each; so does one that
adds, changes or removes something in the user's own cache folder (~/.cache/mlflow-self-host, under a HOME
of the test's own)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import stop_pids, unavailable

PROJECT_ROOT = Path(__file__).resolve().parent.parent

CONFTEST = """\
from tests.services import leftovers
from tests.services.leftovers import pytest_configure, pytest_sessionfinish, pytest_sessionstart  # noqa: F401

leftovers.GRACE = 1.0
"""

PLANT = '''\
import json
import os
import socket
import subprocess
from pathlib import Path

from tests.services import session_name

KEEP = []


def test_plant(tmp_path):
    plant, record = os.environ["PLANT"].split(","), {}
    try:
        if "user" in plant:
            record["user"] = session_name("mshleft-")
            subprocess.run(["useradd", "--no-create-home", "--user-group", record["user"]], check=True)
            Path("/etc/sudoers.d", record["user"]).write_text(record["user"] + " ALL=(ALL) NOPASSWD:ALL\\n")
        if "port" in plant:
            server = socket.socket()
            server.bind(("127.0.0.1", 0))
            server.listen()
            KEEP.append(server)
            record["port"] = server.getsockname()[1]
        if "process" in plant:
            record["child"] = subprocess.Popen(["sleep", "300"]).pid
            record["daemon"] = int(subprocess.run(["sh", "-c", "sleep 301 >/dev/null 2>&1 & echo $!"],
                                                  capture_output=True, text=True, check=True).stdout)
        if "interface" in plant:
            record["interface"] = session_name("mshx")
            subprocess.run(["ip", "link", "add", record["interface"], "type", "veth", "peer", "name",
                            session_name("mshy")], check=True)
        if "cache" in plant:
            cache = Path.home() / ".cache" / "mlflow-self-host"
            (cache / "python-base-0123.tar").write_bytes(b"a base image")
            (cache / "mlflow-server-0123" / ".msh-complete").write_text("mlflow==0.1 (rebuilt)\\n")
            (cache / "old.txt").unlink()
        if "mount" in plant:
            record["mount"] = str(tmp_path / "mnt")
            (tmp_path / "mnt").mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "none", record["mount"]], check=True)
    finally:
        Path(os.environ["RECORD"]).write_text(json.dumps(record))
'''


def run_session(folder: Path, plant: str, *options: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess,
                                                                                          dict]:
    folder.mkdir()
    (folder / "conftest.py").write_text(CONFTEST)
    (folder / "test_plant.py").write_text(PLANT)
    record = folder / "record.json"
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(PROJECT_ROOT), "PLANT": plant,
           "RECORD": str(record)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--basetemp={folder / 'tmp'}", *options, str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    return done, (json.loads(record.read_text()) if record.exists() else {})


def remove(record: dict) -> None:
    """Everything the planting session left, removed by this test (else this session's check fails)."""
    stop_pids([record[key] for key in ("child", "daemon") if key in record], timeout=5)
    if "mount" in record:
        subprocess.run(["umount", record["mount"]], capture_output=True)
    if "interface" in record:
        subprocess.run(["ip", "link", "del", record["interface"]], capture_output=True)
    if "user" in record:
        Path("/etc/sudoers.d", record["user"]).unlink(missing_ok=True)
        subprocess.run(["userdel", record["user"]], capture_output=True)
        subprocess.run(["groupdel", record["user"]], capture_output=True)


@pytest.fixture
def as_root():
    if os.geteuid() != 0:
        unavailable("the leftover check's test plants users, interfaces and mounts: it needs root")


def test_a_session_that_leaves_nothing_passes(tmp_path, as_root):
    done, record = run_session(tmp_path / "clean", "")
    assert done.returncode == 0, done.stdout + done.stderr
    assert record == {} and "left on the machine" not in done.stdout


@pytest.mark.parametrize("options", [(), ("-n", "1")], ids=["one process", "xdist worker"])
def test_a_session_that_leaves_things_fails_naming_each(tmp_path, as_root, options):
    """Under pytest-xdist (the suite runs with -n 3) the worker finds what it left and the controller fails the run."""
    done, record = run_session(tmp_path / "dirty", "user,port,process,interface,mount", *options)
    try:
        assert done.returncode == 1, done.stdout + done.stderr
        assert "1 passed" in done.stdout  # the test passed; the session's end failed the run
        report = done.stdout.split("left on the machine by this test session", 1)[1]
        lines = [line.strip().removesuffix(" (xdist worker gw0)" if options else "") for line in report.splitlines()]
        user, interface = record["user"], record["interface"]
        assert f"user {user}" in lines and f"group {user}" in lines
        assert f"sudoers file /etc/sudoers.d/{user}" in lines
        assert f"port tcp 127.0.0.1:{record['port']} held by pytest itself" in lines
        assert f"process {record['child']} (sleep 300)" in lines
        assert f"process {record['daemon']} (sleep 301)" in lines  # its parent is init: found by the marker
        assert f"network interface {interface}" in lines and f"network interface {interface[:3]}y{interface[4:]}" in lines
        assert f"mount {record['mount']} (tmpfs none)" in lines
    finally:
        remove(record)


@pytest.mark.parametrize("options", [(), ("-n", "1")], ids=["one process", "xdist worker"])
def test_a_session_that_touches_the_users_cache_fails_naming_what_changed(tmp_path, options):
    """The suite's caches live under its own folder: a new file, a rebuilt environment's marker or a removed file
    in the user's ~/.cache/mlflow-self-host fails the run, each named once (by the worker under xdist)."""
    home = tmp_path / "home"
    cache = home / ".cache" / "mlflow-self-host"
    (cache / "mlflow-server-0123").mkdir(parents=True)
    (cache / "mlflow-server-0123" / ".msh-complete").write_text("mlflow==0.1\n")
    (cache / "old.txt").write_text("the user's\n")
    (cache / "kept.txt").write_text("the user's\n")
    env = {key: value for key, value in os.environ.items() if key not in ("MSH_CACHE_DIR", "MSH_TEST_CACHE")}
    env["HOME"] = str(home)

    if not options:  # a session that leaves the user's cache as it found it passes
        clean, _ = run_session(tmp_path / "clean", "", env=env)
        assert clean.returncode == 0 and "left on the machine" not in clean.stdout, clean.stdout + clean.stderr

    done, _ = run_session(tmp_path / "dirty", "cache", *options, env=env)
    assert done.returncode == 1 and "1 passed" in done.stdout, done.stdout + done.stderr
    report = done.stdout.split("left on the machine by this test session (3)", 1)[1].splitlines()
    suffix = " (xdist worker gw0)" if options else ""
    assert [line.strip() for line in report if "cache" in line] == [
        f"in the user's cache: changed {cache}/mlflow-server-0123/.msh-complete{suffix}",
        f"in the user's cache: gone {cache}/old.txt{suffix}",
        f"in the user's cache: new {cache}/python-base-0123.tar{suffix}"]
