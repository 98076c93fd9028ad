"""The MLflow database's schema revision, read (nothing changed): SQLite over SSH on the host (the takeover's
quick look), PostgreSQL from here with MSH_DATABASE_URL (the MLflow environment doctor reads it through).
Deploy and rollback compare it with an image's chain (steps/migrate/schema.py)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DbRevision:
    """The database's alembic revision (None: no MLflow tables), or why it was not read."""

    revision: str | None = None
    unreadable: str = ""
    blocking: bool = True  # False: cannot be read there at all (no python3 on the host): deploy goes on as before


def read_db_revision(settings, host=None, store_facts=None, make_env: bool = False,
                     timeout: float = 60) -> DbRevision:
    """The store's revision: SQLite over SSH on the host (``host_store.inspect``'s quick look, or the
    ``store_facts`` a takeover read already), PostgreSQL from here with MSH_DATABASE_URL (the MLflow
    environment doctor's ``database schema`` row asks through; ``make_env``: made when missing, once, about
    a minute). Failures are returned, not raised."""
    from ...core import database
    from ...core.errors import UserError
    from ..migrate import host_store

    try:
        if database.kind(settings) == "postgres":
            return _postgres_revision(settings, timeout, make_env)
        if store_facts is None:
            if host is None:
                return DbRevision(unreadable="no SSH connection to the host")
            store_facts = host_store.inspect(settings, host, full=False)
    except host_store.NoPython as exc:
        return DbRevision(unreadable=exc.message, blocking=False)
    except UserError as exc:
        return DbRevision(unreadable=exc.message)
    db = store_facts.db
    if db is None or db.revision is None:
        return DbRevision(None)
    if db.revision == "":
        return DbRevision(unreadable=f"{db.path} has an empty alembic_version table")
    return DbRevision(db.revision)


def _postgres_revision(settings, timeout: float, make_env: bool) -> DbRevision:
    from ...core import database
    from .. import local
    from ..store import migrate_store

    url = database.url(settings)
    venv = local.ensure_venv(settings) if make_env else local.venv_dir(settings)
    if not (venv / local.VENV_MARKER).exists():
        return DbRevision(unreadable="the MLflow environment that reads PostgreSQL from here is not made yet "
                                     "(`inv migrate-store --to postgres --dry-run` makes it, about a minute)")
    target = migrate_store.read_target(venv / "bin" / "python", url, timeout=timeout)
    if not target.reachable:
        return DbRevision(unreadable=f"{database.shown_url(url)}: {target.reason}")
    return DbRevision(target.revision)


# --- the schema revision recorded beside each backup deploy takes (steps/backup/names.py: {backup}.schema) ---
def record_backup_schema(host, backup_path: str, revision: str) -> None:
    """Write ``{backup_path}.schema`` (root's, like the backup) holding ``revision``."""
    from ...adapters.shell import quote
    from ..backup.names import schema_file

    path = schema_file(backup_path)
    result = host.run(f"printf '%s\\n' {quote(revision)} > {quote(path)} && chmod 640 {quote(path)}", sudo=True,
                      check=False)
    if result.exited != 0:
        from ...core.errors import UserError

        raise UserError(f"cannot record the backup's schema revision in {path} on {host.label}: "
                        f"{(result.stderr or result.stdout or '').strip()[:160]}")


def backup_schemas(host, folder: str) -> dict:
    """{backup name: schema revision} of the backups in ``folder`` that have one recorded (``host``: the SSH
    connection). A folder that is not there: {}."""
    from ...adapters.shell import quote
    from ..backup.names import SCHEMA_SUFFIX, is_backup_name

    command = (f"cd {quote(folder)} 2>/dev/null || exit 0; for f in *{SCHEMA_SUFFIX}; do "
               f"[ -f \"$f\" ] && printf '%s %s\\n' \"${{f%{SCHEMA_SUFFIX}}}\" \"$(head -c 80 \"$f\")\"; done; true")
    result = host.run(command, sudo=True, check=False)
    out = {}
    for line in (result.stdout or "").splitlines():
        name, _, revision = line.strip().partition(" ")
        if is_backup_name(name) and revision.strip():
            out[name] = revision.strip()
    return out
