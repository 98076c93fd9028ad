"""Memory of the MLflow container: idle and under a bounded logging load, per configuration, side by side.

Builds the project's image in this run (from the local stand-in base: no registry can be pulled here)
and runs it, with host networking on a free port, for:
- ours: the image as deployed (1 worker, MLflow's job runner off, `mlflow-serve.py` exec's the web server);
- the same entrypoint with its last line running plain `mlflow server` instead of `mlflow-serve.py`: the
  `mlflow server` CLI stays resident as uvicorn's parent (what the exec saves);
- 2 workers;
- MLflow's job runner on (`MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true`, MLflow's default), under the limit
  and without one (what it needs);
- ours with MLflow's auth app (`MLFLOW_AUTH=basic`, the cluster's default since issue 29; the load logs in as
  the admin): what authentication adds.
Reports the RSS of all the container's processes (the memory cgroup's rss, page cache not counted) idle
(10 s after /health answers) and after a fixed logging load, each as a share of the 512 MB the seed's
Nomad job allows (targets for ours: idle under 60%, loaded under 80%), the peak RSS sampled every 0.1 s
from the container's start to the end of the load, the processes (with the `mlflow server` parent's own
RSS), and whether it was OOM-killed.

    python3 bench/memory.py     (root; the engine DOCKER_HOST names if it runs here, or a private dockerd)
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from common import ADMIN, AUTH_ON, ContainerMemory, process_rss, write_section  # (sets sys.path)

JOBS_ON = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"}
# The image's entrypoint, its last line running `mlflow server` where it runs mlflow-serve.py (the grep
# fails the container if that line ever changes, rather than measuring ours twice).
CLI_PARENT = ["sh", "-c", "sed 's|^exec python \"$serve\" |exec mlflow server |' /usr/local/bin/mlflow-entrypoint "
              "> /tmp/entrypoint-cli && grep -q '^exec mlflow server ' /tmp/entrypoint-cli "
              "&& exec sh /tmp/entrypoint-cli"]


class Exited(BaseException):
    """The container stopped before /health answered (not an Exception: wait_for does not retry it)."""


@dataclass
class Config:
    name: str
    env: dict = field(default_factory=dict)
    limit: int | None = 512  # MiB; None: no limit
    entrypoint: list | None = None


CONFIGS = [
    Config("ours: 1 worker, job execution off, web server exec'd (default)", {"MLFLOW_WORKERS": "1"}),
    Config("1 worker, job execution off, `mlflow server` CLI kept as uvicorn's parent", {"MLFLOW_WORKERS": "1"},
           entrypoint=CLI_PARENT),
    Config("2 workers, job execution off", {"MLFLOW_WORKERS": "2"}),
    Config("1 worker, job execution on (MLflow's default)", {"MLFLOW_WORKERS": "1", **JOBS_ON}),
    Config("1 worker, job execution on, no memory limit", {"MLFLOW_WORKERS": "1", **JOBS_ON}, limit=None),
    Config("ours with auth (MLflow's auth app, basic_auth.db)", {"MLFLOW_WORKERS": "1", **AUTH_ON}),
]


def measure(engine, ref: str, config: Config, runs: int) -> dict:
    import urllib.request

    from tests.services import wait_for
    from tests.services.mlflow_load import logging_load
    from tests.services.ports import reserved_port

    port = reserved_port()
    data = Path(tempfile.mkdtemp(prefix="msh-bench-mem-"))
    for sub in ("backend", "artifacts"):
        (data / sub).mkdir()
        os.chown(data / sub, 1000, 1000)
    limit = {"mem_limit": f"{config.limit}m"} if config.limit else {}
    container = engine.containers.run(
        ref, name=f"msh-bench-mem-{uuid.uuid4().hex[:6]}", detach=True, network_mode="host",
        environment={"MLFLOW_PORT": str(port), "MLFLOW_HOST": "127.0.0.1", **config.env},
        entrypoint=config.entrypoint, **limit,
        volumes={str(data / "backend"): {"bind": "/mnt/backend_store"},
                 str(data / "artifacts"): {"bind": "/mnt/artifacts"}})
    url = f"http://127.0.0.1:{port}"
    result = {"oom": False, "error": "", "processes": []}
    memory = None
    try:
        memory = ContainerMemory(container).start()
        result["source"] = memory.source

        def healthy():
            container.reload()
            if container.status != "running":
                raise Exited
            return urllib.request.urlopen(url + "/health", timeout=2).status == 200

        try:
            wait_for(healthy, 240, "mlflow")
        except Exited:
            result["error"] = "exited before /health answered"
            return result
        time.sleep(10)  # settle
        result["idle_rss"] = memory.now()
        result["processes"] = process_rss(container)
        try:
            if config.env.get("MLFLOW_AUTH") == "basic":  # the client logs in as the admin
                os.environ.update({"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]})
            logging_load(url, runs=runs, threads=4)
        except Exception as exc:  # noqa: BLE001 - an OOM kill shows up as a failed load
            result["error"] = f"load failed: {type(exc).__name__}"
        result["load_rss"] = memory.now()
    except TimeoutError as exc:
        result["error"] = str(exc)[:80]
    finally:
        if memory is not None:
            result["peak"] = memory.stop()
        container.reload()
        result["oom"] = container.attrs["State"]["OOMKilled"]
        if not result["error"] and container.status != "running":
            result["error"] = f"exited ({container.attrs['State']['ExitCode']})"
        container.remove(force=True)
        shutil.rmtree(data, ignore_errors=True)
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40, help="runs in the logging load")
    args = parser.parse_args()

    from services import project_image

    with project_image("msh-bench-mem") as (client, settings, version):
        ref = settings.image_ref(version.text)
        results = [(config, measure(client, ref, config, args.runs)) for config in CONFIGS]
    write_section("memory", report(args, results))


def mib(value) -> str:
    return f"{value:.0f} MiB" if value else "-"


def share(value) -> str:
    return f"{mib(value)} ({value / 512:.0%})" if value else "-"  # of the seed job's 512 MB


CLI = re.compile(r"(/mlflow server|mlflow-serve\.py) ")  # not exec'd: waits for uvicorn (and the job runner)


def processes(r: dict) -> str:
    found = r["processes"]
    if not found:
        return "-"
    parent = [rss for rss, cmd in found if CLI.search(cmd)]
    return f"{len(found)}" + (f" (`mlflow server` CLI parent: {parent[0]:.0f} MiB)" if parent else "")


def report(args, results) -> str:
    rows = []
    for config, r in results:
        state = "OOM-killed" if r["oom"] else (r["error"] or "survived")
        rows.append(f"| {config.name} | {f'{config.limit}m' if config.limit else 'none'} | {processes(r)} | "
                    f"{share(r.get('idle_rss'))} | {mib(r.get('peak'))} | {share(r.get('load_rss'))} | {state} |")
    sources = ", ".join(sorted({r["source"] for _, r in results if r.get("source")}))
    by = {config.name: r for config, r in results}
    ours, cli, two, jobs, jobs_free, auth = (by[c.name] for c in CONFIGS)
    ok = lambda r: r.get("idle_rss") and not r["oom"] and not r["error"]  # noqa: E731
    verdict = ("met" if ok(ours) and ours["idle_rss"] < 0.6 * 512 and ours["load_rss"] < 0.8 * 512 else "MISSED")
    lines = [f"Targets for ours (idle under 60% of 512 MB, loaded under 80%): {verdict}."]
    if ok(ours) and ok(cli):
        lines.append(f"- Exec'ing the web server instead of keeping the `mlflow server` CLI as its parent: idle RSS "
                     f"{cli['idle_rss']:.0f} → {ours['idle_rss']:.0f} MiB ({cli['idle_rss'] - ours['idle_rss']:.0f} "
                     f"MiB less, {1 - ours['idle_rss'] / cli['idle_rss']:.0%}); with the parent the idle target is "
                     f"{'met' if cli['idle_rss'] < 0.6 * 512 else 'missed'} ({cli['idle_rss'] / 512:.1%} of 512 MB).")
    if ok(ours) and ok(two):
        lines.append(f"- A second worker adds {two['idle_rss'] - ours['idle_rss']:.0f} MiB idle.")
    if ok(ours) and ok(jobs_free):
        lines.append(f"- MLflow's job runner on, without a limit: idle RSS {jobs_free['idle_rss']:.0f} MiB "
                     f"({jobs_free['idle_rss'] - ours['idle_rss']:.0f} MiB more than off), peak "
                     f"{jobs_free['peak']:.0f} MiB; under 512m: "
                     f"{'OOM-killed' if jobs['oom'] else (jobs['error'] or 'survived')}.")
    if ok(ours) and ok(auth):
        lines.append(f"- MLflow's auth app (auth: basic) adds {auth['idle_rss'] - ours['idle_rss']:.0f} MiB idle and "
                     f"{auth['load_rss'] - ours['load_rss']:.0f} MiB after the load ({auth['load_rss'] / 512:.0%} of "
                     "512 MB loaded).")
    return "\n".join([
        "## Memory of the MLflow container",
        "",
        f"Command: `python3 bench/memory.py --runs {args.runs}` (the same image for all; load: {args.runs} runs "
        "from 4 clients, each 20 params, 500 metric points in batches, a 1 MiB artifact; RSS: the container's "
        f"memory cgroup ({sources}), page cache not counted; idle: 10 s after /health answered; peak: sampled every 0.1 s "
        "from the start, `mlflow db upgrade` included, to the end of the load)",
        "",
        "| configuration | limit | processes | RSS idle (share of 512 MB) | peak RSS | RSS after load (share) | result |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        *lines,
    ])


if __name__ == "__main__":
    main()
