"""Memory of the MLflow container: idle and under a bounded logging load, per configuration.

Builds the project's image in this run (from the local stand-in base: no registry can be pulled here)
and runs it under `--memory LIMIT`, with host networking on a free port, for: 1 worker with job
execution off (the default), 2 workers, and 1 worker with MLflow's job runner on. Reports the total
RSS of all the container's processes (the cgroup's rss) idle and after a fixed logging load, each as a
share of the 512 MB the seed's Nomad job allows (targets: idle under 60%, loaded under 80%), the peak
usage with page cache, and whether it was OOM-killed.

    python3 bench/memory.py     (the engine DOCKER_HOST names, or a private dockerd)
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from common import write_section  # (sets sys.path)

CONFIGS = [
    ("1 worker, job execution off (default)", {"MLFLOW_WORKERS": "1"}),
    ("2 workers, job execution off", {"MLFLOW_WORKERS": "2"}),
    ("1 worker, job execution on (MLflow's default)", {"MLFLOW_WORKERS": "1",
                                                        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"}),
]


def measure(engine, ref: str, env: dict, limit_mb: int, runs: int) -> dict:
    from tests.services import free_port, wait_for
    from tests.services.mlflow_load import logging_load

    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="msh-bench-mem-"))
    for sub in ("backend", "artifacts"):
        (data / sub).mkdir()
        os.chown(data / sub, 1000, 1000)
    container = engine.containers.run(
        ref, name=f"msh-bench-mem-{uuid.uuid4().hex[:6]}", detach=True, network_mode="host",
        mem_limit=f"{limit_mb}m", environment={"MLFLOW_PORT": str(port), "MLFLOW_HOST": "127.0.0.1", **env},
        volumes={str(data / "backend"): {"bind": "/mnt/backend_store"},
                 str(data / "artifacts"): {"bind": "/mnt/artifacts"}})
    url = f"http://127.0.0.1:{port}"
    result = {"oom": False, "error": ""}
    try:
        import urllib.request

        wait_for(lambda: urllib.request.urlopen(url + "/health", timeout=2).status == 200, 180, "mlflow")
        time.sleep(10)  # settle
        result["idle_rss"] = _rss(container)
        try:
            logging_load(url, runs=runs, threads=4)
        except Exception as exc:  # noqa: BLE001 - an OOM kill shows up as a failed load
            result["error"] = type(exc).__name__
        result["load_rss"] = _rss(container)
        stats = container.stats(stream=False)["memory_stats"]
        result["peak"] = stats.get("max_usage", 0) / 2**20
    except TimeoutError as exc:
        result["error"] = str(exc)[:80]
    finally:
        container.reload()
        result["oom"] = container.attrs["State"]["OOMKilled"]
        result["processes"] = len(container.top()["Processes"]) if container.status == "running" else 0
        container.remove(force=True)
        shutil.rmtree(data, ignore_errors=True)
    return result


def _rss(container) -> float:
    stats = container.stats(stream=False)["memory_stats"]
    inner = stats.get("stats", {})
    rss = inner.get("total_rss", inner.get("anon", 0))
    return rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=512, help="container memory limit, MiB")
    parser.add_argument("--runs", type=int, default=40, help="runs in the logging load")
    args = parser.parse_args()

    from services import project_image

    with project_image("msh-bench-mem") as (client, settings, version):
        ref = settings.image_ref(version.text)
        results = [(name, measure(client, ref, env, args.limit, args.runs)) for name, env in CONFIGS]
    rows = []
    share = lambda mib: f"{mib / 512:.0%}" if mib else "-"  # noqa: E731 - of the seed job's 512 MB
    for name, r in results:
        state = "OOM-killed" if r["oom"] else (r["error"] or "survived")
        rows.append(f"| {name} | {r.get('processes', 0)} | {r.get('idle_rss', 0):.0f} MiB ({share(r.get('idle_rss'))}) | "
                    f"{r.get('load_rss', 0):.0f} MiB ({share(r.get('load_rss'))}) | {r.get('peak', 0):.0f} MiB | {state} |")
    d = results[0][1]
    verdict = ("met" if d.get("idle_rss", 1e9) < 0.6 * 512 and d.get("load_rss", 1e9) < 0.8 * 512 and not d["oom"]
               else "MISSED")
    body = "\n".join([
        f"## Memory of the MLflow container (`--memory {args.limit}m`)",
        "",
        f"Command: `python3 bench/memory.py --limit {args.limit} --runs {args.runs}` (load: {args.runs} runs from "
        "4 clients, each 20 params, 500 metric points in batches, a 1 MiB artifact)",
        "",
        "| configuration | processes | RSS idle (share of 512 MB) | RSS after load (share) | peak usage (incl. page cache) | result |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Targets for the default (idle under 60% of 512 MB, loaded under 80%): {verdict}.",
    ])
    write_section("memory", body)


if __name__ == "__main__":
    main()
