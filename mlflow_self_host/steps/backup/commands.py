"""What runs on the host for a backup or a restore, as data: each function returns one shell command
(run under sudo over SSH, or on this machine in local mode). Nothing here connects anywhere.

The SQLite work needs a tool on the host: ``SQLite(tool)`` builds the online backup and the integrity
check for ``python3`` (the stdlib program ``PROGRAM``) or for the ``sqlite3`` CLI. Both print one JSON
line; exit 0 ok, 3 refused (``{"error": "missing"}`` or ``{"error": "integrity", ...}``).
"""
from __future__ import annotations

import json
from pathlib import PurePosixPath

from ...adapters.shell import quote

TOOLS = ("python3", "sqlite3")

# The one SQLite integrity check of the stdlib programs run on the host (``PROGRAM`` below, and
# steps/migrate/host_store.py's): "ok", the first ``rows`` problems PRAGMA integrity_check found, or why the file
# does not open as a database; ``read_only`` opens it with mode=ro. The program imports sqlite3.
INTEGRITY_CHECK = r'''
def integrity(path, read_only, rows):
    try:
        con = (sqlite3.connect("file:" + path + "?mode=ro", uri=True, timeout=30) if read_only
               else sqlite3.connect(path, timeout=30))
        try:
            found = [r[0] for r in con.execute("PRAGMA integrity_check")]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return "ok" if found == ["ok"] else "; ".join(str(r) for r in found[:rows])
'''

# Run on the host with python3 (stdlib only). Prints one JSON line; exit 0 ok, 3 refused.
PROGRAM = INTEGRITY_CHECK + r'''
import json, os, sqlite3, sys
def check(path):
    return integrity(path, read_only=False, rows=5)
def done(data, code=0):
    print(json.dumps(data)); sys.exit(code)
op = sys.argv[1]
if op == "check":
    path = sys.argv[2]
    if not os.path.isfile(path):
        done({"error": "missing", "path": path}, 3)
    done({"path": path, "integrity": check(path), "size": os.path.getsize(path)})
if op == "backup":
    src, folder, base = sys.argv[2:5]
    if not os.path.isfile(src):
        done({"error": "missing", "path": src}, 3)
    tmp = os.path.join(folder, "." + base + ".partial")
    if os.path.exists(tmp):
        os.unlink(tmp)
    source = sqlite3.connect("file:" + src + "?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(tmp)
    try:
        source.backup(target)  # one step: one consistent snapshot under a read lock
    finally:
        target.close(); source.close()
    result = check(tmp)
    if result != "ok":
        os.unlink(tmp)
        done({"error": "integrity", "integrity": result}, 3)
    os.chmod(tmp, 0o640)
    n = 0
    while True:
        final = os.path.join(folder, base + ("-%d" % n if n else "") + ".db")
        try:
            os.link(tmp, final)  # never overwrites an existing backup
            break
        except FileExistsError:
            n += 1
    os.unlink(tmp)
    done({"path": final, "integrity": "ok", "size": os.path.getsize(final)})
'''


