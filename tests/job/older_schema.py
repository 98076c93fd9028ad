"""An MLflow SQLite database one migration behind the image's head (3.17.2: dc11669786a5, "add job executor
persistence model"), made from one at the head by undoing that migration's changes by hand (its own
downgrade(), in SQL), so `mlflow db upgrade` really runs the head migration on it."""
from __future__ import annotations

import sqlite3
from pathlib import Path

HEAD = "dc11669786a5"
BEFORE_HEAD = "75868b020152"
_ADDED_TO_JOBS = ("executor_backend", "lease_expires_at", "status_message", "progress", "progress_updated_at",
                  "token_hash", "scoped_permissions", "next_attempt_at")


def revision(db: Path) -> str:
    from tests.job.test_schema_release import revision_of

    return revision_of(db)


def tables(db: Path) -> set:
    con = sqlite3.connect(db)
    try:
        return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()


def one_behind(db: Path) -> None:
    """``db`` (at the head) taken back to the revision before it."""
    from mlflow_self_host.steps.migrate import schema

    assert schema.chain().order[-2:] == (BEFORE_HEAD, HEAD), schema.chain().order[-2:]  # the image's MLflow
    assert revision(db) == HEAD
    con = sqlite3.connect(db)
    con.executescript("DROP INDEX index_jobs_status_lease_expires_at;\n"
                      + "".join(f"ALTER TABLE jobs DROP COLUMN {column};\n" for column in _ADDED_TO_JOBS)
                      + "DROP INDEX index_job_locks_job_id; DROP TABLE job_locks; DROP TABLE scheduler_leases;\n"
                      + f"UPDATE alembic_version SET version_num = '{BEFORE_HEAD}';")
    con.commit()
    con.close()


def break_for_the_head_migration(db: Path) -> None:
    """The table the head migration alters renamed: `mlflow db upgrade` fails in it."""
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE jobs RENAME TO jobs_elsewhere")
    con.commit()
    con.close()
