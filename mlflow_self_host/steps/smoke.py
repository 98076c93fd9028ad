"""``inv smoke``: a real round trip through a MLflow server with the MLflow client.

Logs a param, a metric and an artifact, reads them back, and calls a real API path with the
domain's Host header: MLflow 3.5+ answers 403 "Invalid Host header" to a Host it does not allow
(only /health is exempt), which is what a proxy in front of it sends.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..core import console
from ..core.errors import ExitCode, UserError, connection_reason, first_line

EXPERIMENT = "mlflow-self-host-smoke"
API_PATH = "api/2.0/mlflow/experiments/search?max_results=1"


@dataclass
class SmokeResult:
    url: str
    run_id: str
    artifact_path: str  # where the server keeps it: {experiment_id}/{run_id}/artifacts/{file}
    host_header: str


def smoke(settings, url: str | None = None, host_header: str | None = None) -> SmokeResult:
    url = (url or f"http://127.0.0.1:{settings.local_port}/").rstrip("/") + "/"
    host_header = host_header or settings.domain
    console.step(f"smoke test of {url}")
    from ..adapters import mlflow_http
    from ..core import auth

    creds = auth.basic(settings)
    _check_health(settings, url)
    _check_host_header(settings, url, host_header, creds)
    with auth.client_env(settings), mlflow_http.client_env(settings):  # credentials, ca_file for the client
        result = _round_trip(url, host_header)
    console.done(f"smoke test passed: {url} (run {result.run_id})")
    return result


def _get(settings, url: str, headers: dict | None = None, creds: tuple | None = None):
    import requests

    from ..adapters import mlflow_http

    try:  # a certificate that does not verify: exit 18, naming ca_file
        return mlflow_http.get(settings, url, headers=headers or {}, timeout=15, auth=creds)
    except requests.exceptions.RequestException as exc:
        raise UserError(f"no MLflow answers at {url}: {connection_reason(exc)}",
                        hint="start it with `inv up`, or pass --url of a running server",
                        code=ExitCode.SMOKE_FAILED) from None


def _check_health(settings, url: str) -> None:
    response = _get(settings, url + "health")
    if response.status_code != 200:
        raise UserError(f"{url}health answered HTTP {response.status_code}, not 200",
                        hint="is this a MLflow server? see its logs (`inv logs`, or ./data/mlflow-server.log)",
                        code=ExitCode.SMOKE_FAILED)
    console.done(f"{url}health: {response.text.strip()[:20]}")


def _check_host_header(settings, url: str, host_header: str, creds: tuple | None = None) -> None:
    response = _get(settings, url + API_PATH, headers={"Host": host_header}, creds=creds)
    if response.status_code == 403 and "invalid host header" in response.text.lower():
        raise host_rejected(host_header)
    if response.status_code == 401:
        raise UserError(f"{url} asks for credentials (HTTP 401)" + (" and refuses the admin's" if creds else ""),
                        hint=("MSH_MLFLOW_ADMIN_PASSWORD must be the admin's password (`inv users --set-password` "
                              "changes it)") if creds else "export MSH_MLFLOW_ADMIN_PASSWORD (the admin's password)",
                        code=ExitCode.SMOKE_FAILED)
    if response.status_code != 200:
        raise UserError(f"GET /{API_PATH} with Host {host_header} answered HTTP {response.status_code}",
                        code=ExitCode.SMOKE_FAILED)
    console.done(f"API answers with Host: {host_header}")


def host_rejected(host_header: str) -> UserError:
    return UserError(
        f"MLflow rejected the Host header {host_header!r} (403 Invalid Host header)",
        hint=("the server's allowed hosts come from the domain setting: set MSH_DOMAIN (or domain in "
              f"settings.yaml) to {host_header} and redeploy / `inv down && inv up`, or add it to "
              "MLFLOW_SERVER_ALLOWED_HOSTS in the job"),
        code=ExitCode.SMOKE_FAILED,
    )


def _round_trip(url: str, host_header: str) -> SmokeResult:
    # A dead server would make the client retry for minutes: the health check above came first.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url.rstrip("/"))
    token = uuid.uuid4().hex
    # The client prints "View run at ..." lines on stdout, which is for results: keep them out.
    with contextlib.redirect_stdout(io.StringIO()):
        return _log_and_read_back(client, url, host_header, token)


def _log_and_read_back(client, url: str, host_header: str, token: str) -> SmokeResult:
    from mlflow.exceptions import MlflowException

    try:
        experiment = client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
        run = client.create_run(experiment_id, run_name=f"smoke-{time.strftime('%Y%m%d-%H%M%S')}")
        run_id = run.info.run_id
        client.log_param(run_id, "smoke_token", token)
        client.log_metric(run_id, "smoke_metric", 0.5, step=1)
        with tempfile.TemporaryDirectory(prefix="msh-smoke-") as tmp:
            artifact = Path(tmp) / "smoke.txt"
            artifact.write_text(token)
            client.log_artifact(run_id, str(artifact))
        client.set_terminated(run_id)
        back = client.get_run(run_id)
        with tempfile.TemporaryDirectory(prefix="msh-smoke-") as tmp:
            downloaded = Path(client.download_artifacts(run_id, "smoke.txt", tmp)).read_text()
    except MlflowException as exc:
        text = str(exc)
        if "Invalid Host header" in text:
            raise host_rejected(host_header) from None
        raise UserError(f"MLflow client call failed: {first_line(text, 300)}", code=ExitCode.SMOKE_FAILED) from None
    _expect(back.data.params.get("smoke_token") == token, "param", back.data.params.get("smoke_token"))
    _expect(back.data.metrics.get("smoke_metric") == 0.5, "metric", back.data.metrics.get("smoke_metric"))
    _expect(downloaded == token, "artifact", downloaded[:40])
    console.done(f"param, metric and artifact written and read back (experiment {EXPERIMENT})")
    uri = back.info.artifact_uri
    if not uri.startswith("mlflow-artifacts:"):
        console.warn(f"artifacts go to {uri}, not through the server: start it with --artifacts-destination")
    return SmokeResult(url=url, run_id=run_id, artifact_path=f"{experiment_id}/{run_id}/artifacts/smoke.txt",
                       host_header=host_header)


def _expect(ok: bool, what: str, got) -> None:
    if not ok:
        raise UserError(f"the {what} read back is not what was logged (got {got!r})", code=ExitCode.SMOKE_FAILED)
