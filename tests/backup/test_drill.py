"""`inv restore --verify` (the restore drill) on the real parts: a real MLflow server logged to with the MLflow
client (SQLite on the SSH test host, and PostgreSQL), its backup drilled into a scratch copy or database and
counted against the live store, a corrupt backup failing the drill, the live store untouched; doctor's
`last backup` and `last restore drill` rows green, then red."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mlflow_self_host.core import database
from mlflow_self_host.core.settings import Settings
from mlflow_self_host.steps.backup import drill
from tests.backup.conftest import PROJECT_ROOT
from tests.services import clean_env, mlflow_server


def inv(env: dict, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(PROJECT_ROOT), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def log_work(url: str, experiments: int = 2, runs: int = 2) -> None:
    """Experiments, runs with metrics, params and one artifact each, through the MLflow client."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    for e in range(experiments):
        experiment = client.create_experiment(f"drill-{uuid.uuid4().hex[:8]}")
        for r in range(runs):
            run_id = client.create_run(experiment).info.run_id
            for step in range(3):
                client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
            client.log_param(run_id, "lr", "0.1")
            client.log_param(run_id, "depth", str(r))
            client.log_text(run_id, f"run {e}/{r}", "notes/readme.txt")
            client.set_terminated(run_id)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def table_row(out: str, what: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.split() and line.split()[0] == what)
    return line.split()


@pytest.fixture
def sqlite_store(ssh_server, tmp_path):
    """A real MLflow server whose store and artifacts are on the SSH test host; (server, inv's environment)."""
    server = mlflow_server.start(tmp_path / "host")
    env = clean_env()
    env.update(ssh_server.env(), MSH_BACKEND_PATH=str(server.db.parent),
               MSH_ARTIFACTS_PATH=str(server.data / "artifacts"), MSH_BACKUPS_PATH=str(tmp_path / "host" / "backups"),
               MSH_NOMAD_ADDR="http://127.0.0.1:1")
    yield server, env
    mlflow_server.stop(server)


