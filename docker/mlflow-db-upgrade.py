"""`mlflow db upgrade URL` for a PostgreSQL store, one server at a time.

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
import subprocess
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


url = sys.argv[1]
engine = sqlalchemy.create_engine(url, poolclass=NullPool)
with engine.connect() as connection:
    connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
    code = subprocess.call(["mlflow", "db", "upgrade", url])
    if code == 0 and os.environ.get("MLFLOW_AUTH") == "basic":
        print("mlflow-entrypoint: the auth tables (under the same lock)", file=sys.stderr)
        code = upgrade_auth_tables(os.environ.get("MLFLOW_AUTH_DATABASE_URI") or url)
engine.dispose()
sys.exit(code)
