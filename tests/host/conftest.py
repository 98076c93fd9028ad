"""Fixtures for configure-host: a Nomad client laid out in a temp folder, reached over the real sshd.

- ``password_sudo_server``: a second sshd whose user (``mshpw-<session tag>``) needs a password for sudo,
  one made at random for the session (``PASSWORD``).
- ``no_sftp_server``: a third sshd with no ``Subsystem sftp`` line (SFTP refused, exec channels work);
  ``no_sftp_host``: ``nomad_host`` reached through it.
- ``nomad_user``: the ``nomad`` user and group (created when missing, as Nomad's package does; removed
  when the last test session using it ends, if a test session created it: ``tests/services/accounts.py``).
- ``agent_health``: a tiny HTTP server answering ``/v1/agent/health`` (status switchable, hits counted).
- ``nomad_host``: client.hcl, a restart script that counts its calls, a job file, and the settings
  that point configure-host at them over SSH, in a folder every user can reach (checks run as the
  image's uid).
- ``root_squashed``: a folder mounted with bindfs so that root's chown fails ("Operation not
  permitted"), as on an NFS export with root_squash; unmounted afterwards.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlflow_self_host.core.settings import Settings
from tests.services import accounts, need_binary, port_open, session_name, ssh_server as ssh_service
from tests.services import stop_process, unavailable, wait_for

CLIENT_HCL = """\
# Nomad client configuration
data_dir = "/opt/nomad/data"

