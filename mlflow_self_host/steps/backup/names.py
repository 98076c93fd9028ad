"""What backups are called and which ones retention removes (no I/O).

A backup is ``mlflow-{UTC YYYYmmddTHHMMSSZ}-v{running version}.db`` (SQLite's store) or ``.dump``
(PostgreSQL's: ``pg_dump -Fc``), or ``...-N.db`` for a second one within the same second; retention keeps
the newest ``backup_keep`` of each store's, by time (never by version), and never touches another file.

Deploy records the database's schema revision of each backup it takes beside it, in ``{backup}.schema``
(one line, the alembic revision; steps/store/revision.py writes and lists them), so `inv rollback --restore`
can pick the newest backup an older MLflow can serve. Not a backup name: listings and retention skip it.
"""
from __future__ import annotations

import datetime as _dt
import re

DB_NAME = "mlflow.db"  # the image's store: sqlite:////mnt/backend_store/mlflow.db
LOCAL_DOWNLOADS = "backups"  # ./backups on this machine, for --download
NAME = re.compile(r"^mlflow-(?P<stamp>\d{8}T\d{6}Z)-v(?P<version>[0-9A-Za-z.]+?)(?:-(?P<n>\d+))?\.(?P<ext>db|dump)$")
EXTENSIONS = {"sqlite": ".db", "postgres": ".dump"}  # the store -> its backups' extension
STORES = {ext.lstrip("."): store for store, ext in EXTENSIONS.items()}


SCHEMA_SUFFIX = ".schema"  # {backup}.schema: the schema revision of the database the backup holds


def schema_file(backup_name: str) -> str:
    return backup_name + SCHEMA_SUFFIX


def utc_stamp(now: _dt.datetime | None = None) -> str:
    return (now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


def backup_base_name(version: str, now: _dt.datetime | None = None) -> str:
    """``mlflow-20261126T233700Z-v0.99`` (the file adds ``.db``, or ``-N.db`` within one second)."""
    return f"mlflow-{utc_stamp(now)}-v{str(version).lstrip('v')}"


def file_name(base: str, existing, ext: str = ".db") -> str:
    """The name the host gives a new backup: ``{base}.db``, or the first free ``{base}-N.db`` (``ext``:
    ``.dump`` for PostgreSQL's)."""
    taken = set(existing)
    n = 0
    while (name := f"{base}{f'-{n}' if n else ''}{ext}") in taken:
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


def store_of(name: str) -> str | None:
    """The store a backup is of (sqlite for ``.db``, postgres for ``.dump``), None for a file not ours."""
    match = NAME.match(name)
    return STORES[match["ext"]] if match else None


def to_remove(names, keep: int, ext: str | None = None) -> list[str]:
    """The backups retention removes: all but the newest ``keep`` of each store's (of the store whose
    extension ``ext`` is, ``.db`` or ``.dump``, when given); other files are never touched, and the last
    SQLite backups stay after a switch to PostgreSQL."""
    if keep <= 0:
        return []
    removed = []
    for kind in [ext.lstrip(".")] if ext else STORES:
        ours = sorted((n for n in names if is_backup_name(n) and NAME.match(n)["ext"] == kind),
                      key=backup_sort_key, reverse=True)
        removed += ours[int(keep):]
    return sorted(removed, key=backup_sort_key, reverse=True)


def taken_at(name: str) -> str:
    """When a backup was taken, from its name: ``2026-11-26 23:37:00 UTC`` ("" for a file not ours)."""
    match = NAME.match(name)
    if not match:
        return ""
    when = _dt.datetime.strptime(match["stamp"], "%Y%m%dT%H%M%SZ")
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
