"""PostgreSQL's own client programs on this machine (pg_dump, pg_restore, psql): found, versioned, run.

The backups of the PostgreSQL store run where `inv` runs, which already reaches the database (migrate-store,
doctor). A ``pg_dump`` dumps servers up to its own major version, never newer ones, so ``find_client`` picks
the newest one there is: the folder of the setting ``pg_bin_dir`` alone when it is set, else ``pg_dump`` on
the PATH and the versioned folders packages put off the PATH (Debian's and Ubuntu's
``/usr/lib/postgresql/N/bin``, Homebrew's ``libpq`` and ``postgresql@N``).

The URL's password never reaches a command line (``ps`` shows those to every user of the machine): the
programs get the URL without it, and the password in a temporary passfile (mode 0600, ``PGPASSFILE``),
removed when the program ends.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ..core import database
from ..core.errors import UserError

# Where packages put client programs off the PATH (the newest major wins).
KNOWN_DIRS = ("/usr/lib/postgresql/*/bin", "/opt/homebrew/opt/libpq/bin", "/usr/local/opt/libpq/bin",
              "/opt/homebrew/opt/postgresql@*/bin", "/usr/local/opt/postgresql@*/bin",
              "/Applications/Postgres.app/Contents/Versions/*/bin")
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
INSTALL_HINT = ("install postgresql-client-{major} (Debian/Ubuntu: from apt.postgresql.org; macOS: `brew install "
                "libpq`), or set pg_bin_dir to a folder with pg_dump {major} or newer")


@dataclass(frozen=True)
class Client:
    """One installation's pg_dump, with its version (``15.18``) and major (15)."""

    pg_dump: Path
    version: str
    major: int

    def tool(self, name: str) -> str:
        """``pg_restore``/``psql`` beside this pg_dump (the same installation), else the PATH's."""
        beside = self.pg_dump.with_name(name)
        if beside.exists():
            return str(beside)
        found = shutil.which(name)
        if not found:
            raise UserError(f"{name} not found beside {self.pg_dump} nor on the PATH",
                            hint=f"install the PostgreSQL client {self.major} (it carries pg_dump, pg_restore "
                                 "and psql), or set pg_bin_dir to its folder")
        return found

    def __str__(self) -> str:
        return f"pg_dump {self.version} ({self.pg_dump})"


def version_of(program) -> tuple[str, int] | None:
    """(``15.18``, 15) from ``program --version``; None when it does not run or say one."""
    try:
        done = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(done.stdout or "")
    if done.returncode != 0 or not match:
        return None
    return f"{match[1]}{'.' + match[2] if match[2] else ''}", int(match[1])


def candidates(pg_bin_dir: str = "") -> list[Path]:
    """The pg_dump programs to choose from: ``pg_bin_dir``'s only when it is set."""
    if pg_bin_dir:
        return [Path(pg_bin_dir).expanduser() / "pg_dump"]
    found = [shutil.which("pg_dump")]
    for pattern in KNOWN_DIRS:
        found += sorted(glob.glob(os.path.join(pattern, "pg_dump")))
    seen, paths = set(), []
    for path in filter(None, found):
        if path not in seen:
            seen.add(path)
            paths.append(Path(path))
    return paths


def find_client(pg_bin_dir: str = "") -> Client | None:
    """The newest pg_dump of ``candidates`` (None: there is none)."""
    best = None
    for path in candidates(pg_bin_dir):
        version = version_of(path)
        if version and (best is None or version[1] > best.major):
            best = Client(path, *version)
    return best


def where_looked(pg_bin_dir: str = "") -> str:
    return f"pg_bin_dir {pg_bin_dir}" if pg_bin_dir else "the PATH, /usr/lib/postgresql/*/bin, Homebrew's libpq"


# --- the connection, without the password on any command line -------------------------------------------------
def libpq_url(url: str) -> str:
    """The URL libpq reads (``postgresql://user@host:port/db?...``), its password left out."""
    scheme, _, rest = database.encoded(url).partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    user = userinfo.partition(":")[0]
    return f"postgresql://{user + '@' if at else ''}{hostpart}"


def _password(url: str) -> str | None:
    rest = database.encoded(url).partition("://")[2]
    userinfo, at, _ = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return unquote(password) if at and colon else None


def _passfile_line(password: str) -> str:
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n"


@contextlib.contextmanager
def environment(url: str, timeout: float | None = None):
    """The environment the client programs run with: the password in a passfile of its own (0600, removed
    after), none of the caller's PGPASSWORD/PGSERVICE (the URL says which database and user)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGPASSFILE", "PGSERVICE")}
    if timeout:
        env["PGCONNECT_TIMEOUT"] = str(max(2, int(timeout)))
    password = _password(url)
    if password is None:
        yield env
        return
    folder = tempfile.mkdtemp(prefix="msh-pg-")
    path = os.path.join(folder, "passfile")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(_passfile_line(password))
        env["PGPASSFILE"] = path
        yield env
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(argv: list, url: str, what: str, timeout: float | None = None, stdout=None) -> subprocess.CompletedProcess:
    """A client program with the URL's password in its passfile; a failure is one red line (``what`` failed:
    the program's last words, the password hidden)."""
    with environment(url, timeout) as env:
        try:
            done = subprocess.run([str(a) for a in argv], env=env, stdout=stdout or subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=None if timeout is None else timeout * 4)
        except subprocess.TimeoutExpired:
            raise UserError(f"{what}: no answer within {timeout * 4:.0f} s from {database.shown_url(url)}") from None
        except OSError as exc:
            raise UserError(f"{what}: cannot run {argv[0]}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        raise UserError(f"{what} failed: {reason(done.stderr, url)}")
    return done


def reason(stderr: str, url: str) -> str:
    """The program's error lines (its notices left out when it says an error), without psql's ``psql:FILE:LINE:``
    prefix, the password hidden."""
    lines = [re.sub(r"^psql:[^ ]*:\d+:\s*", "", line.strip()) for line in (stderr or "").splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^(ERROR|FATAL|PANIC|\S+: error):?", line)]
    said = "; ".join((errors or lines)[-3:]) or "no message"
    return database.hide(said, url)[:500]


def psql(client: Client, url: str, sql: str, timeout: float | None = None) -> str:
    """One statement through psql (unaligned, tuples only, no ~/.psqlrc); its output."""
    argv = [client.tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", libpq_url(url), "-c", sql]
    return run(argv, url, f"psql on {database.shown_url(url)}", timeout).stdout.strip()


def server_version(client: Client, url: str, timeout: float | None = None) -> tuple[str, int]:
    """(``17.2``, 17): the server's version, from ``server_version_num``."""
    num = int(psql(client, url, "SHOW server_version_num", timeout) or 0)
    major = num // 10000 if num >= 100000 else num // 100
    minor = num % 10000 if num >= 100000 else num % 100
    return f"{major}.{minor}", major


COUNTS = ("SELECT table_name, (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', "
          "table_schema, table_name), false, true, '')))[1]::text FROM information_schema.tables "
          "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1")


def table_counts(client: Client, url: str, timeout: float | None = None) -> dict:
    """Every table of the URL's schema (its search path's first) and its row count, exact."""
    out = psql(client, url, COUNTS, timeout)
    counts = {}
    for line in out.splitlines():
        name, _, rows = line.rpartition("|")
        if name:
            counts[name] = int(rows)
    return counts
