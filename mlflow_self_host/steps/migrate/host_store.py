"""The store on the Nomad client as the original recipe left it: what it is, and the commands that change it.

Everything runs as one python3 program (stdlib only) under sudo over SSH, as backup/ does: ``inspect``
only reads (the facts for the plan); ``backup``, ``chown`` and ``rewrite`` are the three changes, each
printing one JSON line. The SQLite file is opened read-only to inspect it.

- ``backup``: a byte-for-byte copy (the job is stopped first, so the file is at rest), compared by
  sha256 and integrity-checked, published under a name retention never removes.
- ``chown``: every entry of the two volume folders (the folders too) to the image's uid:gid, links
  themselves and never what they point to; nothing outside the folders.
- ``rewrite``: in one transaction, artifact locations under the old server-local root (``/mnt/artifacts``
  or ``file:///mnt/artifacts``) become the served scheme ``mlflow-artifacts:/...``, which the new server
  maps to the same files (its --artifacts-destination is the same host folder).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..backup.commands import INTEGRITY_CHECK
from ...core.errors import ExitCode, UserError
from ...adapters.shell import quote

ARTIFACTS_MOUNT = "/mnt/artifacts"  # where both jobs mount the artifacts volume: our --artifacts-destination
BACKUP_PREFIX = "mlflow-before-migration-"

_SCRIPT = INTEGRITY_CHECK + r'''
import hashlib, json, os, sqlite3, sys
LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("model_versions", "source"))
def done(data, code=0):
    print(json.dumps(data)); sys.exit(code)
def prefixes(path):
    # the ways MLflow wrote a local path: as is, file:, file://, file://localhost
    path = path.rstrip("/")
    return [path, "file:" + path, "file://" + path, "file://localhost" + path]
def where(col, prefix):
    return "(%s = ? OR substr(%s, 1, ?) = ?)" % (col, col), [prefix, len(prefix) + 1, prefix + "/"]
def columns(con, table):
    return [r[1] for r in con.execute("PRAGMA table_info(%s)" % table)]
def legacy(con, root):
    out = {}
    for table, col in LOCATIONS:
        if col not in columns(con, table):
            continue
        n = 0
        for prefix in prefixes(root):
            sql, args = where(col, prefix)
            n += con.execute("SELECT count(*) FROM %s WHERE %s" % (table, sql), args).fetchone()[0]
        out[table] = n
    return out
def raise_(exc):
    raise exc
def entries(folder):
    # the folder (through a link to it: what the container mounts), then everything in it, links not followed
    top = os.path.realpath(folder)
    yield top
    for parent, dirs, files in os.walk(top, onerror=raise_):
        for name in dirs + files:
            yield os.path.join(parent, name)
def owners(folder, uid, gid, full):
    total, wrong, sample = 0, 0, []
    for path in (entries(folder) if full else [os.path.realpath(folder)]):
        st = os.lstat(path)
        total += 1
        if (st.st_uid, st.st_gid) != (uid, gid):
            wrong += 1
            if len(sample) < 3:
                sample.append("%s (%d:%d)" % (path, st.st_uid, st.st_gid))
    return {"total": total, "wrong": wrong, "sample": sample}
def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
op = sys.argv[1]
if op == "inspect":
    mode, db, backend, artifacts, backups, prefix, root, uid, gid = sys.argv[2:11]
    uid, gid, full = int(uid), int(gid), mode == "full"
    out = {"folders": {}, "db": None, "backups": []}
    for key, folder in (("backend", backend), ("artifacts", artifacts)):
        out["folders"][key] = owners(folder, uid, gid, full) if os.path.isdir(folder) else None
    if out["folders"]["backend"] and os.path.isfile(db):  # quick: the database file's owner too
        st = os.stat(db)
        if not full and (st.st_uid, st.st_gid) != (uid, gid):
            out["folders"]["backend"]["wrong"] += 1
            out["folders"]["backend"]["sample"].append("%s (%d:%d)" % (db, st.st_uid, st.st_gid))
    if os.path.isdir(backend):
        out["other_files"] = sorted(n for n in os.listdir(backend) if n.endswith((".db", ".sqlite", ".sqlite3"))
                                    and n != os.path.basename(db))
    if os.path.isdir(backups):
        out["backups"] = sorted(n for n in os.listdir(backups) if n.startswith(prefix) and n.endswith(".db"))
    if os.path.isfile(db) and os.path.getsize(db) > 0:
        info = {"size": os.path.getsize(db),
                "integrity": integrity(db, read_only=True, rows=3) if full else "not checked",
                "revision": None, "legacy": {}, "tables": 0,
                "journals": [x for x in ("-wal", "-journal") if os.path.exists(db + x) and os.path.getsize(db + x)]}
        try:
            con = sqlite3.connect("file:" + db + "?mode=ro", uri=True, timeout=30)
            try:
                tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
                info["tables"] = len(tables)
                if "alembic_version" in tables:
                    row = con.execute("SELECT version_num FROM alembic_version").fetchone()
                    info["revision"] = row[0] if row else ""
                if "experiments" in tables:
                    info["legacy"] = legacy(con, root)
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            if info["integrity"] in ("ok", "not checked"):
                info["integrity"] = str(exc)
        out["db"] = info if info["tables"] or info["integrity"] not in ("ok", "not checked") else None
    done(out)
if op == "backup":
    db, folder, name = sys.argv[2:5]
    os.makedirs(folder, mode=0o750, exist_ok=True)
    tmp = os.path.join(folder, "." + name + ".partial")
    try:
        with open(db, "rb") as src, open(tmp, "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())
        digest = sha(db)
        if sha(tmp) != digest or integrity(tmp, read_only=True, rows=3) != "ok":
            done({"error": "the copy differs from the database or fails PRAGMA integrity_check"}, 3)
        os.chmod(tmp, 0o640)
        final, n = os.path.join(folder, name), 0
        while True:
            try:
                os.link(tmp, final)  # never overwrites
                break
            except FileExistsError:
                n += 1
                final = os.path.join(folder, name[:-3] + "-%d.db" % n)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    done({"path": final, "size": os.path.getsize(final), "sha256": digest})
if op == "chown":
    uid, gid = int(sys.argv[2]), int(sys.argv[3])
    changed = 0
    for folder in sys.argv[4:]:
        for path in entries(folder):
            st = os.lstat(path)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.lchown(path, uid, gid)
                changed += 1
    done({"changed": changed})
if op == "rewrite":
    # rows under root (the old --default-artifact-root) become mlflow-artifacts:/<path below mount>, where
    # mount is the artifacts volume's destination: the new server's --artifacts-destination
    db, root, mount = sys.argv[2:5]
    root, mount = root.rstrip("/"), mount.rstrip("/")
    if root != mount and not root.startswith(mount + "/"):
        done({"error": "legacy_artifact_root %s is not under %s, the artifacts volume: its files are not "
                       "in artifacts_path" % (root, mount)}, 3)
    con = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        changed = {}
        for table, col in LOCATIONS:
            if col not in columns(con, table):
                continue
            n = 0
            for rp, mp in zip(prefixes(root), prefixes(mount)):
                sql, args = where(col, rp)
                n += con.execute(
                    "UPDATE %s SET %s = 'mlflow-artifacts:/' || ltrim(substr(%s, ?), '/') WHERE %s"
                    % (table, col, col, sql), [len(mp) + 1] + args).rowcount
            changed[table] = n
        left = legacy(con, root)
        if any(left.values()):
            con.execute("ROLLBACK")
            done({"error": "locations left after the rewrite: %s" % left}, 3)
        con.execute("COMMIT")
    finally:
        con.close()
    done({"changed": changed})
'''


def _command(op: str, *args) -> str:
    return f"python3 -c {quote(_SCRIPT)} {op} " + " ".join(quote(a) for a in args)


@dataclass
class Owners:
    total: int
    wrong: int
    sample: list = field(default_factory=list)


@dataclass
class Database:
    path: str
    size: int
    integrity: str
    revision: str | None
    legacy: dict  # table -> rows under the old root
    journals: list

    @property
    def legacy_rows(self) -> int:
        return sum(self.legacy.values())


@dataclass
class StoreFacts:
    """What the host's store is, read in one go."""
    where: str
    db_path: str
    backend: Owners | None  # None: no such folder
    artifacts: Owners | None
    db: Database | None  # None: no database file (or an empty one)
    other_files: list = field(default_factory=list)  # other *.db files in the backend folder
    backups: list = field(default_factory=list)  # earlier takeovers' copies, oldest first


