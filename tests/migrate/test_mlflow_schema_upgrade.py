"""The two images of the upgrade tests, on their own: MLflow 3.16.1's (tests/services/mlflow_old_image.py) and the
project's 3.17.2, and what `mlflow db upgrade` does between them on SQLite and PostgreSQL. No server is started:
the old image's MLflow client writes to the store directly (the schema at 3.16.1's head), the new image's
`mlflow db upgrade` runs the two migrations between them and its client reads everything back, and the old
image then refuses the newer schema (what a revert onto it meets).
"""
from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import pytest

from tests.services.mlflow_old_image import MLFLOW_VERSION, NEW_MLFLOW_VERSION, NEW_SCHEMA_HEAD, SCHEMA_HEAD

LOG = """
import sys
from mlflow.tracking import MlflowClient
client = MlflowClient(tracking_uri=sys.argv[1])
experiment = client.create_experiment("upgrade", artifact_location="/tmp/artifacts")
run = client.create_run(experiment).info.run_id
client.log_param(run, "lr", "0.01")
for step in range(20):
    client.log_metric(run, "loss", 1.0 / (step + 1), step=step)
print("RUN", run)
"""
READ = """
import sys
from mlflow.tracking import MlflowClient
client = MlflowClient(tracking_uri=sys.argv[1])
run = client.get_run(sys.argv[2])
history = client.get_metric_history(sys.argv[2], "loss")
print("READ", run.data.params["lr"], [m.step for m in history] == list(range(20)), history[-1].value)
"""
REVISION = """
import sys, sqlalchemy
with sqlalchemy.create_engine(sys.argv[1]).connect() as connection:
    print("REVISION", connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar())
"""


def _run(docker_client, image: str, command: list[str], data) -> tuple[int, str]:
    """``command`` in ``image`` (no entrypoint, uid 1000, host network, ``data`` at /data); (exit code, output)."""
    container = docker_client.containers.run(image, entrypoint=command, network_mode="host", detach=True,
                                             volumes={str(data): {"bind": "/data", "mode": "rw"}})
    try:
        code = container.wait(timeout=300)["StatusCode"]
        return code, container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)


def _said(output: str, word: str) -> str:
    return next(line.split(" ", 1)[1] for line in output.splitlines() if line.startswith(word + " "))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 1000, 1000)
    if request.param == "sqlite":
        return "sqlite:////data/mlflow.db", data
    server = request.getfixturevalue("postgres_server")
    name = f"upgrade_{uuid.uuid4().hex[:8]}"
    server.database(name)
    url = server.url(name, password=quote(server.password, safe=""))  # its password has @, / and quotes
    return url.replace("postgresql://", "postgresql+psycopg2://", 1), data  # the driver the job names


def test_the_two_images_carry_the_two_releases(mlflow_old_image, mlflow_image, docker_client):
    for image, version in ((mlflow_old_image, MLFLOW_VERSION), (mlflow_image, NEW_MLFLOW_VERSION)):
        out = docker_client.containers.run(image.ref(), entrypoint=["mlflow", "--version"], remove=True,
                                           network_mode="host").decode()
        assert version in out


def test_db_upgrade_runs_the_two_migrations_and_the_old_release_refuses_the_result(
        mlflow_old_image, mlflow_image, docker_client, store_url):
    url, data = store_url
    code, out = _run(docker_client, mlflow_old_image.ref(), ["python", "-c", LOG, url], data)
    assert code == 0, out
    run = _said(out, "RUN")
    code, out = _run(docker_client, mlflow_old_image.ref(), ["python", "-c", REVISION, url], data)
    assert _said(out, "REVISION") == SCHEMA_HEAD

    code, out = _run(docker_client, mlflow_image.ref(), ["mlflow", "db", "upgrade", url], data)
    assert code == 0, out
    code, out = _run(docker_client, mlflow_image.ref(), ["python", "-c", REVISION, url], data)
    assert _said(out, "REVISION") == NEW_SCHEMA_HEAD
    code, out = _run(docker_client, mlflow_image.ref(), ["python", "-c", READ, url, run], data)
    assert code == 0, out
    assert _said(out, "READ") == "0.01 True 0.05"

    # what a revert onto the old image meets: its client refuses the schema, its own upgrade cannot go back
    code, out = _run(docker_client, mlflow_old_image.ref(), ["python", "-c", READ, url, run], data)
    assert code != 0 and "out-of-date database schema" in out and NEW_SCHEMA_HEAD in out
    code, out = _run(docker_client, mlflow_old_image.ref(), ["mlflow", "db", "upgrade", url], data)
    assert code != 0 and NEW_SCHEMA_HEAD in out
