"""`inv backup` and deploy's backup: facts from the host, a plan (pure), then ``runner.run``.

1. ``read_facts``: which SQLite tool the host has, whether the database and the backups folder are
   there, and the backups folder's entries (one command);
2. ``make_plan`` (no I/O): refuse a host with no tool or no database; else create the folder when it
   is missing, take the backup (``SQLite.backup``: online, checked, published under its name), remove
   all but the newest ``backup_keep`` (the names, decided from the entries and the new one), and
   download it when asked;
3. ``runner.run`` with ``Apply.apply_one``, which runs each change's op and reports it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ...core.errors import UserError
from ...core.plan import Plan
from . import commands
from .names import LOCAL_DOWNLOADS, backup_base_name, human_size
from .target import (BackupResult, MakeFolder, NoDatabase, Prune, Target, Taking, backup_plan, must,  # noqa: F401
                     no_tool, run)


# --- facts ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackupFacts:
    tool: str | None  # python3, sqlite3 or None
    database: bool  # the database file is there
    folder: bool  # the backups folder is there
    names: tuple = ()  # its entries (backups and anything else)


def read_facts(target: Target) -> BackupFacts:
    out = run(target, commands.backup_facts(target.db, target.backups)).stdout
    values, entries = commands.parse_facts(out)
    tool = values.get("tool") if values.get("tool") in commands.TOOLS else None
    return BackupFacts(tool, values.get("db") == "yes", values.get("folder") == "yes", tuple(entries))


# --- the plan -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TakeBackup:
    tool: str
    db: str
    folder: str
    base: str  # the name without .db; the host adds -N when it is taken
    kind: str = "backup"


@dataclass(frozen=True)
class Download:
    folder: str  # ./backups, under the project
    via_tmp: bool  # copied to a file the SSH user may read first (the host's backups are root's)
    kind: str = "download"


def make_plan(settings, target: Target, facts: BackupFacts, base: str, download: bool = False) -> Plan:
    """The changes a backup named ``base`` makes on ``target``, given its facts (no I/O)."""
    if facts.tool is None:
        raise no_tool(target.label)
    if not facts.database:
        raise NoDatabase(f"no MLflow database at {target.db} ({target.where})",
                         hint="has MLflow run there yet? check backend_path / local_data_dir")
    return backup_plan(settings, target, f"backup of {target.db} ({target.where})", facts.folder, facts.names, base,
                       ".db", "SQLite online backup, then PRAGMA integrity_check",
                       TakeBackup(facts.tool, target.db, target.backups, base),
                       Download(LOCAL_DOWNLOADS, via_tmp=not target.local) if download else None)


# --- applying it ----------------------------------------------------------------------------------
@dataclass
class Apply(Taking):
    """Makes one SQLite backup's changes on ``target``; what they gave is kept for ``result``."""

    def apply_one(self, change):
        op = change.op
        if op.kind in ("folder", "prune"):
            return self.shared(op)
        if op.kind == "backup":
            self._backup(op)
            return f"backup {self.path} ({human_size(self.size)}, integrity ok, {self.target.where})"
        if op.kind == "download":
            self.downloaded = str(self._download(op))
            return f"downloaded to {self.downloaded}"
        raise ValueError(f"unknown backup op {op.kind!r}")

    def _backup(self, op: TakeBackup) -> None:
        result = run(self.target, commands.SQLite(op.tool).backup(op.db, op.folder, op.base))
        data = commands.parse_json(result.stdout)
        if data.get("error") == "missing":  # gone since the facts were read
            raise NoDatabase(f"no MLflow database at {op.db} ({self.target.where})",
                             hint="has MLflow run there yet? check backend_path / local_data_dir")
        if data.get("error") == "integrity":
            raise UserError(f"the backup copy fails the SQLite integrity check: {data.get('integrity')}",
                            hint="the copy was removed; check the source with `sqlite3 mlflow.db 'PRAGMA integrity_check'`")
        if not result.ok or "path" not in data:
            raise UserError(f"backup failed on {self.target.label}: "
                            f"{(result.stderr or result.stdout).strip()[-400:] or f'exit {result.exited}'}")
        self.path, self.size = data["path"], int(data["size"])

    def _download(self, op: Download) -> Path:
        local_dir = self.settings.root / op.folder
        local_dir.mkdir(parents=True, exist_ok=True)
        dest = local_dir / PurePosixPath(self.path).name
        if not op.via_tmp:
            self.target.shell.get(self.path, str(dest))
            return dest
        tmp = f"/tmp/.msh-download-{PurePosixPath(self.path).name}"
        must(self.target, commands.copy_for_download(self.path, tmp, self.settings.ssh_user), "preparing the download")
        try:
            self.target.shell.get(tmp, str(dest))
        finally:
            run(self.target, commands.remove([tmp]))
        return dest

    def result(self, version: str) -> BackupResult:
        return BackupResult(path=self.path, size=self.size, version=str(version), where=self.target.where,
                            removed=self.removed, downloaded=self.downloaded)