def inspect(settings, host, full: bool = True) -> StoreFacts:
    """The store's facts, read-only (``host``: ``host.ssh.Remote`` or ``host.local_shell.LocalShell``). ``full``: every entry's
    owner and PRAGMA integrity_check (which holds a read lock for its run); else only the two folders'
    and the database file's owners, the revision and the rows under the old root: what each deploy reads."""
    from ..backup.names import DB_NAME

    uid, gid = settings.image_user_ids()
    db_path = f"{settings.backend_path.rstrip('/')}/{DB_NAME}"
    data = _run(host, "reading the MLflow store", _command(
        "inspect", "full" if full else "quick", db_path, settings.backend_path, settings.artifacts_path,
        settings.backups_path, BACKUP_PREFIX, legacy_root(settings), uid, gid))
    folders = data.get("folders") or {}
    db = data.get("db")
    return StoreFacts(
        where=host.label, db_path=db_path,
        backend=Owners(**folders["backend"]) if folders.get("backend") else None,
        artifacts=Owners(**folders["artifacts"]) if folders.get("artifacts") else None,
        db=Database(db_path, db["size"], db["integrity"], db["revision"], db["legacy"], db["journals"]) if db else None,
        other_files=data.get("other_files") or [], backups=sorted(data.get("backups") or []),
    )


