"""`inv migrate-store --dry-run` as typed: reading has no side effect. On a machine where the worker's
environment does not exist yet, the dry run shows creating it as a change and creates nothing (no
environment, no backup, no invoke.yaml change), exit 0; no PostgreSQL, no MLflow needed."""
from __future__ import annotations

import sqlite3

from mlflow_self_host.steps.migrate import schema
from tests.flags.conftest import inv, make_project
from tests.services.mlflow_image import clean_env


def _store(path) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        con.execute("INSERT INTO alembic_version VALUES (?)", (schema.chain().head,))
        con.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("INSERT INTO experiments VALUES (0, 'Default')")


def test_dry_run_creates_no_environment_and_takes_no_backup(tmp_path):
    project = make_project(tmp_path / "project")
    store = tmp_path / "mlflow.db"
    _store(store)
    cache = tmp_path / "cache"  # no worker environment yet
    env = dict(clean_env(), MSH_CACHE_DIR=str(cache),
               MSH_DATABASE_URL="postgresql://mlflow:s3cret-pw@127.0.0.1:9/mlflow")
    yaml_before = (project / "invoke.yaml").read_text()

    dry = inv("migrate-store", "--to", "postgres", "--from", str(store), "--dry-run", cwd=project, env=env)
    assert "worker environment: would change (1)" in dry.stderr and str(cache) in dry.stderr
    assert "the target is read (reachable, empty) once the worker environment exists" in dry.stderr
    assert "experiments" in dry.stdout  # the tables it would copy, read from the store
    assert not cache.exists(), "a dry run created the environment"
    assert not (project / "backups").exists()
    assert (project / "invoke.yaml").read_text() == yaml_before
    assert "s3cret-pw" not in dry.stdout + dry.stderr
