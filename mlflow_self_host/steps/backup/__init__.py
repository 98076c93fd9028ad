"""Backup and restore of MLflow's store: the SQLite database on the Nomad client over SSH or in ./data, or with
store: postgres the PostgreSQL database (``postgres.py``: pg_dump on this machine, kept on the Nomad client).

A backup is SQLite's online backup (never a file copy), so it is consistent while MLflow writes:
python3's ``sqlite3.Connection.backup`` on the host, or the ``sqlite3`` CLI's ``.backup`` when the
host has no python3. The copy is written beside the data (``backups_path``) under a temporary name,
checked with ``PRAGMA integrity_check``, then published as
``mlflow-{UTC YYYYmmddTHHMMSSZ}-v{running version}.db``; only the newest ``backup_keep`` are kept.

Restore stops the job, keeps the current database aside (``mlflow.db.before-restore-{UTC}``), puts
the backup in place with the original's owner and mode, starts the job and waits until it is healthy.

- ``names.py``: what backups are called, which ones retention removes;
- ``commands.py``: the shell commands run on the host, as data;
- ``take.py`` and ``restore.py``: facts, a pure plan, ``runner.run`` (``restore_now``: a restore's changes
  for deploy's apply, which holds the lock);
- ``postgres.py``: the same for the PostgreSQL store;
- ``listing.py``: `inv backup --list`.

The commands run through the host's shell: ``adapters/ssh.py``'s ``Remote`` (SSH, under sudo) or its local twin
``adapters/local_shell.py``'s ``LocalShell`` (./data in local mode): one code path for both.
"""
from __future__ import annotations

from .names import DB_NAME, LOCAL_DOWNLOADS, backup_base_name, is_backup_name, to_remove, utc_stamp
from .listing import list_backups
from .restore import check_now, restore, restore_now
from .take import BackupResult, NoDatabase, Target, backup, before_deploy, running_version, take

__all__ = ["DB_NAME", "LOCAL_DOWNLOADS", "BackupResult", "NoDatabase", "Target", "backup", "backup_base_name",
           "before_deploy", "is_backup_name", "list_backups", "check_now", "restore", "restore_now",
           "running_version", "take",
           "to_remove", "utc_stamp"]