def legacy_root(settings) -> str:
    """legacy_artifact_root as a path (``file:///mnt/artifacts`` and ``/mnt/artifacts/`` are /mnt/artifacts)."""
    root = str(settings.legacy_artifact_root or ARTIFACTS_MOUNT).strip()
    for scheme in ("file://localhost", "file://", "file:"):
        if root.startswith(scheme):
            root = root[len(scheme):]
            break
    if not root.startswith("/"):
        raise UserError(f"legacy_artifact_root {settings.legacy_artifact_root!r} is not an absolute path",
                        hint="set it to the original server's --default-artifact-root, e.g. /mnt/artifacts", code=ExitCode.BAD_ARGUMENT)
    return root.rstrip("/") or "/"


def backup(host, db_path: str, folder: str, name: str) -> dict:
    return _run(host, "copying the database", _command("backup", db_path, folder, name))


def chown(host, uid: int, gid: int, folders) -> int:
    return _run(host, "changing owners", _command("chown", uid, gid, *folders))["changed"]


def rewrite(host, db_path: str, root: str) -> dict:
    return _run(host, "rewriting artifact locations", _command("rewrite", db_path, root, ARTIFACTS_MOUNT))["changed"]


class NoPython(UserError):
    """The host has no python3: the store cannot be read there."""


def _run(host, what: str, command: str) -> dict:
    result = host.run(command, sudo=True, check=False)  # the whole program under sudo
    code, out, err = result.exited, result.stdout or "", result.stderr or ""
    if code == 127 or "python3: not found" in err or "python3: command not found" in err:
        raise NoPython(f"python3 is not installed on {host.label}: the store cannot be read there",
                        hint="install it there (`sudo apt-get install python3-minimal`)")
    try:
        data = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        data = {}
    if code != 0 or "error" in data:
        reason = data.get("error") or (err or out).strip().splitlines()[-1:] or [f"exit {code}"]
        raise UserError(f"{what} failed on {host.label}: {reason if isinstance(reason, str) else reason[0]}")
    return data
