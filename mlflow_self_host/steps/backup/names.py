"""What backups are called and which ones retention removes (no I/O).

A backup is ``mlflow-{UTC YYYYmmddTHHMMSSZ}-v{running version}.db``, or ``...-N.db`` for a second one
within the same second; retention keeps the newest ``backup_keep`` of them, by time (never by version),
and never touches another file.
"""
from __future__ import annotations

import datetime as _dt
import re

DB_NAME = "mlflow.db"  # the image's store: sqlite:////mnt/backend_store/mlflow.db
AUTH_DB_NAME = "basic_auth.db"  # auth: basic, MLflow's users beside it (docker/entrypoint.sh)
AUTH_PREFIX = "auth-"  # its copy beside a backup: auth-{backup's name}, taken, pruned and restored with it
LOCAL_DOWNLOADS = "backups"  # ./backups on this machine, for --download
NAME = re.compile(r"^mlflow-(?P<stamp>\d{8}T\d{6}Z)-v(?P<version>[0-9A-Za-z.]+?)(?:-(?P<n>\d+))?\.db$")


def utc_stamp(now: _dt.datetime | None = None) -> str:
    return (now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


def backup_base_name(version: str, now: _dt.datetime | None = None) -> str:
    """``mlflow-20261126T233700Z-v0.99`` (the file adds ``.db``, or ``-N.db`` within one second)."""
    return f"mlflow-{utc_stamp(now)}-v{str(version).lstrip('v')}"


def file_name(base: str, existing) -> str:
    """The name the host gives a new backup: ``{base}.db``, or the first free ``{base}-N.db``."""
    taken = set(existing)
    n = 0
    while (name := f"{base}{f'-{n}' if n else ''}.db") in taken:
        n += 1
    return name


def backup_sort_key(name: str):
    match = NAME.match(name)
    return (match["stamp"], int(match["n"] or 0)) if match else None


def is_backup_name(name: str) -> bool:
    return NAME.match(name) is not None


def version_of(name: str) -> str | None:
    """The version a backup was taken under (``0.98``), None for a file not named as ours."""
    match = NAME.match(name)
    return match["version"] if match else None


def to_remove(names, keep: int) -> list[str]:
    """The backups retention removes: all but the newest ``keep`` (other files are never touched)."""
    ours = sorted((n for n in names if is_backup_name(n)), key=backup_sort_key, reverse=True)
    return ours[max(int(keep), 0):] if keep > 0 else []


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
