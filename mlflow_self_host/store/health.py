"""`inv doctor`'s rows for the PostgreSQL store (setting store: postgres): reachable, schema revision.

Asked through ``worker.py target`` with the MLflow environment's python (psycopg2 and SQLAlchemy are
the image's, not this package's). That environment is made once by `inv migrate-store` (or `inv up`
without Docker); doctor does not make it (a minute, past any check's deadline) but says how.
"""
from __future__ import annotations

from . import database


def rows(settings, timeout: float):
    """Yield doctor ``Row``s: "database", then "database schema"."""
    from .. import local
    from ..doctor import Row
    from ..errors import UserError
    from ..migrate import schema
    from . import migrate

    try:
        url = database.url(settings)
    except UserError as exc:
        yield Row("database", False, exc.message, exc.hint or "")
        return
    shown = database.shown_url(url)
    try:
        venv = local.venv_dir(settings)
    except UserError as exc:
        yield Row("database", False, f"{shown}: not checked: {exc.message}", exc.hint or "")
        return
    if not (venv / local.VENV_MARKER).exists():
        yield Row("database", False, f"{shown}: not checked: the MLflow environment that talks to it is not made yet",
                  "run `inv migrate-store --to postgres --dry-run` once (it makes it, about a minute)")
        return
    target = migrate.read_target(venv / "bin" / "python", url, timeout=max(1.0, float(timeout) * 0.75))
    if not target.reachable:
        host, port, name = database.endpoint(url)
        yield Row("database", False, f"{shown}: {target.reason}",
                  f"is PostgreSQL up on {host}:{port} and reachable from here (listen_addresses, pg_hba.conf)? "
                  f"does database {name} exist, with the user and password of MSH_DATABASE_URL?")
        return
    yield Row("database", True, f"{shown} (PostgreSQL {target.server})")
    chain = schema.chain()
    if target.revision is None:
        yield Row("database schema", False, f"no MLflow schema ({len(target.tables)} tables)",
                  "`inv migrate-store --to postgres` copies the SQLite store into it")
    elif target.revision == chain.head:
        yield Row("database schema", True, f"at {target.revision}, the image's head (MLflow {chain.mlflow_version})")
    elif chain.knows(target.revision):
        yield Row("database schema", True, f"at {target.revision}, {chain.behind(target.revision)} migrations behind "
                                           f"the image's head {chain.head}: the image upgrades it when it starts")
    else:
        yield Row("database schema", False, f"at {target.revision}, which MLflow {chain.mlflow_version} does not know "
                                            "(written by a newer MLflow)",
                  "deploy an image with that MLflow, or restore the database from a backup")
