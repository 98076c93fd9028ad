"""Logging loads on a MLflow server: what a few training scripts do at once (``logging_load``: the
512m test in tests/test_local.py, bench/memory.py), and one training job logging step after step
through a release (``SteadyLogger``: tests/test_user_path.py, bench/release.py).
"""
from __future__ import annotations

import concurrent.futures
import os
import tempfile
import threading
import time
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


class SteadyLogger(threading.Thread):
    """A training job logging metric ``name`` one step after another (``interval`` apart). A step is
    acknowledged once the server answered it, and retried until then: set MLFLOW_HTTP_REQUEST_MAX_RETRIES=0
    so that the client's own retries do not hide the outage. ``longest_gap`` is the longest time
    between two acknowledgements: how long the service did not answer."""

    def __init__(self, client, run_id: str, name: str = "load", interval: float = 0.1):
        super().__init__(daemon=True)
        self.client, self.run_id, self.name, self.interval = client, run_id, name, interval
        self.acknowledged: list[int] = []
        self.failures = 0
        self.longest_gap = 0.0
        self.halt = threading.Event()

    def run(self):
        step, last_ok = 0, time.monotonic()
        while not self.halt.is_set():
            try:
                self.client.log_metric(self.run_id, self.name, float(step), step=step)
            except Exception:  # noqa: BLE001 - the service is away: retry the same step
                self.failures += 1
                time.sleep(self.interval)
                continue
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - last_ok)
            last_ok = now
            self.acknowledged.append(step)
            step += 1
            time.sleep(self.interval)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)

    def reset_gap(self) -> None:
        """Measure the longest gap from now on."""
        self.longest_gap = 0.0
