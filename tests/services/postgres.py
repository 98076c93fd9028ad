"""A private PostgreSQL cluster from Debian's packages, on a loopback port, for the store tests.

``initdb`` into a temp folder as the ``postgres`` system user (the package creates it), then the
``postgres`` server itself in the foreground (no pg_ctl: the process the fixture holds is the
postmaster), listening on 127.0.0.1 at a reserved port with its unix socket in the temp folder. TCP
connections need a password (scram-sha-256), as a real server's would; the socket trusts ``postgres``
for the fixture's own administration. ``database(name)`` makes an empty database owned by the role
``mlflow`` and returns its URL. Stopped with a fast shutdown at the end of the session.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import session_name, stop_process, unavailable, wait_for
from .ports import reserved_port

PACKAGE = "postgresql"
ROLE = "mlflow"
HARD_CHARACTERS = "p'q\"r#s\\t$u v@w/x-"  # a quote of each kind, a hash, a backslash, a dollar, a space, @ and /


def _bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin (Debian keeps the server binaries off the PATH)."""
    root = Path("/usr/lib/postgresql")
    found = sorted((p for p in root.glob("*/bin") if (p / "initdb").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


@dataclass
class PostgresServer:
    port: int
    root: Path
    socket_dir: Path
    bin_dir: Path
    password: str
    proc: subprocess.Popen
    databases: list = field(default_factory=list)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser over the socket; the output, unaligned, tuples only."""
        done = subprocess.run([str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", database,
                               "-c", sql], capture_output=True, text=True, timeout=60, **_as_postgres())
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def database(self, name: str) -> str:
        """A new empty database ``name`` owned by the role mlflow; its URL (with the password)."""
        self.psql(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        self.databases.append(name)
        return self.url(name)

    def url(self, name: str, password: str | None = None, port: int | None = None) -> str:
        return f"postgresql://{ROLE}:{password or self.password}@127.0.0.1:{port or self.port}/{name}"

    def tables(self, name: str) -> list[str]:
        out = self.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", database=name)
        return out.splitlines() if out else []

    def count(self, name: str, table: str) -> int:
        return int(self.psql(f'SELECT COUNT(*) FROM "{table}"', database=name))


def _ids() -> tuple[int, int]:
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def _as_postgres() -> dict:
    uid, gid = _ids()
    return {"user": uid, "group": gid, "extra_groups": [], "cwd": "/"}


def start() -> PostgresServer:
    bin_dir = _bin_dir()
    if bin_dir is None:
        unavailable(f"PostgreSQL is not installed (apt-get install {PACKAGE})")
    try:
        _ids()
    except KeyError:
        unavailable(f"there is no postgres user (apt-get install {PACKAGE} creates it)")
    if os.geteuid() != 0:
        unavailable("the PostgreSQL fixture runs initdb as the postgres user: it needs root")
    root = Path(tempfile.mkdtemp(prefix=f"{session_name('msh-pg-')}-"))
    os.chmod(root, 0o755)
    data, socket_dir = root / "data", root / "socket"
    uid, gid = _ids()
    for folder in (data, socket_dir):
        folder.mkdir()
        os.chown(folder, uid, gid)
    os.chmod(data, 0o700)
    # The characters a password may hold that a URL, the job's env file (go-envparse) and SQL each read their own
    # way: every test through the database URL carries them, as a user's may (issue 26).
    password = HARD_CHARACTERS + secrets.token_urlsafe(12)
    pwfile = root / "superuser-password"
    pwfile.write_text(secrets.token_urlsafe(12) + "\n")
    os.chown(pwfile, uid, gid)
    init = subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(pwfile),
                           "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                          capture_output=True, text=True, timeout=120, **_as_postgres())
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        unavailable(f"initdb failed: {(init.stderr or init.stdout).strip()[-500:]}")
    port = reserved_port()
    log = open(root / "postgres.log", "ab")
    proc = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(socket_dir),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=30", "-c", "shared_buffers=32MB"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **_as_postgres())
    server = PostgresServer(port, root, socket_dir, bin_dir, password, proc)

    def ready():
        if proc.poll() is not None:
            raise RuntimeError((root / "postgres.log").read_text()[-1500:])
        return subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", str(socket_dir), "-p", str(port)],
                              timeout=10).returncode == 0

    try:
        wait_for(ready, 60, "postgres")
        server.psql("CREATE ROLE {} LOGIN PASSWORD '{}'".format(ROLE, password.replace("'", "''")))
    except (TimeoutError, RuntimeError) as exc:
        stop(server)
        unavailable(f"PostgreSQL did not start: {exc}")
    return server


def stop(server: PostgresServer) -> None:
    """Fast shutdown (SIGINT: clients are disconnected), then the folder is removed."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGINT)
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
    stop_process(server.proc)
    shutil.rmtree(server.root, ignore_errors=True)
