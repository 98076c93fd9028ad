"""The nightly backup of the SQLite store, run by the periodic job nomad/mlflow-backup.nomad.hcl (stdlib only).

From the environment the job sets: BACKUP_DB (mlflow.db), BACKUP_DIR (the backups folder), BACKUP_COPY_DIR (a
second folder, or empty), BACKUP_KEEP, BACKUP_VERSION (the running version, for the name).

1. SQLite's online backup (``Connection.backup``, one step: one consistent snapshot under a read lock, safe
   while MLflow writes) into ``.{name}.partial``, checked with ``PRAGMA integrity_check``, then published under
   its name by a hard link (never over another backup): ``mlflow-{UTC}-v{version}.db`` (``-N`` within a second),
   as `inv backup` names it, so `inv backup --list`, `inv restore` and the drill take it;
2. beside it, as `inv backup` and deploy leave them: MLflow's users (``basic_auth.db``) as ``auth-{name}``, and
   the schema revision of the copy (alembic_version) in ``{name}.schema``;
3. the newest BACKUP_KEEP ``.db`` backups kept, the others removed with what lives beside them, save the newest
   of an older schema when none kept has one (the backup before a migration, for `inv rollback --restore`);
4. with BACKUP_COPY_DIR: the three files copied there (under a temporary name, then renamed), and the same
   retention there. One JSON line on stdout; exit 0, or 1 with the reason (the child job is then failed).
"""
import datetime
import json
import os
import re
import shutil
import sqlite3
import sys

NAME = re.compile(r"^mlflow-(\d{8}T\d{6}Z)-v[0-9A-Za-z.]+?(?:-(\d+))?\.db$")


def fail(why):
    print(json.dumps({"error": why}), flush=True)
    sys.exit(1)


def online_copy(src, dest):
    if os.path.exists(dest):
        os.unlink(dest)
    source = sqlite3.connect("file:" + src + "?mode=ro", uri=True, timeout=60)
    target = sqlite3.connect(dest)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    con = sqlite3.connect(dest)
    try:
        found = [row[0] for row in con.execute("PRAGMA integrity_check")]
        try:
            revision = con.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.DatabaseError:
            revision = None
    finally:
        con.close()
    if found != ["ok"]:
        os.unlink(dest)
        fail("integrity check of the copy: " + "; ".join(str(r) for r in found[:5]))
    os.chmod(dest, 0o640)
    return revision[0] if revision else ""


def publish(tmp, folder, base):
    n = 0
    while True:
        final = os.path.join(folder, base + ("-%d" % n if n else "") + ".db")
        try:
            os.link(tmp, final)
            break
        except FileExistsError:
            n += 1
    os.unlink(tmp)
    return os.path.basename(final)


def beside(folder, name):
    return [os.path.join(folder, name), os.path.join(folder, "auth-" + name), os.path.join(folder, name + ".schema")]


def schema_of(folder, name):
    try:
        with open(os.path.join(folder, name + ".schema")) as f:
            return f.read().strip()
    except OSError:
        return ""


def prune(folder, keep):
    """All but the newest ``keep`` removed, save one: the newest backup of an older schema than the newest
    backup's, when none of those kept has it (the one taken before a migration: `inv rollback --restore` needs it
    for as long as the newer MLflow runs)."""
    ours = [n for n in os.listdir(folder) if NAME.match(n)]
    ours.sort(key=lambda n: (NAME.match(n).group(1), int(NAME.match(n).group(2) or 0)), reverse=True)
    removed = ours[keep:]
    newest = schema_of(folder, ours[0]) if ours else ""
    if newest and all(schema_of(folder, n) in ("", newest) for n in ours[:keep]):
        spared = next((n for n in removed if schema_of(folder, n) not in ("", newest)), None)
        removed = [n for n in removed if n != spared]
    for name in removed:
        for path in beside(folder, name):
            if os.path.exists(path):
                os.unlink(path)
    return removed


def copy_to(folder, copy_dir, name):
    for path in beside(folder, name):
        if not os.path.exists(path):
            continue
        dest = os.path.join(copy_dir, os.path.basename(path))
        tmp = os.path.join(copy_dir, "." + os.path.basename(path) + ".partial")
        shutil.copyfile(path, tmp)
        os.chmod(tmp, 0o640)
        os.replace(tmp, dest)


def main():
    db, folder = os.environ["BACKUP_DB"], os.environ["BACKUP_DIR"]
    copy_dir = os.environ.get("BACKUP_COPY_DIR", "")
    keep = int(os.environ.get("BACKUP_KEEP", "7"))
    version = os.environ.get("BACKUP_VERSION", "unknown").lstrip("v") or "unknown"
    shown = os.environ.get("BACKUP_DIR_SHOWN") or folder
    if not os.path.isfile(db):
        fail("no MLflow database at %s (has MLflow run yet?)" % db)
    base = "mlflow-%s-v%s" % (datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"), version)
    tmp = os.path.join(folder, "." + base + ".partial")
    try:
        revision = online_copy(db, tmp)
        name = publish(tmp, folder, base)
    finally:  # a failed copy leaves no partial file behind (retention never sees those)
        if os.path.exists(tmp):
            os.unlink(tmp)
    users = os.path.join(os.path.dirname(db), "basic_auth.db")
    if os.path.isfile(users):
        part = os.path.join(folder, ".auth-" + name + ".partial")
        try:
            online_copy(users, part)
            os.replace(part, os.path.join(folder, "auth-" + name))
        finally:
            if os.path.exists(part):
                os.unlink(part)
    if revision:
        with open(os.path.join(folder, name + ".schema"), "w") as out:
            out.write(revision + "\n")
    size = os.path.getsize(os.path.join(folder, name))
    removed = prune(folder, keep)
    result = {"path": os.path.join(shown, name), "size": size, "integrity": "ok", "schema": revision,
              "removed": removed}
    if copy_dir:
        try:
            copy_to(folder, copy_dir, name)
            result["copied"] = True
            result["removed_in_copy"] = prune(copy_dir, keep)
        except OSError as exc:
            result["copy_error"] = str(exc)
            print(json.dumps(result), flush=True)
            fail("backup %s taken, but copying it to the second folder failed: %s" % (name, exc))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
