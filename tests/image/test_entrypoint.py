"""docker/entrypoint.sh in the image: the environment contract the Nomad job and `inv up` rely on."""
from __future__ import annotations

import os
import urllib.error
import urllib.request
import uuid

import pytest

from tests.services import free_port, wait_for
from tests.services.ports import reserved_port

pytestmark = pytest.mark.slow


def status(url: str, host: str) -> int:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def run(mlflow_image, docker_client, tmp_path):
    started = []

    def start(env: dict, owner: int = 1000):
        for sub in ("backend", "artifacts"):
            (tmp_path / sub).mkdir(exist_ok=True)
            os.chown(tmp_path / sub, owner, owner)
        container = docker_client.containers.run(
            mlflow_image.ref(), name=f"msh-entrypoint-{uuid.uuid4().hex[:8]}", detach=True, network_mode="host",
            environment=env, volumes={str(tmp_path / "backend"): {"bind": "/mnt/backend_store"},
                                      str(tmp_path / "artifacts"): {"bind": "/mnt/artifacts"}})
        started.append(container)
        return container

    yield start
    for container in started:
        container.remove(force=True)


def test_allowed_hosts_come_from_the_domain_plus_localhost(run):
    port = reserved_port()  # MLflow binds it in the container, seconds later
    container = run({"MLFLOW_PORT": str(port), "MLFLOW_HOST": "127.0.0.1", "MLFLOW_DOMAIN": "ml.home.arpa"})
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: status(base + "/health", "x") == 200, 120, "mlflow in the container")
    api = base + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert status(api, "ml.home.arpa") == 200
    assert status(api, f"localhost:{port}") == 200 and status(api, f"127.0.0.1:{port}") == 200
    assert status(api, "mlflow.lan") == 403  # the default domain is not allowed once another is set
    # one process: the web server replaced the entrypoint and `mlflow server` (no idle parent in memory)
    processes = container.top()["Processes"]
    assert len(processes) == 1, processes
    cmdline = container.exec_run(["cat", "/proc/1/cmdline"]).output.replace(b"\0", b" ").decode()
    assert "uvicorn" in cmdline and "--workers 1" in cmdline, cmdline


def test_a_backend_folder_uid_1000_cannot_write_stops_with_a_clear_message(run):
    container = run({"MLFLOW_PORT": str(free_port())}, owner=0)
    assert container.wait(timeout=60)["StatusCode"] == 78
    logs = container.logs().decode()
    assert "/mnt/backend_store" in logs and "not writable by uid 1000" in logs


@pytest.mark.parametrize("uri, says", [
    ("from-the-template:nomad/jobs/mlflow", "was not rendered: the job's template reads it from the Nomad Variable "
                                            "nomad/jobs/mlflow (item database_url_<revision>)"),
    ("", "is empty: in Nomad, the job's Variable lacks the item database_url_<revision> its template reads "
         "(inv deploy writes it)"),
])
def test_a_store_uri_the_template_did_not_fill_stops_with_a_clear_message(run, uri, says):
    container = run({"MLFLOW_PORT": str(free_port()), "MLFLOW_BACKEND_STORE_URI": uri})
    assert container.wait(timeout=60)["StatusCode"] == 78
    assert says in " ".join(container.logs().decode().split())


def test_two_servers_started_together_on_an_empty_postgresql_database(run, postgres_server):
    """A first deploy with count 2 starts both allocations at once: the entrypoint's `mlflow db upgrade` runs
    under a PostgreSQL advisory lock, so one creates MLflow's schema in the empty database and the other finds
    it at the head; both serve."""
    from mlflow_self_host.steps.migrate import schema
    from mlflow_self_host.core.database import encoded, sqlalchemy_url

    name = f"entry_{uuid.uuid4().hex[:8]}"
    url = sqlalchemy_url(encoded(postgres_server.database(name)))  # as the job's Variable holds it
    ports = [reserved_port(), reserved_port()]
    containers = [run({"MLFLOW_PORT": str(port), "MLFLOW_HOST": "127.0.0.1", "MLFLOW_BACKEND_STORE_URI": url})
                  for port in ports]
    for port in ports:
        wait_for(lambda port=port: status(f"http://127.0.0.1:{port}/health", "x") == 200, 120,
                 "mlflow on PostgreSQL in the container")
        assert status(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1", "mlflow.lan") == 200
    for container in containers:
        logs = container.logs().decode(errors="replace")
        assert "mlflow db upgrade (under a PostgreSQL advisory lock)" in logs and "Traceback" not in logs, logs
    assert "experiments" in postgres_server.tables(name) and "alembic_version" in postgres_server.tables(name)
    revision = postgres_server.psql("SELECT version_num FROM alembic_version", database=name).strip()
    assert revision == schema.chain().head


def test_upgrade_only_migrates_and_exits_without_serving(run, tmp_path):
    """MLFLOW_DB_UPGRADE=only (a release's migration job): `mlflow db upgrade`, then exit with its code, never
    serving; a database the upgrade fails on is its non-zero exit."""
    from tests.job import older_schema

    port = reserved_port()
    made = run({"MLFLOW_PORT": str(port), "MLFLOW_DB_UPGRADE": "only"})  # an empty folder: MLflow's tables made
    assert made.wait(timeout=120)["StatusCode"] == 0, made.logs().decode(errors="replace")
    db = tmp_path / "backend" / "mlflow.db"
    older_schema.one_behind(db)
    migrated = run({"MLFLOW_PORT": str(port), "MLFLOW_DB_UPGRADE": "only"})
    assert migrated.wait(timeout=120)["StatusCode"] == 0
    logs = migrated.logs().decode(errors="replace")
    assert "not serving (MLFLOW_DB_UPGRADE=only)" in logs and "Uvicorn" not in logs and "uvicorn" not in logs, logs
    assert older_schema.revision(db) == older_schema.HEAD and "job_locks" in older_schema.tables(db)
    older_schema.one_behind(db)
    older_schema.break_for_the_head_migration(db)
    failed = run({"MLFLOW_PORT": str(port), "MLFLOW_DB_UPGRADE": "only"})
    assert failed.wait(timeout=120)["StatusCode"] not in (0, None)
    assert "not serving" not in failed.logs().decode(errors="replace")
    assert older_schema.revision(db) == older_schema.BEFORE_HEAD


def test_an_auth_cache_that_is_not_a_number_of_seconds_stops_before_anything_runs(run):
    container = run({"MLFLOW_PORT": str(free_port()), "MLFLOW_AUTH": "basic", "MLFLOW_AUTH_CACHE_SECONDS": "soon"})
    assert container.wait(timeout=60)["StatusCode"] == 78
    logs = container.logs().decode()
    assert "MLFLOW_AUTH_CACHE_SECONDS must be a whole number of seconds from 0 (no cache) to 3600, not 'soon'" in \
        " ".join(logs.split())
    assert "mlflow db upgrade" not in logs
