"""SSH to the Nomad client host (Fabric), with strict host keys, sudo and atomic writes.

``connect(settings)`` opens a connection and returns a ``Remote``; every failure becomes a
``UserError`` that says what to do next:

- host keys are checked against ``known_hosts`` (an unknown key is refused unless the setting
  ``accept_host_key``, which records it; a changed key is always refused),
- sudo never waits on a prompt: without a password it runs ``sudo -n``; the password is the secret
  ``sudo_password`` (MSH_SUDO_PASSWORD) or, with the setting ``ask_sudo_pass``, a prompt, and is never shown,
- ``Remote.write`` replaces a file atomically (a temp file in the same folder, then ``mv``),
- files are copied over SFTP, or, on a host whose sshd has no SFTP subsystem, through the stdin and
  stdout of ``cat`` on an exec channel, as Ansible does (its "piped" transfer).
"""
from __future__ import annotations

import base64
import os
import shlex
import socket
import threading
from pathlib import Path

import paramiko
from fabric import Config, Connection
from invoke.exceptions import AuthFailure

from ..core.errors import UserError, connection_reason
from .shell import SUDO_PROMPT as _SUDO_PROMPT
from .shell import Result, short as _short  # noqa: F401 - Result: what run() returns

SUDO_PASS_ENV = "MSH_SUDO_PASSWORD"
_SUDO_NEEDS_PASSWORD = ("a password is required", "a terminal is required")
_SUDO_REFUSED = ("is not in the sudoers file", "is not allowed to execute", "may not run sudo")
_SFTP_HINT = ("add `Subsystem sftp internal-sftp` to /etc/ssh/sshd_config on the host and reload sshd "
              "(`sudo systemctl reload ssh`)")
_CHUNK = 32768


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, name: str, key: paramiko.PKey):
        super().__init__(f"unknown host key for {name}")
        self.name = name
        self.key = key


