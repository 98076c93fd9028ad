"""Make an MLflow SQLite store with what a team's store has: run by the MLflow server environment's python.

``python make_store.py DB``: two experiments, five runs (one nested, one failed, one deleted), params,
tags, metric histories of 25 steps (with NaN and infinity among the values), and a registered model
with two versions, aliases and tags. Written through MLflow's own store code (sqlite:///DB), so the
schema is the one MLflow 3.17.2 makes.
"""
import math
import sys

import mlflow
from mlflow import MlflowClient

db = sys.argv[1]
uri = f"sqlite:///{db}"
mlflow.set_tracking_uri(uri)
mlflow.set_registry_uri(uri)
client = MlflowClient(uri, uri)
for e, name in enumerate(["vision", "nlp — ünïcode"]):
    experiment = client.create_experiment(name, tags={"team": f"t{e}", "note": "line1\nline2"})
    for r in range(3 if e == 0 else 2):
        run = client.create_run(experiment, run_name=f"run-{e}-{r}", tags={"kind": "train", "r": str(r)})
        rid = run.info.run_id
        for p in range(4):
            client.log_param(rid, f"param_{p}", f"{e}.{r}.{p}" if p else "x" * 500)
        for step in range(25):
            client.log_metric(rid, "loss", 1.0 / (step + 1) + r, step=step, timestamp=1_700_000_000_000 + step)
            client.log_metric(rid, "acc", step / 25.0, step=step, timestamp=1_700_000_000_500 + step)
        client.log_metric(rid, "odd", math.nan, step=0, timestamp=1_700_000_001_000)
        client.log_metric(rid, "odd", math.inf, step=1, timestamp=1_700_000_001_001)
        client.log_metric(rid, "odd", -math.inf, step=2, timestamp=1_700_000_001_002)
        client.set_tag(rid, "mlflow.note.content", f"run {r} of {name}")
        if r == 1:
            child = client.create_run(experiment, run_name="child", tags={"mlflow.parentRunId": rid})
            client.log_metric(child.info.run_id, "loss", 0.5, step=0)
            client.set_terminated(child.info.run_id, "FAILED")
        client.set_terminated(rid, "FINISHED")
        if e == 1 and r == 1:
            client.delete_run(rid)
        last = rid
client.create_registered_model("classifier", tags={"stage": "test"}, description="the model")
for n in range(2):
    version = client.create_model_version("classifier", f"runs:/{last}/model", run_id=last, tags={"n": str(n)})
client.set_registered_model_alias("classifier", "champion", version.version)
print("ok")
