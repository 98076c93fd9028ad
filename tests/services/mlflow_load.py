"""A bounded logging load on a MLflow server: what a few training scripts do at once.

Used by the 512m test (tests/test_local.py) and bench/memory.py.
"""
from __future__ import annotations

import concurrent.futures
import os
import tempfile
import uuid


def logging_load(tracking_uri: str, runs: int = 40, threads: int = 4, artifact_bytes: int = 1 << 20) -> None:
    """``runs`` runs from ``threads`` clients: 20 params, 500 metric points in batches, one artifact each."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri.rstrip("/"))
    experiment_id = client.create_experiment(f"load-{uuid.uuid4().hex[:6]}")
    blob = os.urandom(artifact_bytes)

    def one(_: int) -> None:
        run_id = client.create_run(experiment_id).info.run_id
        client.log_batch(run_id, params=[Param(f"p{k}", str(k)) for k in range(20)])
        for batch in range(5):
            client.log_batch(run_id, metrics=[Metric("loss", 1.0 / (s + 1), 0, batch * 100 + s) for s in range(100)])
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "weights.bin")
            with open(path, "wb") as fh:
                fh.write(blob)
            client.log_artifact(run_id, path)
        client.set_terminated(run_id)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(runs)))