def _sql_str(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


# --- facts ----------------------------------------------------------------------------------------
def _tool_line() -> str:
    """``tool=python3``, ``tool=sqlite3`` or ``tool=`` (neither)."""
    return ("printf 'tool=%s\\n' \"$(command -v python3 >/dev/null && echo python3 || "
            "{ command -v sqlite3 >/dev/null && echo sqlite3; } || true)\"")


def _is(flag: str, path: str, name: str) -> str:
    return f"if [ {flag} {quote(path)} ]; then echo {name}=yes; else echo {name}=no; fi"


def backup_facts(db: str, folder: str) -> str:
    """The facts a backup is planned from, one ``key=value`` line each (tool, db, folder), then the
    backups folder's entries."""
    return "; ".join([_tool_line(), _is("-f", db, "db"), _is("-d", folder, "folder"),
                      f"if [ -d {quote(folder)} ]; then ls -1A {quote(folder)}; fi"])


def restore_facts(db: str, folder: str) -> str:
    """The facts a restore is planned from: tool, db, folder (``key=value`` lines)."""
    return "; ".join([_tool_line(), _is("-e", db, "db"), _is("-d", folder, "folder")])


def is_file(path: str) -> str:
    return f"test -f {quote(path)}"


def parse_facts(out: str) -> tuple[dict, list[str]]:
    """The three ``key=value`` lines (tool, db, folder) and the lines after them (a folder's entries)."""
    lines = out.splitlines()
    values = dict(line.partition("=")[::2] for line in lines[:3])
    return {k: v.strip() for k, v in values.items()}, [line for line in lines[3:] if line.strip()]


def parse_json(out: str) -> dict:
    """The last JSON line of a command's output ({} when there is none)."""
    for line in reversed(out.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}


# --- changes --------------------------------------------------------------------------------------
class SQLite:
    """The online backup and the integrity check, with the host's tool (``python3`` or ``sqlite3``)."""

    def __init__(self, tool: str):
        self.tool = tool

    def backup(self, src: str, folder: str, base: str) -> str:
        if self.tool == "python3":
            return f"python3 -c {quote(PROGRAM)} backup {quote(src)} {quote(folder)} {quote(base)}"
        tmp = f"{folder}/.{base}.partial"
        final = f"{folder}/{base}.db"
        return (
            f"[ -f {quote(src)} ] || {{ echo '{{\"error\": \"missing\"}}'; exit 3; }}; "
            f"rm -f {quote(tmp)} && sqlite3 {quote(src)} {quote('.backup ' + _sql_str(tmp))} && "
            f"r=$(sqlite3 {quote(tmp)} 'PRAGMA integrity_check' 2>&1 | head -5 | tr '\\n' ' ' | sed 's/ $//'); "
            f"if [ \"$r\" != ok ]; then rm -f {quote(tmp)}; printf '{{\"error\": \"integrity\", \"integrity\": \"%s\"}}\\n' \"$r\"; exit 3; fi; "
            f"chmod 640 {quote(tmp)}; f={quote(final)}; n=1; "
            f"while ! ln {quote(tmp)} \"$f\" 2>/dev/null; do f={quote(folder + '/' + base)}-$n.db; n=$((n+1)); done; "
            f"rm -f {quote(tmp)}; printf '{{\"path\": \"%s\", \"integrity\": \"ok\", \"size\": %s}}\\n' \"$f\" $(stat -c %s \"$f\")"
        )

    def check(self, path: str) -> str:
        if self.tool == "python3":
            return f"python3 -c {quote(PROGRAM)} check {quote(path)}"
        return (
            f"[ -f {quote(path)} ] || {{ echo '{{\"error\": \"missing\"}}'; exit 3; }}; "
            f"r=$(sqlite3 {quote(path)} 'PRAGMA integrity_check' 2>&1 | head -5 | tr '\\n' ' ' | sed 's/ $//' | tr '\"' \"'\"); "
            f"printf '{{\"integrity\": \"%s\", \"size\": %s}}\\n' \"$r\" $(stat -c %s {quote(path)})"
        )


def make_folder(folder: str) -> str:
    return f"mkdir -p {quote(folder)} && chmod 750 {quote(folder)}"


def remove(paths) -> str:
    return "rm -f -- " + " ".join(quote(p) for p in paths)


def with_auth_copy(backup: str, db: str, aside: str) -> str:
    """auth: basic: put the backup's copy of basic_auth.db (names.AUTH_PREFIX + its name, beside it) in place of the
    one beside ``db`` (that one kept aside too), when the backup has one."""
    from .names import AUTH_DB_NAME, AUTH_PREFIX

    copy = str(PurePosixPath(backup).with_name(AUTH_PREFIX + PurePosixPath(backup).name))
    auth_db = str(PurePosixPath(db).with_name(AUTH_DB_NAME))
    suffix = PurePosixPath(aside).name[len(PurePosixPath(db).name):]  # .before-restore-{UTC}
    auth_aside = str(PurePosixPath(aside).with_name(AUTH_DB_NAME + suffix))
    return (f"if [ -f {quote(copy)} ]; then {keep_aside(auth_db, auth_aside)}; "
            f"{put_in_place(copy, auth_db, auth_aside)}; fi")


def keep_aside(db: str, aside: str) -> str:
    """Move the current database and its -wal/-shm/-journal aside (each only when it is there)."""
    return (f"set -e; if [ -e {quote(db)} ]; then mv {quote(db)} {quote(aside)}; fi; "
            f"for x in -wal -shm -journal; do if [ -e {quote(db)}$x ]; then mv {quote(db)}$x {quote(aside)}$x; fi; done")


def undo_keep_aside(db: str, aside: str) -> str:
    """After a failed keep-aside or put-in-place: the database moved back from ``aside`` when it is not in its
    place; prints "unchanged" when the database is as before the restore, "replaced" when the backup is in it."""
    moves = "".join(f"if [ -e {quote(aside)}{x} ] && [ ! -e {quote(db)}{x} ]; then "
                    f"mv {quote(aside)}{x} {quote(db)}{x}; fi; " for x in ("-wal", "-shm", "-journal"))
    return (f"set -e; if [ ! -e {quote(db)} ] && [ -e {quote(aside)} ]; then mv {quote(aside)} {quote(db)}; {moves}"
            f"echo unchanged; elif [ ! -e {quote(aside)} ]; then {moves}echo unchanged; else echo replaced; fi")


def put_in_place(backup: str, db: str, aside: str) -> str:
    """Copy the backup to the database's place with the owner and mode of the database kept aside (the
    folder's owner and 664 when there was none); the copy is renamed into place, never seen half-written."""
    folder = str(PurePosixPath(db).parent)
    tmp = f"{db}.restoring"
    return (
        f"set -e; ref={quote(folder)}; if [ -e {quote(aside)} ]; then ref={quote(aside)}; fi; "
        f"cp {quote(backup)} {quote(tmp)}; chown --reference=\"$ref\" {quote(tmp)}; "
        f"if [ \"$ref\" != {quote(folder)} ]; then chmod --reference=\"$ref\" {quote(tmp)}; else chmod 664 {quote(tmp)}; fi; "
        f"mv {quote(tmp)} {quote(db)}"
    )


def copy_for_download(path: str, tmp: str, user: str) -> str:
    """A copy the SSH user may read (the backup is root's), to download without sudo."""
    return f"install -m 600 -o {quote(user)} {quote(path)} {quote(tmp)}"


# --- PostgreSQL's dumps (made on this machine) and the listing -------------------------------------
def folder_facts(folder: str) -> str:
    """``folder=yes|no``, then the folder's entries."""
    return "; ".join([_is("-d", folder, "folder"), f"if [ -d {quote(folder)} ]; then ls -1A {quote(folder)}; fi"])


def publish(partial: str, folder: str, base: str, ext: str) -> str:
    """Give an uploaded ``partial`` its backup name (``{base}{ext}``, or ``{base}-N{ext}`` when taken: never
    overwriting one); prints the name given."""
    return (f"f={quote(folder + '/' + base + ext)}; n=1; "
            f"while ! ln {quote(partial)} \"$f\" 2>/dev/null; do f={quote(folder + '/' + base)}-$n{quote(ext)}; "
            f"n=$((n+1)); [ $n -lt 100 ] || exit 3; done; rm -f {quote(partial)}; printf '%s\\n' \"$f\"")


def listing(folder: str) -> str:
    """``missing``, or one ``SIZE NAME`` line per file named ``mlflow-*`` in the folder (POSIX sh)."""
    return (f"if [ ! -d {quote(folder)} ]; then echo missing; exit 0; fi; "
            f"for f in {quote(folder)}/mlflow-*; do if [ -f \"$f\" ]; then "
            f"printf '%s %s\\n' \"$(wc -c < \"$f\" | tr -d ' ')\" \"${{f##*/}}\"; fi; done")
