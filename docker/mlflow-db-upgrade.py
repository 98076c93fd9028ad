"""`mlflow db upgrade URL` for a PostgreSQL store, one server at a time.

Several allocations start together (a first deploy with count 2): on an empty database each would see it
empty and create MLflow's tables at once, and all but one would fail. This holds a PostgreSQL advisory lock
(session level: released when the connection closes, also when this process dies) while the CLI runs, so
the first creates the schema (or upgrades it) and the others then find it at the head revision.
"""
import subprocess
import sys

import sqlalchemy
from sqlalchemy.pool import NullPool

LOCK_KEY = 0x6D6C666C6F77  # "mlflow": the same key in every allocation of every version

url = sys.argv[1]
engine = sqlalchemy.create_engine(url, poolclass=NullPool)
with engine.connect() as connection:
    connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
    code = subprocess.call(["mlflow", "db", "upgrade", url])
engine.dispose()
sys.exit(code)
