"""Throughput: runs and metrics logged per second through the MLflow client, against our container
(entrypoint defaults, `--memory 512m`) vs MLflow's defaults (`mlflow server` with no tuning, no memory
limit: 4 uvicorn workers and the job runner), the same image and engine, in the same run; ours three ways:
without logins (`auth: none`), with MLflow's auth app checking the password at every request
(`auth_cache_seconds: 0`, MLflow's own default) and as deployed (auth basic, `auth_cache_seconds: 30`), the
client logging in as the admin for the last two. With each server's memory: the RSS of all its container's
processes (the memory cgroup's rss, page cache not counted) idle, 10 s after /health answered, and its peak
during the measured rounds (sampled every 0.1 s), and the container's CPU seconds per 100 requests of the
measured rounds (its cgroup's cpuacct usage).

Run: python3 bench/throughput.py [--rounds N]
"""
import argparse
import concurrent.futures
import os
import shutil
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from common import ADMIN, AUTH_ON, ContainerMemory, median, write_section

THREADS = 4
CONFIGS = (  # label, ours, the entrypoint's extra environment (None: `mlflow server` itself), log in
    ("MLflow defaults (`mlflow server`, no tuning)", False, None, False),
    ("ours, auth none (512m)", True, {}, False),
    ("ours, auth basic, password checked per request (`auth_cache_seconds: 0`)", True,
     {**AUTH_ON, "MLFLOW_AUTH_CACHE_SECONDS": "0"}, True),
    ("ours as deployed: auth basic, `auth_cache_seconds: 30`", True, AUTH_ON, True),
)


def cpu_seconds(container) -> float:
    """The container's CPU time so far (the cgroup's cpuacct usage, as `docker stats` reads it)."""
    return container.stats(stream=False)["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9


def start(client, ref, port, data, *, ours: bool, env: dict | None = None):
    for sub in ("backend", "artifacts", "home"):
        (data / sub).mkdir(exist_ok=True)
        os.chown(data / sub, 1000, 1000)
    volumes = {str(data / "backend"): {"bind": "/mnt/backend_store"},
               str(data / "artifacts"): {"bind": "/mnt/artifacts"}}
    kwargs = dict(detach=True, network_mode="host", volumes=volumes, name=f"msh-bench-tp-{uuid.uuid4().hex[:6]}")
    if ours:
        c = client.containers.run(ref, environment={"MLFLOW_PORT": str(port), "MLFLOW_HOST": "127.0.0.1",
                                                    **(env or {})}, mem_limit="512m", **kwargs)
    else:
        volumes[str(data / "home")] = {"bind": "/home/mlflow"}
        c = client.containers.run(ref, entrypoint=["mlflow", "server", "--host", "127.0.0.1", "--port", str(port)],
                                  **kwargs)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
                return c, url
        except Exception:  # noqa: BLE001
            time.sleep(0.5)
    logs = c.logs(tail=20).decode(errors="replace")
    c.remove(force=True)
    raise SystemExit(f"server did not become healthy:\n{logs}")


def rates(url: str, runs: int, metrics: int) -> tuple[float, float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.create_experiment(f"tp-{uuid.uuid4().hex[:6]}")
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        start = time.perf_counter()
        run_ids = list(pool.map(lambda _: client.create_run(exp).info.run_id, range(runs)))
        run_rate = runs / (time.perf_counter() - start)
        start = time.perf_counter()
        list(pool.map(lambda i: client.log_metric(run_ids[i % len(run_ids)], "m", float(i), step=i), range(metrics)))
        metric_rate = metrics / (time.perf_counter() - start)
    return run_rate, metric_rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--metrics", type=int, default=300)
    args = parser.parse_args()
    from services import project_image
    from tests.services.ports import reserved_port

    os.environ.setdefault("MSH_QUIET", "1")
    with project_image("msh-bench-tp") as (client, settings, version):
        ref = settings.image_ref(version.text)
        results = {}
        for label, ours, env, log_in in CONFIGS:
            data = Path(tempfile.mkdtemp(prefix="msh-bench-tp-"))
            container, url = start(client, ref, reserved_port(), data, ours=ours, env=env)
            if log_in:  # MLflow's client reads these at each request
                os.environ.update({"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]})
            try:
                memory = ContainerMemory(container).start()
                source = memory.source
                time.sleep(10)  # settle
                idle, processes = memory.now(), len(container.top()["Processes"])
                rates(url, 8, 20)  # warm-up
                memory.reset_peak()
                cpu = cpu_seconds(container)
                measured = [rates(url, args.runs, args.metrics) for _ in range(args.rounds)]
                cpu = cpu_seconds(container) - cpu
                peak = memory.stop()
                requests = args.rounds * (args.runs + args.metrics + 1)  # +1: the experiment of each round
                results[label] = (median(r for r, _ in measured), median(m for _, m in measured),
                                  processes, idle, peak, 100 * cpu / requests)
            finally:
                os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
                os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
                container.remove(force=True)
                shutil.rmtree(data, ignore_errors=True)
    (br, bm, _, bidle, bpeak, bcpu), = [v for k, v in results.items() if not k.startswith("ours")]
    rows = "\n".join(f"| {k} | {r:.1f} | {r / br:.2f}x | {m:.1f} | {m / bm:.2f}x | {n} | {idle:.0f} MiB | "
                     f"{idle / bidle:.2f}x | {peak:.0f} MiB | {peak / bpeak:.2f}x | {cpu:.2f} s | {cpu / bcpu:.2f}x |"
                     for k, (r, m, n, idle, peak, cpu) in results.items())
    body = f"""## Throughput through the MLflow client

Command: `python3 bench/throughput.py --rounds {args.rounds} --runs {args.runs} --metrics {args.metrics}`
({THREADS} client threads; medians of {args.rounds} rounds; the same image for both; RSS: all the container's
processes ({source}), page cache not counted; idle: 10 s after /health answered; peak: during the measured rounds;
CPU: the container's CPU seconds per 100 requests of the measured rounds; with auth the client logs in as the admin)

| server | runs/s | ratio | metrics/s (`log_metric`) | ratio | processes | RSS idle | ratio | RSS peak | ratio | CPU / 100 requests | ratio |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}
"""
    write_section("throughput", body)


if __name__ == "__main__":
    main()
