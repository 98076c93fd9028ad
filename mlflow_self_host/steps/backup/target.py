"""Where a backup goes and what reaches it: the ``Target`` (the Nomad client over SSH, or this machine), the
commands run there, what a backup gives back, and the job's state (restore stops a running job only)."""
from __future__ import annotations

from dataclasses import dataclass
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