client {
  enabled = true
  servers = ["127.0.0.1:4647"]

  meta {
    role = "apps"
  }
}
"""

JOB_FILE = """\
job "mlflow" {
  datacenters = ["DC0"]
}
"""


PASSWORD_USER = session_name("mshpw-")
PASSWORD = secrets.token_hex(16)  # this session's; never written anywhere but the user's shadow entry


@pytest.fixture(scope="session")
def password_sudo_server(tmp_path_factory):
    """A second sshd whose user must type a password for sudo (no NOPASSWD, no cached credentials)."""
    server = ssh_service.start(Path(tmp_path_factory.mktemp("sshd-pw")), user=PASSWORD_USER)
    sudoers = Path(f"/etc/sudoers.d/{PASSWORD_USER}")
    sudoers.write_text(f"Defaults:{PASSWORD_USER} timestamp_timeout=0\n{PASSWORD_USER} ALL=(ALL) ALL\n")
    os.chmod(sudoers, 0o440)
    subprocess.run(["chpasswd"], input=f"{PASSWORD_USER}:{PASSWORD}\n", text=True, check=True)
    yield server
    ssh_service.stop(server)  # the user, its password and its sudoers file go with it


@pytest.fixture(scope="session")
def no_sftp_server(tmp_path_factory):
    """Another sshd like the session's, but with no ``Subsystem sftp`` line in its sshd_config, as on
    a hardened host: OpenSSH refuses SFTP ("subsystem request for sftp ... failed, subsystem not
    found" in ``sshd.log``) and still runs commands."""
    server = ssh_service.start(Path(tmp_path_factory.mktemp("sshd-nosftp")))
    try:
        server = _without_sftp(server)
    except BaseException:
        ssh_service.stop(server)
        raise
    yield server
    ssh_service.stop(server)


def _without_sftp(server):
    """``server`` started again on its port with its own sshd_config minus the Subsystem line
    (ssh_server.start always writes one)."""
    config = server.root / "sshd_config"
    stop_process(server.proc)
    lines = config.read_text().splitlines(True)
    config.write_text("".join(line for line in lines if not line.startswith("Subsystem ")))
    log = open(server.root / "sshd.log", "ab")
    proc = subprocess.Popen([need_binary("sshd", "openssh-server"), "-D", "-e", "-f", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = replace(server, proc=proc)
    try:
        wait_for(lambda: proc.poll() is None and port_open(server.port), 15, "sshd without SFTP")
    except TimeoutError:
        stop_process(proc)
        unavailable("sshd did not start again: " + (server.root / "sshd.log").read_text()[-1500:])
    return server


def sftp_refusals(server) -> int:
    """How many SFTP sessions ``server`` (``no_sftp_server``) has refused so far, from its log."""
    log = (server.root / "sshd.log").read_text()
    return sum("subsystem request for sftp" in line and "subsystem not found" in line for line in log.splitlines())


@pytest.fixture(scope="session")
def nomad_user():
    """The ``nomad`` user with its own group, as the Nomad package creates them (tests name it: fixed)."""
    accounts.acquire_shared("nomad", system=True, user_group=True, no_create_home=True, shell="/bin/false")
    yield "nomad"
    accounts.release_shared("nomad")


@dataclass
class AgentHealth:
    url: str
    status: int = 200
    hits: list = field(default_factory=list)


@pytest.fixture
def agent_health():
    from tests.services import free_port

    state = AgentHealth(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0]  # the Nomad client adds ?region= (the agent ignores it here)
            state.hits.append(path)
            code = state.status if path == "/v1/agent/health" else 404
            body = b'{"client":{"ok":true,"message":"ok"}}' if code == 200 else b"{}"
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class NomadHost:
    root: Path
    client_config: Path
    restarts_file: Path
    job_source: Path
    settings: Settings

    @property
    def backend(self) -> Path:
        return Path(self.settings.backend_path)

    @property
    def artifacts(self) -> Path:
        return Path(self.settings.artifacts_path)

    @property
    def backups(self) -> Path:
        return Path(self.settings.backups_path)

    @property
    def job_dir(self) -> Path:
        return Path(self.settings.job_dir)

    @property
    def job_target(self) -> Path:
        return self.job_dir / self.job_source.name

    def restarts(self) -> int:
        return len(self.restarts_file.read_text().splitlines()) if self.restarts_file.exists() else 0

    def with_settings(self, **overrides) -> "NomadHost":
        return NomadHost(self.root, self.client_config, self.restarts_file, self.job_source,
                         self.settings.with_overrides(overrides))


def make_nomad_host(root: Path, ssh_server, health_url: str, **overrides) -> NomadHost:
    """A Nomad client's files under ``root`` and the settings that reach them over SSH."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    (root / "nomad.d").mkdir()
    client_config = root / "nomad.d" / "client.hcl"
    client_config.write_text(CLIENT_HCL)
    restarts = root / "restarts.log"
    script = root / "restart-nomad.sh"
    script.write_text(f"#!/bin/sh\necho \"$(id -un)\" >> {restarts}\n")
    os.chmod(script, 0o755)
    job_source = root / "src" / "mlflow.nomad.hcl"
    job_source.parent.mkdir()
    job_source.write_text(JOB_FILE)
    values = dict(ssh_server.settings())
    values.update(
        nomad_client_config=str(client_config),
        backend_path=str(root / "data" / "mlflow" / "backend"),
        artifacts_path=str(root / "data" / "mlflow" / "artifacts"),
        backups_path=str(root / "data" / "mlflow" / "backups"),
        job_dir=str(root / "jobs" / "mlflow"),
        job_file=str(job_source),
        folder_owner="nomad",
        folder_group="root",
        nomad_restart_command=str(script),
        nomad_addr=health_url,
        nomad_health_timeout=5,
    )
    values.update(overrides)
    return NomadHost(root, client_config, restarts, job_source, Settings.load(env={}, overrides=values))


@pytest.fixture
def reachable_tmp():
    """A temp folder every user can traverse (pytest's tmp_path sits in a 0700 folder of root's), so a
    check made as the image's uid reaches the host's folders; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"{session_name('msh-host-')}-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def nomad_host(reachable_tmp, ssh_server, agent_health, nomad_user, project_env):
    return make_nomad_host(reachable_tmp / "host", ssh_server, agent_health.url)


@pytest.fixture
def no_sftp_host(reachable_tmp, no_sftp_server, agent_health, nomad_user, project_env):
    """A Nomad client whose sshd has no SFTP subsystem."""
    return make_nomad_host(reachable_tmp / "host", no_sftp_server, agent_health.url)


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == str(path) for line in fh)


@contextmanager
def root_squashed(export: Path, mountpoint: Path):
    """``export`` mounted at ``mountpoint`` with bindfs (FUSE) refusing every chown and chgrp with
    EPERM, root's included: what root on an NFS client meets on an export with root_squash
    ("chown: changing ownership of ...: Operation not permitted"). Creating, writing and chmod pass
    through as on the folder itself. Unmounted (and bindfs gone) when the block ends."""
    bindfs = need_binary("bindfs", "bindfs")
    export.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    # No attribute cache: a change made on the export side shows at once (NFS would take up to acdirmax).
    proc = subprocess.Popen([bindfs, "-f", "--chown-deny", "--chgrp-deny",
                             "-o", "attr_timeout=0,entry_timeout=0,negative_timeout=0", str(export), str(mountpoint)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"bindfs exited {proc.returncode}: {proc.stderr.read().decode().strip()}")
        return _mounted(mountpoint)

    try:
        try:
            wait_for(ready, 10, f"bindfs on {mountpoint}")
        except TimeoutError as exc:
            unavailable(f"bindfs cannot mount here (needs /dev/fuse and root): {exc}")
        yield mountpoint
    finally:
        deadline = time.monotonic() + 10
        while _mounted(mountpoint) and time.monotonic() < deadline:  # busy for a moment after a client
            if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
                time.sleep(0.2)
        if _mounted(mountpoint):
            subprocess.run(["umount", "--lazy", str(mountpoint)], check=True)
        try:
            proc.wait(5)  # bindfs ends when its mount goes
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(5)
