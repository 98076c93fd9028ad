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

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ...core import plan as plans
from ...core.errors import UserError
from ...core.plan import Plan
from . import commands
from .names import (AUTH_DB_NAME, AUTH_PREFIX, DB_NAME, LOCAL_DOWNLOADS, backup_base_name, file_name, human_size,
                    to_remove)


class NoDatabase(UserError):
    """There is no database to back up (MLflow has not run there yet)."""


@dataclass
class BackupResult:
    path: str  # on the host (or this machine with --local)
    size: int
    version: str
    where: str  # "host m700" or "local ./data"
    removed: list
    downloaded: str | None = None


# --- where the data is ----------------------------------------------------------------------------
@dataclass
class Target:
    """One MLflow store: the shell that reaches it (``ssh.Remote`` or ``LocalShell``), its database, its
    backups folder and how the user knows it ("host m700", "local ./data")."""

    shell: object
    db: str
    backups: str
    where: str

    @property
    def label(self) -> str:
        return self.shell.label

    @property
    def local(self) -> bool:
        from ...adapters.local_shell import LocalShell

        return isinstance(self.shell, LocalShell)

    def __enter__(self) -> "Target":
        return self

    def __exit__(self, *exc) -> None:
        self.shell.close()

    @classmethod
    def remote(cls, settings, remote=None) -> "Target":
        if remote is None:
            from ...adapters import ssh

            remote = ssh.connect(settings)
        return cls(remote, str(PurePosixPath(settings.backend_path) / DB_NAME), settings.backups_path,
                   f"host {settings.host}")

    @classmethod
    def on_this_machine(cls, settings) -> "Target":
        from ...adapters.local_shell import LocalShell

        data = settings.path(settings.local_data_dir)
        return cls(LocalShell(), str(data / "backend" / DB_NAME), str(data / "backups"),
                   f"local {settings.local_data_dir}")


def run(target: Target, command: str):
    """A command on the target, under sudo on the SSH host (its files are root's or the image user's)."""
    return target.shell.run(command, sudo=True, check=False)


def must(target: Target, command: str, what: str) -> str:
    result = run(target, command)
    if not result.ok:
        raise UserError(f"{what} failed on {target.label}: "
                        f"{(result.stderr or result.stdout).strip()[-400:] or f'exit {result.exited}'}")
    return result.stdout


def no_tool(label: str) -> UserError:
    return UserError(f"{label} has neither python3 nor the sqlite3 CLI: no way to take an online SQLite backup",
                     hint="install one on the host: `sudo apt-get install sqlite3` (or python3)")


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
class MakeFolder:
    path: str
    kind: str = "folder"


@dataclass(frozen=True)
class TakeBackup:
    tool: str
    db: str
    folder: str
    base: str  # the name without .db; the host adds -N when it is taken
    kind: str = "backup"


@dataclass(frozen=True)
class Prune:
    folder: str
    names: tuple  # the backups retention removes, oldest last
    kind: str = "prune"


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
    plan = Plan(f"backup of {target.db} ({target.where})")
    if not facts.folder:
        plan.add("create", target.backups, "backups folder", op=MakeFolder(target.backups))
    name = file_name(base, facts.names)
    plan.add("run", f"{target.backups}/{name}", "SQLite online backup, then PRAGMA integrity_check",
             op=TakeBackup(facts.tool, target.db, target.backups, base))
    plan.add("delete", f"{target.backups}/mlflow-*.db", f"all but the newest {settings.backup_keep}",
             op=Prune(target.backups, tuple(to_remove([*facts.names, name], settings.backup_keep))))
    if download:
        plan.add("create", f"./{LOCAL_DOWNLOADS}/", "a copy on this machine",
                 op=Download(LOCAL_DOWNLOADS, via_tmp=not target.local))
    return plan


# --- applying it ----------------------------------------------------------------------------------
@dataclass
class Apply:
    """Makes one backup's changes on ``target``; what they gave (the path, size, removed, download) is kept
    for ``result``."""

    settings: object
    target: Target
    path: str = ""
    size: int = 0
    removed: list = field(default_factory=list)
    downloaded: str | None = None

    def apply_one(self, change):
        op = change.op
        if op.kind == "folder":
            must(self.target, commands.make_folder(op.path), f"creating {op.path}")
            return None
        if op.kind == "backup":
            self._backup(op)
            return f"backup {self.path} ({human_size(self.size)}, integrity ok, {self.target.where})"
        if op.kind == "prune":
            if op.names:  # each with its copy of MLflow's users (auth: basic), if any
                must(self.target, commands.remove([f"{op.folder}/{prefix}{name}" for name in op.names
                                                   for prefix in ("", AUTH_PREFIX)]), "removing old backups")
            from ...core import console

            for name in op.names:
                console.info(f"removed old backup {name}")
            self.removed = list(op.names)
            return plans.QUIET
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
        # auth: basic: MLflow's users (basic_auth.db beside mlflow.db) copied the same way, as auth-{the backup's name}
        auth_db = str(PurePosixPath(op.db).with_name(AUTH_DB_NAME))
        if run(self.target, commands.is_file(auth_db)).ok:
            name = PurePosixPath(self.path).name
            copied = run(self.target, commands.SQLite(op.tool).backup(auth_db, op.folder, AUTH_PREFIX + name[:-3]))
            if not copied.ok or "path" not in commands.parse_json(copied.stdout):
                raise UserError(f"backup {self.path} taken, but copying MLflow's users ({auth_db}) failed: "
                                f"{(copied.stderr or copied.stdout).strip()[-300:] or f'exit {copied.exited}'}")

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


def backup(settings, download: bool = False, local: bool = False, dry_run: bool = False, version=None):
    """`inv backup`: one integrity-checked backup of the Nomad client's (or ./data's) database."""
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
            return take(settings, target, version, download=download, dry_run=True)
        console.step(f"backing up {target.db} ({target.where})")
        result = take(settings, target, version, download=download)
    _said_result(result)
    return result


def before_deploy(settings, running_version, new_version, remote=None):
    """Called by deploy before an image version change: a remote backup labelled with the running
    version (an MLflow upgrade may migrate the schema), over deploy's own SSH connection when it has
    one (``remote``). Returns the ``BackupResult``, or None (with a warning) when there is no database
    yet; any other failure is a UserError that stops the deploy."""
    from ...core import console

    console.step(f"backing up the database before v{running_version} → v{new_version}")
    try:
        result = take(settings, Target.remote(settings, remote), str(running_version))
    except NoDatabase as exc:
        console.warn(f"{exc.message}: nothing to back up")
        return None
    _said_result(result)
    return result