class _StrictPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse an unknown host key, or (``accept``) record it in the known_hosts file."""

    def __init__(self, known_hosts: Path, accept: bool):
        self.known_hosts = known_hosts
        self.accept = accept
        self.accepted: str | None = None

    def missing_host_key(self, client, hostname, key):
        if not self.accept:
            raise _UnknownHostKey(hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        _append_known_host(self.known_hosts, hostname, key)
        self.accepted = f"{key.get_name()} {fingerprint(key)}"


class UnknownHostKeyError(UserError):
    """connect() refused an unknown host key (``accept_host_key`` off): ``key`` is ``type SHA256:...``."""

    def __init__(self, message: str, hint: str, key: str):
        super().__init__(message, hint=hint)
        self.key = key


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` and ``ssh`` print it."""
    import hashlib

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _append_known_host(path: Path, hostname: str, key: paramiko.PKey) -> None:
    """Append one line as ``ssh`` writes it, keeping the rest of the file as it is."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    existing = path.read_bytes() if path.exists() else b""
    line = f"{hostname} {key.get_name()} {key.get_base64()}\n".encode()
    if existing and not existing.endswith(b"\n"):
        line = b"\n" + line
    with open(path, "ab") as fh:
        fh.write(line)
    os.chmod(path, 0o600 if not existing else os.stat(path).st_mode & 0o777)


def _known_hosts_name(host: str, port: int) -> str:
    return host if int(port) == 22 else f"[{host}]:{port}"


# Passwords typed at the prompt, by user@host, for this process: a task that connects several times
# (deploy: the store, configure-host, the backup; doctor's checks side by side) asks once.
_PROMPTED: dict[str, str] = {}
_PROMPT_LOCK = threading.Lock()


def sudo_password(settings) -> str:
    """The sudo password: MSH_SUDO_PASSWORD, else a prompt with ask_sudo_pass (once per user@host and
    run), else empty (sudo -n)."""
    password = settings.sudo_password
    if password or not settings.ask_sudo_pass:
        return password
    key = f"{settings.ssh_user}@{settings.host}:{settings.ssh_port}"
    with _PROMPT_LOCK:
        if key not in _PROMPTED:
            import getpass

            _PROMPTED[key] = getpass.getpass(f"sudo password for {settings.ssh_user} on {settings.host}: ")
        return _PROMPTED[key]


def connect(settings) -> "Remote":
    """Open SSH to ``settings.host:ssh_port`` as ``ssh_user``; raise UserError on any failure.

    An unknown host key is recorded only with the setting ``accept_host_key`` (the flag sets it)."""
    host, port, user = settings.host, int(settings.ssh_port), settings.ssh_user
    where = f"{user}@{host}:{port}"
    known_hosts = Path(os.path.expanduser(settings.known_hosts or "~/.ssh/known_hosts"))
    connect_kwargs: dict = {}
    if settings.ssh_key:
        key_file = Path(os.path.expanduser(settings.ssh_key))
        if not key_file.is_file():
            raise UserError(f"SSH key {key_file} not found",
                            hint="set ssh_key (MSH_SSH_KEY) to your private key file, or empty to use the SSH agent")
        connect_kwargs.update(key_filename=str(key_file), look_for_keys=False)
    password = sudo_password(settings)
    config = Config(overrides={"sudo": {"password": password or None, "prompt": _SUDO_PROMPT},
                               "load_ssh_configs": False})
    conn = Connection(host=host, user=user, port=port, connect_kwargs=connect_kwargs, config=config,
                      connect_timeout=15)
    try:
        conn.client.load_host_keys(str(known_hosts))
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001 - a broken known_hosts file is the user's to fix
        raise UserError(f"cannot read known_hosts {known_hosts}: {exc}",
                        hint="fix the file or point the known_hosts setting at another one") from None
    policy = _StrictPolicy(known_hosts, bool(settings.accept_host_key))
    conn.client.set_missing_host_key_policy(policy)
    name = _known_hosts_name(host, port)
    try:
        conn.open()
    except _UnknownHostKey as exc:
        raise UnknownHostKeyError(
            f"SSH host key of {name} is unknown ({exc.key.get_name()} {fingerprint(exc.key)})",
            hint=f"if that fingerprint is the host's, run again with --accept-host-key, or add it with "
                 f"`ssh-keyscan -p {port} {host} >> {known_hosts}`",
            key=f"{exc.key.get_name()} {fingerprint(exc.key)}",
        ) from None
    except paramiko.BadHostKeyException as exc:
        raise UserError(
            f"SSH host key of {name} has CHANGED (now {exc.key.get_name()} {fingerprint(exc.key)}, "
            f"{known_hosts} has {fingerprint(exc.expected_key)}): someone may be intercepting the connection",
            hint=f"if the host was reinstalled on purpose, remove the old key with "
                 f"`ssh-keygen -R '{name}' -f {known_hosts}`, then run again with --accept-host-key",
        ) from None
    except paramiko.PasswordRequiredException:
        raise UserError(f"SSH key {settings.ssh_key} is protected by a passphrase",
                        hint="load it into your SSH agent (ssh-add) and leave ssh_key empty") from None
    except paramiko.AuthenticationException:
        raise UserError(
            f"SSH authentication refused for {where}",
            hint="check ssh_user and ssh_key (MSH_SSH_USER, MSH_SSH_KEY), or that your key is in the "
                 "agent and in the user's ~/.ssh/authorized_keys on the host",
        ) from None
    except (socket.gaierror, socket.timeout, TimeoutError, OSError, paramiko.ssh_exception.NoValidConnectionsError,
            EOFError, paramiko.SSHException) as exc:
        reason = _reason(exc)
        raise UserError(
            f"cannot reach {host}:{port} over SSH: {reason}",
            hint="check that the host is up and sshd listens there (settings host and ssh_port, "
                 "MSH_HOST / MSH_SSH_PORT or --host)",
        ) from None
    if policy.accepted:
        from ..core import console

        console.warn(f"recorded the SSH host key of {name} ({policy.accepted}) in {known_hosts}")
    return Remote(conn, where=where, sudo_password=password)


class Remote:
    """One SSH connection to the host; every method raises UserError with what to do next."""

    def __init__(self, conn: Connection, where: str = "", sudo_password: str = ""):
        self.conn = conn
        self.where = where or f"{conn.user}@{conn.host}:{conn.port}"
        self.label = f"{conn.user}@{conn.host}"  # how messages about the host's files name it
        self._sudo_password = sudo_password
        self._no_sftp: str | None = None  # why the host refused SFTP: files then go through exec channels

    # --- commands ---------------------------------------------------------------------------
    def run(self, cmd: str, sudo: bool = False, check: bool = True) -> Result:
        """Run a shell command (the whole of it under sudo when ``sudo``)."""
        try:
            if not sudo:
                r = self.conn.run(cmd, hide=True, warn=True, in_stream=False)
            elif self._sudo_password:
                r = self.conn.sudo(f"sh -c {shlex.quote(cmd)}", hide=True, warn=True, in_stream=False)
            else:
                r = self.conn.run(f"sudo -n -- sh -c {shlex.quote(cmd)}", hide=True, warn=True, in_stream=False)
        except AuthFailure:
            raise UserError(f"sudo on {self.where} refused the password",
                            hint="check MSH_SUDO_PASSWORD, or unset it and use --ask-sudo-pass") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise UserError(f"SSH connection to {self.where} failed: {exc}",
                            hint="check the host and run again") from None
        result = Result(r.stdout, r.stderr, r.exited)
        if sudo and not result.ok:
            self._check_sudo(result)
        if check and not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise UserError(
                f"command failed on {self.where} (exit {result.exited}): {_short(cmd)}"
                + (f": {detail[-1]}" if detail else ""),
                hint="run `inv --debug ...` for details, fix the host, and run again",
            )
        return result

    def _check_sudo(self, result: Result) -> None:
        """sudo's own refusal is the first line of stderr (the command never ran)."""
        lines = [l for l in result.stderr.replace(_SUDO_PROMPT, "").splitlines() if l.strip()]
        first = lines[0].strip() if lines else ""
        if any(s in first.lower() for s in _SUDO_NEEDS_PASSWORD):
            raise UserError(
                f"sudo on {self.where} asks for a password",
                hint="run again with --ask-sudo-pass, or export MSH_SUDO_PASSWORD, "
                     "or give the user passwordless sudo",
            )
        if any(s in first.lower() for s in _SUDO_REFUSED):
            raise UserError(
                f"sudo refused on {self.where}: {first}",
                hint="give the SSH user sudo rights on the host (/etc/sudoers.d), or use another ssh_user",
            )

    # --- files ------------------------------------------------------------------------------
    def read_bytes(self, path: str, sudo: bool = False) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        r = self.run(f"base64 < {shlex.quote(path)}", sudo=sudo, check=False)
        if not r.ok:
            return self._missing_or_fail(r, path, sudo)
        return base64.b64decode(r.stdout)

    def _missing_or_fail(self, result: Result, path: str, sudo: bool) -> None:
        """None for a path that does not exist; a UserError for any other failure (permissions...)."""
        if "No such file" in result.stderr:  # bash: "No such file or directory", dash: "No such file"
            return None
        detail = (result.stderr.strip().splitlines() or [f"exit {result.exited}"])[-1].rsplit(": ", 1)[-1]
        raise UserError(f"cannot read {path} on {self.where}: {detail}",
                        hint=None if sudo else "the SSH user may lack the rights: read it with sudo")

    def read(self, path: str, sudo: bool = False) -> str | None:
        """The file's text (bytes kept exactly via surrogateescape), or None when missing."""
        data = self.read_bytes(path, sudo=sudo)
        return None if data is None else data.decode("utf-8", "surrogateescape")

    def exists(self, path: str, sudo: bool = False) -> bool:
        return self.run(f"test -e {shlex.quote(path)}", sudo=sudo, check=False).ok

    def stat(self, path: str, sudo: bool = False) -> tuple[str, str, str] | None:
        """(owner, group, mode as "0774") or None when the path does not exist."""
        r = self.run(f"stat -c '%U %G %a' -- {shlex.quote(path)}", sudo=sudo, check=False)
        if not r.ok:
            return self._missing_or_fail(r, path, sudo)
        owner, group, mode = r.stdout.split()
        return owner, group, f"{int(mode, 8):04o}"

    def stat_ids(self, path: str, sudo: bool = False) -> tuple[int, int, str, str, str] | None:
        """(uid, gid, mode as "0774", owner name, group name) or None when the path does not exist.

        Compare the numbers: the names are the host's (``UNKNOWN`` for an id with no name there).
        """
        r = self.run(f"stat -c '%u %g %a %U %G' -- {shlex.quote(path)}", sudo=sudo, check=False)
        if not r.ok:
            return self._missing_or_fail(r, path, sudo)
        uid, gid, mode, owner, group = r.stdout.split()
        return int(uid), int(gid), f"{int(mode, 8):04o}", owner, group

    def write(self, path: str, content, owner: str | None = None, group: str | None = None,
              mode: str | None = None, sudo: bool = True) -> None:
        """Replace ``path`` atomically with ``content`` (str or bytes).

        Owner, group and mode are the given ones, else those of the file it replaces, else the
        user's and 0644. The file is never seen half-written: a temp file in the same folder is
        filled, then moved over it.
        """
        data = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else bytes(content)
        upload = self.run("mktemp /tmp/msh-upload.XXXXXXXX").stdout.strip()
        try:
            self._upload(data, upload)
            q, up = shlex.quote(path), shlex.quote(upload)
            folder = shlex.quote(os.path.dirname(path) or ".")
            name = shlex.quote("." + os.path.basename(path) + ".msh.XXXXXX")
            steps = [
                "set -e",
                f"t=$(mktemp -p {folder} {name})",
                "trap 'rm -f \"$t\"' EXIT",
                f'cat {up} > "$t"',
                f'if [ -e {q} ]; then chown --reference={q} "$t" 2>/dev/null || true; chmod --reference={q} "$t"; '
                f'else chmod 0644 "$t"; fi',
            ]
            if owner or group:
                steps.append(f'chown {shlex.quote((owner or "") + (":" + group if group else ""))} "$t"')
            if mode:
                steps.append(f'chmod {shlex.quote(str(mode))} "$t"')
            steps += [f'mv -f "$t" {q}', "trap - EXIT"]
            self.run("\n".join(steps), sudo=sudo)
        finally:
            self.run(f"rm -f {shlex.quote(upload)}", check=False)

    def _sftp(self):
        """The connection's SFTP client, or None when the host's sshd has no SFTP subsystem; then this
        connection copies files through exec channels (remembered: asked once).

        A refused subsystem (no ``Subsystem sftp`` line: OpenSSH logs "subsystem request for sftp ...
        failed, subsystem not found") is paramiko's SSHException "Channel closed."; a Subsystem line
        naming a missing program ends in "EOF during negotiation". Both come while the client opens,
        before any byte is written, and leave the connection usable; a write that fails later is a
        write failure, not this.
        """
        if self._no_sftp is not None:
            return None
        try:
            return self.conn.sftp()
        except (EOFError, OSError, paramiko.SSHException) as exc:
            if not self.conn.is_connected:
                raise UserError(f"SSH connection to {self.where} failed: {exc}",
                                hint="check the host and run again") from None
            self._no_sftp = str(exc).strip() or type(exc).__name__
            return None

    def _upload(self, data: bytes, remote: str) -> None:
        """Copy ``data`` to ``remote`` as the SSH user: over SFTP, else through an exec channel."""
        if self._sftp() is None:
            self._exec_put(data, remote)
        else:
            self._sftp_put(data, remote)

    def _sftp_put(self, data: bytes, remote: str) -> None:
        import io

        try:
            self.conn.put(io.BytesIO(data), remote)
        except PermissionError:
            raise UserError(f"cannot write {remote} on {self.where}: permission denied",
                            hint="the SSH user cannot write there: copy it with sudo") from None
        except (OSError, paramiko.SSHException) as exc:
            raise UserError(f"cannot upload to {remote} on {self.where}: {exc}",
                            hint="check free space in /tmp on the host") from None

    def _exec_put(self, data: bytes, remote: str) -> None:
        """Write ``data`` to ``remote`` through the stdin of ``cat`` (Ansible's "piped" transfer): the
        bytes go as they are (NUL, non-UTF-8), and the size written is read back, so a transfer cut
        short is an error, not a short file."""
        q = shlex.quote(remote)
        exited, out, err = self._exec(f"cat > {q} && wc -c < {q}", stdin=data)
        if exited == 0 and out.strip() == str(len(data)).encode():
            return
        reason = _last_line(err) or (f"wrote {out.strip().decode(errors='replace')} of {len(data)} bytes"
                                     if exited == 0 else f"exit {exited}")
        if "Permission denied" in reason:
            raise UserError(f"cannot write {remote} on {self.where}: permission denied",
                            hint="the SSH user cannot write there: copy it with sudo")
        raise self._no_sftp_error(f"cannot upload to {remote}", reason)

    def _exec_get(self, remote: str, local) -> None:
        """Copy ``remote`` to ``local`` from the stdout of ``cat`` (the bytes as they are)."""
        local = Path(local)
        with open(local, "wb") as fh:
            exited, _, err = self._exec(f"cat -- {shlex.quote(remote)}", stdout=fh)
        if exited == 0:
            return
        local.unlink(missing_ok=True)
        reason = _last_line(err) or f"exit {exited}"
        if "No such file" in reason:
            raise UserError(f"{remote} not found on {self.where}")
        if "Permission denied" in reason:
            raise UserError(f"cannot download {remote} from {self.where}: permission denied",
                            hint="the SSH user cannot read it: download it with sudo")
        raise self._no_sftp_error(f"cannot download {remote}", reason)

    def _exec(self, cmd: str, stdin: bytes = b"", stdout=None) -> tuple[int, bytes, bytes]:
        """(exit status, stdout, stderr) of ``cmd`` on a raw exec channel, bytes in and out untouched
        (invoke's streams decode text). ``stdout``: a binary file to stream it to instead."""
        out = bytearray()
        sink = stdout.write if stdout is not None else out.extend
        try:
            chan = self.conn.client.get_transport().open_session()
            with chan:
                chan.exec_command(cmd)
                try:
                    for i in range(0, len(stdin), _CHUNK):
                        chan.sendall(stdin[i:i + _CHUNK])
                    chan.shutdown_write()
                except OSError:
                    pass  # the command ended before reading it all: its status and stderr say why
                while chunk := chan.recv(_CHUNK):
                    sink(chunk)
                exited = chan.recv_exit_status()
                err = b"".join(iter(lambda: chan.recv_stderr(_CHUNK), b""))
        except (EOFError, OSError, paramiko.SSHException) as exc:
            if not self.conn.is_connected:
                raise UserError(f"SSH connection to {self.where} failed: {exc}",
                                hint="check the host and run again") from None
            return -1, bytes(out), (str(exc).strip() or type(exc).__name__).encode()
        return exited, bytes(out), err

    def _no_sftp_error(self, what: str, reason: str) -> UserError:
        """The one red line when the exec channel failed too: it names the missing SFTP subsystem."""
        hint = _SFTP_HINT
        if "No space left" in reason:
            hint = "free space on the host (`df -h /tmp`) and run again; or " + _SFTP_HINT
        return UserError(f"{what} on {self.where}: the host's sshd has no SFTP subsystem ({self._no_sftp}), "
                         f"and copying through `cat` failed too: {reason}", hint=hint)

    def put(self, local, remote: str, owner: str | None = None, group: str | None = None,
            mode: str | None = None, sudo: bool = False) -> None:
        """Copy a local file to the host (atomically, via ``write``, when sudo or ownership is asked)."""
        data = Path(local).read_bytes()
        if sudo or owner or group or mode:
            self.write(remote, data, owner=owner, group=group, mode=mode, sudo=sudo)
            return
        self._upload(data, remote)

    def get(self, remote: str, local, sudo: bool = False) -> None:
        """Copy a file from the host to ``local`` (read with sudo when ``sudo``: a root-only file)."""
        if sudo:
            data = self.read_bytes(remote, sudo=True)
            if data is None:
                raise UserError(f"{remote} not found on {self.where}")
            Path(local).write_bytes(data)
            return
        if self._sftp() is None:
            self._exec_get(remote, local)
            return
        try:
            self.conn.get(remote, str(local))
        except FileNotFoundError:
            raise UserError(f"{remote} not found on {self.where}") from None
        except PermissionError:
            raise UserError(f"cannot download {remote} from {self.where}: permission denied",
                            hint="the SSH user cannot read it: download it with sudo") from None
        except (OSError, paramiko.SSHException) as exc:
            raise UserError(f"cannot download {remote} from {self.where}: {exc}") from None

    # --- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Remote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    """What paramiko's and socket's types say; any other failure in errors.connection_reason's words."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host name"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return connection_reason(exc)


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip() if lines else ""
