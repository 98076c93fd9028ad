"""`inv smoke` against a real MLflow server (the installed mlflow, MLflow's default allowed hosts)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from mlflow_self_host.steps import smoke
from mlflow_self_host.core.errors import UserError
from mlflow_self_host.core.settings import Settings
from tests.services import free_port
from tests.services import mlflow_server as mlflow_server_service
from tests.services.mlflow_image import PROJECT_ROOT, clean_env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """MLflow without --allowed-hosts: localhost and private IPs only, so mlflow.lan gets a 403."""
    running = mlflow_server_service.start(tmp_path_factory.mktemp("smoke-server"))
    yield running
    mlflow_server_service.stop(running)


def settings():
    return Settings.load(root=PROJECT_ROOT, env=clean_env())


def inv(*args):
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=PROJECT_ROOT, env=clean_env(),
                          capture_output=True, text=True, timeout=180)


def test_smoke_logs_and_reads_back_a_param_metric_and_artifact(server):
    result = smoke.smoke(settings(), url=server.url, host_header="localhost")
    stored = server.data / "artifacts" / result.artifact_path
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=server.url).get_run(result.run_id)
    assert stored.read_text() == run.data.params["smoke_token"]
    assert run.data.metrics["smoke_metric"] == 0.5


def test_a_host_header_the_server_rejects_is_one_red_line_and_exit_17(server):
    result = inv("smoke", "--url", server.url)  # default Host header: the domain, mlflow.lan
    assert result.returncode == 17, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "mlflow.lan" in errors[0] and "403 Invalid Host header" in errors[0]
    assert "MSH_DOMAIN" in result.stderr and "Traceback" not in result.stderr


def test_no_server_at_the_url_is_exit_10_with_what_to_do():
    with pytest.raises(UserError) as caught:
        smoke.smoke(settings(), url=f"http://127.0.0.1:{free_port()}/")
    assert caught.value.code == 17 and "no MLflow answers" in caught.value.message
    assert "inv up" in caught.value.hint