def take(settings, target: Target, version: str, download: bool = False, dry_run: bool = False):
    """Take one backup on ``target``, apply retention, optionally download it (through the runner); the
    ``BackupResult``, or on a dry run the plan shown."""
    from .. import runner

    applying = Apply(settings, target)
    step = runner.Step("backup", read=lambda: read_facts(target),
                       plan=lambda facts: make_plan(settings, target, facts, backup_base_name(version), download),
                       apply_one=applying.apply_one)
    outcome = runner.run([step], dry_run=dry_run)
    return outcome.plans["backup"] if dry_run else applying.result(version)


# --- the tasks ------------------------------------------------------------------------------------
def running_version(settings) -> str | None:
    """The version of the image the Nomad job runs (``...:v0.99`` -> ``0.99``), None if unknown."""
    from ..job import jobfile
    from ...adapters import nomad_api

    try:
        job = jobfile.current(settings, nomad_api.client(settings))
    except UserError:  # an unknown version is reported by the caller
        return None
    return jobfile.version_of(jobfile.image_of(job)) if job else None


def _said_result(result: BackupResult) -> None:
    from ...core import console

    console.result(result.downloaded or result.path)


def _is_postgres(settings) -> bool:
    from ...core import database

    return database.kind(settings) == "postgres"


def _take(settings, target: Target, version: str, download: bool = False, dry_run: bool = False):
    """The store's backup into ``target``'s backups folder: SQLite's online backup on the host, or with
    store: postgres a pg_dump made here and uploaded there (steps/backup/postgres.py)."""
    if not target.local and _is_postgres(settings):
        from . import postgres

        return postgres.take(settings, target, version, download=download, dry_run=dry_run)
    return take(settings, target, version, download=download, dry_run=dry_run)


def _what(settings, target: Target) -> str:
    if not target.local and _is_postgres(settings):
        from ...core import database

        return f"{database.shown_url(database.url(settings))} (PostgreSQL) to {target.where}"
    return f"{target.db} ({target.where})"


def backup(settings, download: bool = False, local: bool = False, dry_run: bool = False, version=None):
    """`inv backup`: one checked backup of the store: the Nomad client's (or ./data's) SQLite database, or with
    store: postgres the database at MSH_DATABASE_URL (a pg_dump kept on the Nomad client)."""
    from ...core import console
    from ...core.version import read_version

    if local:
        target = Target.on_this_machine(settings)
        if version is None:
            version = str(read_version(settings.root))
    else:
        target = Target.remote(settings)
        if version is None:
            version = running_version(settings)
            if version is None:
                version = str(read_version(settings.root))
                console.warn(f"could not read the running version from Nomad; labelling the backup v{version} "
                             "(version.txt)")
    with target:
        if dry_run:
            return _take(settings, target, version, download=download, dry_run=True)
        console.step(f"backing up {_what(settings, target)}")
        result = _take(settings, target, version, download=download)
    _said_result(result)
    return result


def before_deploy(settings, running_version, new_version, remote=None):
    """Called by deploy before an image version change: a backup of the store (SQLite's on the host, or
    with store: postgres a pg_dump kept there) labelled with the running version (an MLflow upgrade may
    migrate the schema), over deploy's own SSH connection when it has one (``remote``). Returns the
    ``BackupResult`` (``.name``: what `inv restore` and ``restore_now`` take; ``.path`` on the host), or None
    (with a warning) when there is no database yet; any other failure is a UserError that stops the deploy."""
    from ...core import console

    console.step(f"backing up the database before v{running_version} → v{new_version}")
    try:
        result = _take(settings, Target.remote(settings, remote), str(running_version))
    except NoDatabase as exc:
        console.warn(f"{exc.message}: nothing to back up")
        return None
    _said_result(result)
    return result
