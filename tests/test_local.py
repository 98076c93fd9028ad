"""`inv up` / `inv smoke` / `inv down`: local MLflow in a container, and natively without an engine."""
from __future__ import annotations

import os
import uuid

import pytest

from mlflow_self_host.steps import local, smoke
from mlflow_self_host.core.errors import UserError
from mlflow_self_host.core.version import Version
from tests.services.ports import reserved_port
from tests.services.mlflow_image import PROJECT_ROOT, clean_env
from tests.services.mlflow_load import logging_load

pytestmark = pytest.mark.slow
VERSION = Version("0.99")


def mlflow_client(settings):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=local.url(settings).rstrip("/"))


def round_trip(settings):
    """smoke, and the artifact as the server stored it on the host."""
    result = smoke.smoke(settings)
    stored = settings.path(settings.local_data_dir) / "artifacts" / result.artifact_path
    return result, stored


@pytest.fixture
def container_settings(mlflow_image, tmp_path):
    settings = mlflow_image.settings(local_port=reserved_port(), local_data_dir=str(tmp_path / "data"),
                                     local_container=f"mlflow-local-test-{uuid.uuid4().hex[:8]}")
    yield settings
    local.down(settings)


@pytest.fixture
def native_settings(tmp_path, monkeypatch):
    """No engine reachable: DOCKER_HOST names a socket nobody serves."""
    from mlflow_self_host.core.settings import Settings

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    settings = Settings.load(root=PROJECT_ROOT, env=clean_env(), overrides={
        "local_port": reserved_port(), "local_data_dir": str(tmp_path / "data")})
    yield settings
    local.down(settings)


def test_container_up_smoke_down_up_keeps_the_data(container_settings, docker_client, capfd):
    settings = container_settings
    assert local.up(settings, VERSION, require_docker=True) == local.url(settings)
    container = docker_client.containers.get(settings.local_container)
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"
    data = settings.path(settings.local_data_dir)
    assert (data / "backend").stat().st_uid == 1000 and (data / "artifacts").stat().st_uid == 1000

    capfd.readouterr()
    local.up(settings, VERSION)  # a second up is a no-op
    assert "already running" in capfd.readouterr().err
    assert docker_client.containers.get(settings.local_container).id == container.id

    result, stored = round_trip(settings)
    assert stored.read_text() == mlflow_client(settings).get_run(result.run_id).data.params["smoke_token"]
    assert (data / "backend" / "mlflow.db").exists()

    local.down(settings)
    assert settings.local_container not in [c.name for c in docker_client.containers.list(all=True)]
    assert stored.exists()

    local.up(settings, VERSION)
    run = mlflow_client(settings).get_run(result.run_id)  # the earlier run survived
    assert run.data.metrics["smoke_metric"] == 0.5


def test_the_container_survives_smoke_and_a_logging_load_in_512m(container_settings, docker_client):
    settings = container_settings.with_overrides({"memory": 512})
    local.up(settings, VERSION, require_docker=True)
    container = docker_client.containers.get(settings.local_container)
    assert container.attrs["HostConfig"]["Memory"] == 512 * 1024 * 1024
    round_trip(settings)
    logging_load(local.url(settings), runs=40, threads=4)
    smoke.smoke(settings)
    container.reload()
    assert container.status == "running" and not container.attrs["State"]["OOMKilled"]
    memory = container.stats(stream=False)["memory_stats"]
    print(f"\nmemory under load (limit 512m): max_usage={memory.get('max_usage', 0) / 2**20:.0f} MiB, "
          f"rss={memory.get('stats', {}).get('total_rss', 0) / 2**20:.0f} MiB")


def test_native_up_smoke_down_up_keeps_the_data(native_settings, capfd):
    settings = native_settings
    assert local.up(settings, VERSION) == local.url(settings)
    err = capfd.readouterr().err
    assert "no Docker engine" in err and "natively" in err
    data = settings.path(settings.local_data_dir)
    pid = int((data / local.PID_FILE).read_text())
    assert os.path.exists(f"/proc/{pid}")

    local.up(settings, VERSION)
    assert "already running" in capfd.readouterr().err

    result, stored = round_trip(settings)
    assert stored.exists() and (data / "backend" / "mlflow.db").exists()

    local.down(settings)
    assert not local.healthy(settings) and not (data / local.PID_FILE).exists()
    assert stored.exists()

    local.up(settings, VERSION)
    assert mlflow_client(settings).get_run(result.run_id).data.params["smoke_token"] == stored.read_text()


def test_up_with_docker_required_and_no_engine_fails(native_settings):
    with pytest.raises(UserError) as caught:
        local.up(native_settings, VERSION, require_docker=True)
    assert caught.value.code == 4 and "no Docker engine" in caught.value.message


def test_up_on_a_port_in_use_says_so(native_settings):
    import socket

    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: the port is held in TIME_WAIT
        busy.bind(("127.0.0.1", native_settings.local_port))
        busy.listen()
        with pytest.raises(UserError) as caught:
            local.up(native_settings, VERSION)
    assert "in use" in caught.value.message and "--port" in caught.value.hint


def test_down_when_nothing_runs_is_no_change(native_settings, capfd):
    local.down(native_settings)
    assert "no change" in capfd.readouterr().err


def test_dry_run_plans_the_container_and_starts_nothing(container_settings, docker_client, capfd):
    settings = container_settings
    local.up(settings, VERSION, require_docker=True, dry_run=True)
    err = capfd.readouterr().err
    assert f"container {settings.local_container}" in err and "dry run: nothing was changed" in err
    assert settings.local_container not in [c.name for c in docker_client.containers.list(all=True)]
    assert not settings.path(settings.local_data_dir).exists()

    local.up(settings, VERSION, require_docker=True)
    local.up(settings, VERSION, dry_run=True)  # running: nothing to do
    assert "no change" in capfd.readouterr().err
    local.down(settings, dry_run=True)
    assert "stop" in capfd.readouterr().err
    assert docker_client.containers.get(settings.local_container).status == "running"


def test_native_dry_run_starts_nothing(native_settings, capfd):
    local.up(native_settings, VERSION, dry_run=True)
    err = capfd.readouterr().err
    assert "native MLflow server" in err and "dry run: nothing was changed" in err
    assert not local.Folders.of(native_settings).pid_file.exists()
    from tests.services import port_open

    assert not port_open(native_settings.local_port)
