"""`mlflow db upgrade` of the PostgreSQL store at MLFLOW_BACKEND_STORE_URI, one server at a time.

Several allocations start together (a first deploy with count 2): on an empty database each would see it
empty and create MLflow's tables at once, and all but one would fail. This holds a PostgreSQL advisory lock
(session level: released when the connection closes, also when this process dies) while the CLI runs, so
the first creates the schema (or upgrades it) and the others then find it at the head revision.

With MLflow's auth on (MLFLOW_AUTH=basic) the auth app's own tables (users, permissions: their own alembic
chain, version table alembic_version_auth) are made or upgraded under the same lock, in the auth database
(MLFLOW_AUTH_DATABASE_URI, else the store's): the app does it again at start, finds them at their head, and
two allocations no longer race to create them (the loser crashed and was restarted).
"""
import os
import sys

import sqlalchemy
from sqlalchemy.pool import NullPool

LOCK_KEY = 0x6D6C666C6F77  # "mlflow": the same key in every allocation of every version


def upgrade_auth_tables(url: str) -> int:
    """The auth app's migrations, as its SqlAlchemyStore.init_db runs them (mlflow/server/auth/db/utils.py)."""
    try:
        from mlflow.server.auth.db.utils import migrate_if_needed
        from mlflow.store.db.utils import create_sqlalchemy_engine_with_retry

        engine = create_sqlalchemy_engine_with_retry(url)
        try:
            migrate_if_needed(engine, "head")
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - one line on stderr, the exit code says the rest
        print(f"mlflow-entrypoint: the auth tables could not be made or upgraded: {exc}", file=sys.stderr)
        return 1
    return 0


def upgrade_tables(url: str) -> int:
    """`mlflow db upgrade URL`, MLflow's own command, run in this process: the URL (its password) on no command
    line."""
    from mlflow.db import upgrade

    try:
        upgrade.main(args=[url], prog_name="mlflow db upgrade", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # noqa: BLE001 - MLflow's message on stderr, exit 1 as the CLI would
        print(f"mlflow-entrypoint: mlflow db upgrade failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


url = os.environ.get("MLFLOW_BACKEND_STORE_URI") or sys.argv[1]
engine = sqlalchemy.create_engine(url, poolclass=NullPool)
with engine.connect() as connection:
    connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
    code = upgrade_tables(url)
    if code == 0 and os.environ.get("MLFLOW_AUTH") == "basic":
        print("mlflow-entrypoint: the auth tables (under the same lock)", file=sys.stderr)
        code = upgrade_auth_tables(os.environ.get("MLFLOW_AUTH_DATABASE_URI") or url)
engine.dispose()
sys.exit(code)
