"""A real MLflow tracking server, run natively on a loopback port.

It runs from the same virtual environment `inv up` creates for its native mode (local.ensure_venv:
the image's pinned MLflow and requirements, made once in the suite's own cache_dir, under TEST_CACHE), so
the tests need no MLflow server in their own environment (the project depends on mlflow-skinny, the
client, only).

SQLite store and artifacts in a folder laid out like local mode's ./data (backend/mlflow.db,
artifacts/), so backup and restore can point at it.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import clean_env, free_port, stop_process, unavailable, wait_for


@dataclass
class MLflowServer:
    url: str
    db: Path
    data: Path
    proc: subprocess.Popen
    log: Path


def server_python() -> str:
    """The native server venv's python (created on first use, about a minute, under the suite's cache_dir)."""
    from mlflow_self_host.steps import local
    from mlflow_self_host.core.errors import UserError
    from mlflow_self_host.core.settings import PROJECT_ROOT, Settings

    try:
        return str(local.ensure_venv(Settings.load(root=PROJECT_ROOT, env=clean_env())) / "bin" / "python")
    except UserError as exc:
        unavailable(f"cannot make the MLflow server environment: {exc}")


def start(data: Path, timeout: float = 120, store_uri: str | None = None, metrics: bool = False) -> MLflowServer:
    """``store_uri``: another store than ``data``'s SQLite (a PostgreSQL URL); ``metrics``: --expose-prometheus
    (its multiprocess folder in ``data``)."""
    (data / "backend").mkdir(parents=True, exist_ok=True)
    (data / "artifacts").mkdir(parents=True, exist_ok=True)
    db = data / "backend" / "mlflow.db"
    port = free_port()
    log = data / "mlflow-server.log"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        [server_python(), "-m", "mlflow", "server", "--backend-store-uri", store_uri or f"sqlite:///{db}",
         "--artifacts-destination", str(data / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", *(["--expose-prometheus", str(data / "prometheus")] if metrics else [])],
        stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy():
        import urllib.request

        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-1500:])
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return resp.status == 200

    try:
        wait_for(healthy, timeout, "mlflow server", 0.5)
    except (TimeoutError, RuntimeError) as exc:
        stop_process(proc)
        unavailable(f"mlflow server did not start: {exc}")
    return MLflowServer(url=url, db=db, data=data, proc=proc, log=log)


def stop(server: MLflowServer) -> None:
    stop_process(server.proc)
