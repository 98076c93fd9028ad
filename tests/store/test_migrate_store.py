"""`inv migrate-store --to postgres`, through `inv` as a user types it, against a real PostgreSQL.

The SQLite store is made by MLflow itself (make_store.py, run by the native server environment: the
image's lock, so the image's MLflow) with runs, params, tags, metric histories of 25 steps (NaN and
infinities among them) and a registered model. After the migration a real MLflow server on the
PostgreSQL store and one on (a copy of) the SQLite store must read back the same experiments, runs,
params, tags, metric histories and models. Every run's output is searched for the password.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from mlflow_self_host.core import database
from tests.flags.conftest import errors, inv, make_project
from tests.services import free_port, stop_process, unavailable, wait_for
from tests.services.mlflow_image import clean_env
from tests.services.mlflow_server import server_python

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with a team's kind of content, made once for the module."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    done = subprocess.run([server_python(), str(HERE / "make_store.py"), str(db)], capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        unavailable(f"MLflow could not make the test store: {done.stderr[-1500:]}")
    return db


@pytest.fixture
def project(tmp_path) -> Path:
    return make_project(tmp_path / "project")


def env_for(url: str | None) -> dict:
    env = clean_env()
    if url is not None:
        env["MSH_DATABASE_URL"] = url
    return env


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_line(project: Path) -> str:
    """``store: X`` as the user's settings.yaml says it (migrate-store switches it there, not in invoke.yaml)."""
    from invoke.util import yaml

    return f"store: {yaml.safe_load((project / 'settings.yaml').read_text())['mlflow']['store']['store']}"


def assert_no_password(password: str, *runs) -> None:
    """Neither the password as typed, nor percent-encoded (as the job's Variable holds it), nor its random part."""
    from urllib.parse import quote

    for done in runs:
        for form in (password, quote(password, safe=""), password[-16:]):
            assert form not in done.stdout and form not in done.stderr, "the password was printed"


