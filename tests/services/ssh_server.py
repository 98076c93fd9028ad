"""An SSH server on a loopback port: Debian's openssh-server with its own config and host key.

The fixture makes a client key, a test user with passwordless sudo, and a known_hosts file that
names the server as ``[127.0.0.1]:PORT``, as ssh itself writes it. The user is this session's own
(``mshtest-<session tag>``); ``stop`` stops sshd with every connection's processes, then removes the
user (home, group, sudoers file) when the last server using it stops.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import accounts, free_port, need_binary, port_open, session_name, stop_process, unavailable, wait_for

TEST_USER = session_name("mshtest-")


@dataclass
class SSHServer:
    host: str
    port: int
    user: str
    key_file: Path  # the client's private key
    known_hosts: Path  # holds the server's host key
    host_public_key: str
    root: Path
    proc: subprocess.Popen
    keys_dir: Path | None = None
    holds_user: bool = True  # until stop() releases it

    def settings(self) -> dict:
        """Setting overrides that point the tasks at this server."""
        return {"host": self.host, "ssh_port": self.port, "ssh_user": self.user,
                "ssh_key": str(self.key_file), "known_hosts": str(self.known_hosts)}

    def env(self) -> dict:
        return {f"MSH_{k.upper()}": str(v) for k, v in self.settings().items()}


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return Path(f"{path}.pub").read_text().strip()


def start(root: Path, user: str = TEST_USER) -> SSHServer:
    sshd = need_binary("sshd", "openssh-server")
    need_binary("sudo", "sudo")
    if os.geteuid() != 0:
        unavailable("the SSH server fixture needs root (it creates a test user)")
    accounts.acquire(user)
    try:
        return _start(root, sshd, user)
    except BaseException:
        accounts.release(user)
        raise


def _start(root: Path, sshd: str, user: str) -> SSHServer:
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = root / "ssh_host_ed25519_key"
    host_pub = _keygen(host_key)
    client_key = root / "id_ed25519"
    client_pub = _keygen(client_key)
    # The user's sshd child reads this as the user: it must not sit under pytest's 0700 temp root.
    keys_dir = Path(tempfile.mkdtemp(prefix="msh-sshd-keys-"))
    os.chmod(keys_dir, 0o755)
    keys_dir.mkdir(mode=0o755, exist_ok=True)
    (keys_dir / user).write_text(client_pub + "\n")
    os.chmod(keys_dir / user, 0o644)
    port = free_port()
    config = root / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {root / 'sshd.pid'}
AuthorizedKeysFile {keys_dir}/%u
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin no
AllowUsers {user}
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel VERBOSE
""")
    log = open(root / "sshd.log", "ab")
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is None and port_open(port), 15, "sshd")
    except TimeoutError:
        stop_process(proc)
        unavailable("sshd did not start: " + (root / "sshd.log").read_text()[-1500:])
    known_hosts = root / "known_hosts"
    key_type, key_data = host_pub.split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_data}\n")
    return SSHServer(host="127.0.0.1", port=port, user=user, key_file=client_key, known_hosts=known_hosts,
                     host_public_key=f"{key_type} {key_data}", root=root, proc=proc, keys_dir=keys_dir)


def stop(server: SSHServer) -> None:
    """sshd and its connections' processes stopped, its keys folder gone, the user released (once)."""
    stop_process(server.proc)
    if server.keys_dir:
        shutil.rmtree(server.keys_dir, ignore_errors=True)
    if server.holds_user:
        server.holds_user = False
        accounts.release(server.user)
