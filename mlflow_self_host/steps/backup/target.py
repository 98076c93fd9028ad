"""Where a backup goes and what reaches it: the ``Target`` (the Nomad client over SSH, or this machine), the
commands run there, what a backup gives back, and the job's state (restore stops a running job only)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ...core.errors import UserError
from .names import DB_NAME


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
    store: str = "sqlite"  # the store backed up: sqlite (a .db) or postgres (a .dump)

    @property
    def name(self) -> str:
        """The backup's file name in backups_path (what `inv restore NAME` takes)."""
        return PurePosixPath(self.path).name


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


def job_state(settings) -> tuple[bool, str | None]:
    """(stopped, running version) of the registered job; (False, None) when Nomad does not say (the
    stop then says why)."""
    from ..job import jobfile
    from ...adapters import nomad_api

    try:
        job = jobfile.current(settings, nomad_api.client(settings))
    except UserError:
        return False, None
    if not job:
        return False, None
    return bool(job.get("Stop")), jobfile.version_of(jobfile.image_of(job))


# --- the plan's changes both stores' backups share -----------------------------------------------------------
@dataclass(frozen=True)
class MakeFolder:
    path: str
    kind: str = "folder"


@dataclass(frozen=True)
class Prune:
    folder: str
    names: tuple  # the backups retention removes, oldest last
    kind: str = "prune"


def backup_plan(settings, target: Target, title: str, folder_there: bool, names, base: str, ext: str,
                detail: str, make_op, download_op=None):
    """A backup's plan (pure): the folder when missing, the backup (``make_op``), retention of the newest
    ``backup_keep`` of the store's backups, the download when asked (``download_op``)."""
    from ...core.plan import Plan
    from .names import LOCAL_DOWNLOADS, file_name, to_remove

    plan = Plan(title)
    if not folder_there:
        plan.add("create", target.backups, "backups folder", op=MakeFolder(target.backups))
    name = file_name(base, names, ext)
    plan.add("run", f"{target.backups}/{name}", detail, op=make_op)
    plan.add("delete", f"{target.backups}/mlflow-*{ext}", f"all but the newest {settings.backup_keep}",
             op=Prune(target.backups, tuple(to_remove([*names, name], settings.backup_keep, ext))))
    if download_op is not None:
        plan.add("create", f"./{LOCAL_DOWNLOADS}/", "a copy on this machine", op=download_op)
    return plan


@dataclass
class Taking:
    """Applies one backup's changes on ``target`` (each store's ``Apply`` adds its own): what they gave (the
    path, size, removed, download) is kept for the result."""

    settings: object
    target: Target
    path: str = ""
    size: int = 0
    removed: list = field(default_factory=list)
    downloaded: str | None = None

    def shared(self, op):
        """Apply a ``MakeFolder`` (None: reported as planned) or a ``Prune`` (QUIET: each removal said)."""
        from . import commands
        from ...core import console
        from ...core.plan import QUIET

        if op.kind == "folder":
            must(self.target, commands.make_folder(op.path), f"creating {op.path}")
            return None
        if op.names:
            must(self.target, commands.remove([f"{op.folder}/{name}" for name in op.names]), "removing old backups")
        for name in op.names:
            console.info(f"removed old backup {name}")
        self.removed = list(op.names)
        return QUIET