# --- an MLflow server on either store, and what it reads back -------------------------------------
def start_server(backend_uri: str, folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "server.log"
    proc = subprocess.Popen([server_python(), "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
                             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
    url = f"http://127.0.0.1:{port}"

    def healthy():
        import urllib.request

        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-2000:])
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200

    try:
        wait_for(healthy, 120, "mlflow server", 0.5)
    except (TimeoutError, RuntimeError):
        stop_process(proc)
        raise
    return proc, url


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else repr(value)


def read_back(url: str) -> dict:
    """Everything the server gives for every experiment, run and model (deleted ones included)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(url, url)
    found = {"experiments": {}, "runs": {}, "models": {}}
    experiments = client.search_experiments(view_type=ViewType.ALL)
    for e in experiments:
        found["experiments"][e.experiment_id] = (e.name, e.lifecycle_stage, e.artifact_location, e.creation_time,
                                                 e.last_update_time, sorted(e.tags.items()))
    runs = client.search_runs([e.experiment_id for e in experiments], run_view_type=ViewType.ALL, max_results=1000)
    for run in runs:
        info = run.info
        history = {key: [(m.step, m.timestamp, _number(m.value)) for m in
                         sorted(client.get_metric_history(info.run_id, key), key=lambda m: (m.step, m.timestamp))]
                   for key in run.data.metrics}
        found["runs"][info.run_id] = {
            "info": (info.experiment_id, info.run_name, info.status, info.start_time, info.end_time,
                     info.lifecycle_stage, info.artifact_uri, info.user_id),
            "params": sorted(run.data.params.items()), "tags": sorted(run.data.tags.items()),
            "metrics": sorted((k, _number(v)) for k, v in run.data.metrics.items()), "history": history}
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name='{model.name}'")
        found["models"][model.name] = {
            "model": (model.description, model.creation_timestamp, sorted(model.tags.items()), sorted(model.aliases)),
            "versions": sorted((v.version, v.source, v.run_id, v.status, v.creation_timestamp,
                                sorted(v.tags.items()), sorted(v.aliases)) for v in versions)}
    return found


# --- the tests ------------------------------------------------------------------------------------
def test_migrate_store_copies_everything_and_a_server_reads_it_back(postgres_server, sqlite_store, project,
                                                                   tmp_path):
    name = f"mig_{uuid.uuid4().hex[:8]}"
    url = postgres_server.database(name)
    env = env_for(url)
    before = sha256(sqlite_store)
    yaml_before = (project / "invoke.yaml").read_text()

    dry = inv("migrate-store", "--to", "postgres", "--from", str(sqlite_store), "--dry-run", cwd=project, env=env)
    assert "metrics" in dry.stdout and "267" in dry.stdout  # 7 runs: 25 steps of two keys, 3 odd values...
    assert "dry run: nothing was changed" in dry.stderr
    assert postgres_server.tables(name) == [], "a dry run created tables"
    assert (project / "invoke.yaml").read_text() == yaml_before and not (project / "settings.yaml").exists()

    done = inv("migrate-store", "--to", "postgres", "--from", str(sqlite_store), cwd=project, env=env)
    assert "every table checks out" in done.stderr
    assert "✗" not in done.stdout
    assert store_line(project).split()[1] == "postgres"
    assert (project / "invoke.yaml").read_text() == yaml_before  # the defaults stay as shipped
    assert sha256(sqlite_store) == before, "the SQLite store was changed"
    assert postgres_server.count(name, "metrics") == 267

    again = inv("migrate-store", "--to", "postgres", "--from", str(sqlite_store), cwd=project, env=env, expect=15)
    assert len(errors(again)) == 1 and "is not empty" in errors(again)[0] and "nothing was changed" in again.stderr
    assert postgres_server.count(name, "metrics") == 267 and postgres_server.count(name, "runs") == 7
    assert_no_password(postgres_server.password, dry, done, again)

    # inv doctor (store: postgres now): the database's rows pass (the rest, no cluster here, fail).
    doctor = inv("doctor", "--json", cwd=project, env=dict(env, MSH_DOCTOR_TIMEOUT="5"), expect=1)
    rows = {row["name"]: row for row in json.loads(doctor.stdout)["checks"]}
    assert rows["database"]["ok"] and "postgresql://mlflow:****@127.0.0.1" in rows["database"]["found"]
    assert rows["database schema"]["ok"] and "the image's head" in rows["database schema"]["found"]
    assert_no_password(postgres_server.password, doctor)

    # The same content through MLflow servers on both stores.
    sqlite_copy = tmp_path / "sqlite-server" / "mlflow.db"
    sqlite_copy.parent.mkdir()
    shutil.copy(sqlite_store, sqlite_copy)
    servers = []
    try:
        servers.append(start_server(f"sqlite:///{sqlite_copy}", tmp_path / "sqlite-server"))
        servers.append(start_server(database.sqlalchemy_url(database.encoded(url)), tmp_path / "postgres-server"))
        from_sqlite, from_postgres = read_back(servers[0][1]), read_back(servers[1][1])
    finally:
        for proc, _ in servers:
            stop_process(proc)
    assert len(from_sqlite["experiments"]) == 3 and len(from_sqlite["runs"]) == 7  # with Default and the child runs
    assert all(len(run["history"].get("loss", [])) in (1, 25) for run in from_sqlite["runs"].values())
    assert from_sqlite["models"]["classifier"]["versions"]
    assert from_postgres == from_sqlite


def test_migrate_store_refusals_change_nothing(postgres_server, sqlite_store, project):
    name = f"ref_{uuid.uuid4().hex[:8]}"
    url = postgres_server.database(name)
    yaml_before = (project / "invoke.yaml").read_text()
    runs = []

    runs.append(inv("migrate-store", "--to", "mysql", "--from", str(sqlite_store), cwd=project, env=env_for(url),
                    expect=2))
    assert "--to must be postgres" in errors(runs[-1])[0]

    runs.append(inv("migrate-store", "--to", "postgres", "--from", str(sqlite_store), cwd=project, env=env_for(None),
                    expect=1))
    assert "MSH_DATABASE_URL is not set" in errors(runs[-1])[0]

    nobody = free_port()
    runs.append(inv("migrate-store", "--to", "postgres", "--from", str(sqlite_store), cwd=project,
                    env=env_for(postgres_server.url(name, port=nobody)), expect=1))
    line = errors(runs[-1])[0]
    assert "cannot reach the PostgreSQL database" in line and f"postgresql://mlflow:****@127.0.0.1:{nobody}/" in line
    assert "listens on port" in runs[-1].stderr

    wrong = "not-the-password"
    runs.append(inv("migrate-store", "--to", "postgres", "--from", str(sqlite_store), cwd=project,
                    env=env_for(postgres_server.url(name, password=wrong)), expect=1))
    assert "password authentication failed" in errors(runs[-1])[0]
    assert wrong not in runs[-1].stdout + runs[-1].stderr

    postgres_server.psql("CREATE TABLE notes (id int)", database=name)
    runs.append(inv("migrate-store", "--to", "postgres", "--from", str(sqlite_store), cwd=project, env=env_for(url),
                    expect=15))
    assert "is not empty: 1 table (notes)" in errors(runs[-1])[0]
    runs.append(inv("migrate-store", "--to", "postgres", "--from", str(sqlite_store), "--dry-run", cwd=project,
                    env=env_for(url), expect=15))

    assert postgres_server.tables(name) == ["notes"]
    assert (project / "invoke.yaml").read_text() == yaml_before
    assert all(len(errors(done)) == 1 for done in runs)
    assert_no_password(postgres_server.password, *runs)

    notes = inv("doctor", "--json", cwd=project, env=dict(env_for(url), MSH_DOCTOR_TIMEOUT="5", MSH_STORE="postgres"),
                expect=1)
    rows = {row["name"]: row for row in json.loads(notes.stdout)["checks"]}
    assert rows["database"]["ok"] and not rows["database schema"]["ok"]  # the notes table is no MLflow schema
    assert "migrate-store" in rows["database schema"]["fix"]

    shown = inv("config", cwd=project, env=env_for(url))
    assert postgres_server.password not in shown.stdout + shown.stderr
    assert "database_url" in shown.stdout


def test_doctor_has_database_rows_only_for_the_postgres_store(project):  # and "shared artifacts": test_doctor.py
    from mlflow_self_host.flows import doctor
    from mlflow_self_host.core.settings import Settings

    for store, rows in (("sqlite", False), ("postgres", True)):
        settings = Settings.load(root=project, env={"MSH_STORE": store})
        assert (doctor.check_database in [check.run for check in doctor._checks(settings)]) is rows


def test_shown_url_hides_the_password():
    url = "postgresql://mlflow:s3cr%40t@db.lan:5432/mlflow"
    assert database.shown_url(url) == "postgresql://mlflow:****@db.lan:5432/mlflow"
    assert database.hide("failed for s3cr@t and s3cr%40t", url) == "failed for **** and ****"
    assert database.sqlalchemy_url("postgres://u:p@h/d") == "postgresql+psycopg2://u:p@h/d"


def test_the_image_serves_the_migrated_store_with_its_driver(postgres_server, sqlite_store, project, mlflow_image,
                                                              docker_client):
    """The real image (psycopg2 from its lock) on the test engine, host network, serving the PostgreSQL store."""
    from mlflow import MlflowClient

    name = f"img_{uuid.uuid4().hex[:8]}"
    url = postgres_server.database(name)
    inv("migrate-store", "--to", "postgres", "--from", str(sqlite_store), cwd=project, env=env_for(url))
    port = free_port()
    container = docker_client.containers.run(
        mlflow_image.ref(), detach=True, network_mode="host",
        environment={"MLFLOW_BACKEND_STORE_URI": database.sqlalchemy_url(database.encoded(url)), "MLFLOW_PORT": str(port),
                     "MLFLOW_HOST": "127.0.0.1"})
    try:
        def healthy():
            import urllib.request

            container.reload()
            if container.status == "exited":
                raise RuntimeError(container.logs().decode()[-1500:])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return response.status == 200

        wait_for(healthy, 120, "the image's server on PostgreSQL", 0.5)
        client = MlflowClient(f"http://127.0.0.1:{port}")
        assert {e.name for e in client.search_experiments()} == {"Default", "vision", "nlp — ünïcode"}
        assert client.get_registered_model("classifier").aliases == {"champion": "2"}
    finally:
        container.remove(force=True)
    size = docker_client.images.get(mlflow_image.ref()).attrs["Size"]
    print(f"image size with psycopg2-binary: {size / 1e6:.1f} MB")
