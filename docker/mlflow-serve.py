"""`mlflow server`, but the web server replaces this process instead of running as its child.

`mlflow server` starts uvicorn as a subprocess and stays resident only to wait for it and forward
signals: in bench/memory.py the container's idle RSS is 309 MiB that way and 155 MiB with this script
(of the Nomad job's 512 MB; BENCHMARKS.md). With MLflow's job runner off (our
default) there is nothing else for the parent to do, so we let MLflow compute the exact command and
environment it would use, then exec it: one process, the container's signals go straight to uvicorn.
With MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true this is plain `mlflow server`.
Arguments are `mlflow server`'s own. Pinned against the MLflow version in the Dockerfile.
"""
import os
import sys

import mlflow.server
from mlflow.cli import cli


def _exec_instead(cmd, extra_env=None, **_ignored):
    env = {**os.environ, **(extra_env or {})}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], list(cmd), env)


if os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false").strip().lower() not in ("1", "true", "yes"):
    mlflow.server._exec_cmd = _exec_instead

if __name__ == "__main__":
    cli(["server", *sys.argv[1:]], prog_name="mlflow")