@pytest.mark.slow
def test_a_sqlite_backup_drills_green_and_a_corrupt_one_fails_with_the_live_store_untouched(sqlite_store, tmp_path):
    server, env = sqlite_store
    log_work(server.url)
    taken = inv(env, "backup")
    assert taken.returncode == 0, taken.stderr
    name = os.path.basename(taken.stdout.strip())

    plan = inv(env, "restore", "--verify", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert name in plan.stderr and "dry run: nothing was changed" in plan.stderr
    assert not (tmp_path / "host" / "backups" / drill.RECORD).exists()

    before = digest(server.db)
    done = inv(env, "restore", "--verify")  # the newest backup
    assert done.returncode == 0, done.stderr
    assert f"restore drill of {name} passed" in done.stderr
    # Default + 2 experiments, 4 runs, 12 metric rows (4 latest), 8 params, 4 artifacts: the same live
    assert table_row(done.stdout, "experiments")[1:] == ["3", "3", "0"]
    assert table_row(done.stdout, "runs")[1:] == ["4", "4", "0"]
    assert table_row(done.stdout, "metrics")[1:] == ["12", "12", "0"]
    assert table_row(done.stdout, "latest_metrics")[1:] == ["4", "4", "0"]
    assert table_row(done.stdout, "params")[1:] == ["8", "8", "0"]
    assert table_row(done.stdout, "artifacts")[1:] == ["4", "4", "0"]
    assert digest(server.db) == before  # the live store only read
    assert not [p for p in (tmp_path / "host").iterdir() if "-drill-" in p.name]  # the scratch folder removed
    kept = json.loads((tmp_path / "host" / "backups" / drill.RECORD).read_text())
    assert kept["ok"] is True and kept["backup"] == name

    log_work(server.url, experiments=1, runs=1)  # work since the backup: the live store ahead is fine
    ahead = inv(env, "restore", "--verify", name)
    assert ahead.returncode == 0, ahead.stderr
    assert table_row(ahead.stdout, "runs")[1:] == ["4", "5", "+1"]

    broken = tmp_path / "host" / "backups" / "mlflow-20261201T000000Z-v0.99.db"
    data = (tmp_path / "host" / "backups" / name).read_bytes()
    broken.write_bytes(data[: len(data) // 3])  # truncated
    before = digest(server.db)
    failed = inv(env, "restore", "--verify", broken.name)
    assert failed.returncode == 1, failed.stderr
    red = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert len(red) == 1 and f"restore drill of {broken.name} failed" in red[0] and "malformed" in red[0]
    assert digest(server.db) == before
    assert not [p for p in (tmp_path / "host").iterdir() if "-drill-" in p.name]
    kept = json.loads((tmp_path / "host" / "backups" / drill.RECORD).read_text())
    assert kept["ok"] is False and kept["backup"] == broken.name

    missing = inv(env, "restore")  # no BACKUP without --verify
    assert missing.returncode == 2 and "restore needs BACKUP" in missing.stderr


@pytest.mark.slow
def test_doctor_rows_green_then_red(sqlite_store, tmp_path):
    server, env = sqlite_store
    log_work(server.url, experiments=1, runs=1)
    settings = Settings.load(root=PROJECT_ROOT, env=env)

    def rows(**more):
        got = {r.name: r for r in drill.doctor_rows(settings.with_overrides(more) if more else settings, 10)}
        return got["last backup"], got["last restore drill"]

    backup_row, drill_row = rows()
    assert not backup_row.ok and "no sqlite backup" in backup_row.found  # a database, and no backup of it
    assert drill_row.ok and "none yet" in drill_row.found
    assert inv(env, "backup").returncode == 0
    backup_row, drill_row = rows()
    assert backup_row.ok and "old" in backup_row.found
    assert not drill_row.ok and "never run" in drill_row.found and "inv restore --verify" in drill_row.fix
    assert inv(env, "restore", "--verify").returncode == 0
    backup_row, drill_row = rows()
    assert backup_row.ok and drill_row.ok and drill_row.found.startswith("ok ")

    # an old backup and an old drill: red past the settings
    record = tmp_path / "host" / "backups" / drill.RECORD
    kept = json.loads(record.read_text())
    kept["when"] = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%SZ")
    record.write_text(json.dumps(kept))
    folder = tmp_path / "host" / "backups"
    for path in folder.glob("mlflow-*.db"):
        path.rename(folder / "mlflow-20261101T000000Z-v0.99.db")
    backup_row, drill_row = rows()
    assert not backup_row.ok and "older than backup_max_age_hours 26" in backup_row.found
    assert not drill_row.ok and "older than drill_max_age_days 31" in drill_row.found
    backup_row, drill_row = rows(backup_max_age_hours=24 * 400, drill_max_age_days=400)
    assert backup_row.ok and drill_row.ok


def test_the_settings_are_checked_at_load():
    env = clean_env()
    done = inv(dict(env, MSH_BACKUP_MAX_AGE_HOURS="0"), "config")
    assert done.returncode == 2 and "backup_max_age_hours" in done.stderr
    done = inv(dict(env, MSH_DRILL_MAX_AGE_DAYS="-1"), "config")
    assert done.returncode == 2 and "drill_max_age_days" in done.stderr


@pytest.mark.slow
def test_a_postgres_backup_drills_into_a_scratch_database_dropped_after(postgres_server, ssh_server, tmp_path):
    pg = postgres_server
    name = f"dr_{uuid.uuid4().hex[:10]}"
    url = pg.database(name)
    server = mlflow_server.start(tmp_path / "host", store_uri=database.sqlalchemy_url(database.encoded(url)))
    try:
        log_work(server.url)
        env = clean_env()
        env.update(ssh_server.env(), MSH_STORE="postgres", MSH_DATABASE_URL=url,
                   MSH_BACKUPS_PATH=str(tmp_path / "host" / "backups"), MSH_NOMAD_ADDR="http://127.0.0.1:1",
                   MSH_BACKEND_PATH=str(tmp_path / "host" / "backend"),
                   MSH_ARTIFACTS_PATH=str(server.data / "artifacts"))
        taken = inv(env, "backup")
        assert taken.returncode == 0, taken.stderr
        dump = os.path.basename(taken.stdout.strip())
        log_work(server.url, experiments=1, runs=1)

        refused = inv(env, "restore", "--verify")  # the fixture's role may not create databases
        assert refused.returncode == 1
        assert "cannot CREATE DATABASE" in refused.stderr and 'ALTER ROLE "mlflow" CREATEDB;' in refused.stderr

        pg.psql("ALTER ROLE mlflow CREATEDB")
        try:
            done = inv(env, "restore", "--verify", dump)
        finally:
            pg.psql("ALTER ROLE mlflow NOCREATEDB")
        assert done.returncode == 0, done.stderr
        assert table_row(done.stdout, "experiments")[1:] == ["3", "4", "+1"]
        assert table_row(done.stdout, "runs")[1:] == ["4", "5", "+1"]
        assert table_row(done.stdout, "metrics")[1:] == ["12", "15", "+3"]
        assert table_row(done.stdout, "params")[1:] == ["8", "10", "+2"]
        assert table_row(done.stdout, "artifacts")[1:] == ["4", "5", "+1"]
        assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}_verify'") == "0"  # dropped
        assert pg.password not in done.stdout + done.stderr
    finally:
        mlflow_server.stop(server)
