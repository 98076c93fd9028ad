"""Throughput: runs and metrics logged per second through the MLflow client, against our container
(as deployed: entrypoint defaults, `--memory 512m`) vs MLflow's defaults (`mlflow server` with no
tuning, no memory limit: 4 uvicorn workers and the job runner), the same image and engine, in the same
run; with each server's memory: the RSS of all its container's processes (the memory cgroup's rss, page
cache not counted) idle, 10 s after /health answered, and its peak during the measured rounds (sampled
every 0.1 s).

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

from common import ContainerMemory, median, write_section

THREADS = 4


def start(client, ref, port, data, *, ours: bool):
    for sub in ("backend", "artifacts", "home"):
        (data / sub).mkdir(exist_ok=True)
        os.chown(data / sub, 1000, 1000)
    volumes = {str(data / "backend"): {"bind": "/mnt/backend_store"},
               str(data / "artifacts"): {"bind": "/mnt/artifacts"}}
    kwargs = dict(detach=True, network_mode="host", volumes=volumes, name=f"msh-bench-tp-{uuid.uuid4().hex[:6]}")
    if ours:
        c = client.containers.run(ref, environment={"MLFLOW_PORT": str(port), "MLFLOW_HOST": "127.0.0.1"},
                                  mem_limit="512m", **kwargs)
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
        for label, ours in (("MLflow defaults (`mlflow server`, no tuning)", False), ("ours (as deployed, 512m)", True)):
            data = Path(tempfile.mkdtemp(prefix="msh-bench-tp-"))
            container, url = start(client, ref, reserved_port(), data, ours=ours)
            try:
                memory = ContainerMemory(container).start()
                source = memory.source
                time.sleep(10)  # settle
                idle, processes = memory.now(), len(container.top()["Processes"])
                rates(url, 8, 20)  # warm-up
                memory.reset_peak()
                measured = [rates(url, args.runs, args.metrics) for _ in range(args.rounds)]
                peak = memory.stop()
                results[label] = (median(r for r, _ in measured), median(m for _, m in measured),
                                  processes, idle, peak)
            finally:
                container.remove(force=True)
                shutil.rmtree(data, ignore_errors=True)
    (br, bm, _, bidle, bpeak), = [v for k, v in results.items() if not k.startswith("ours")]
    rows = "\n".join(f"| {k} | {r:.1f} | {r / br:.2f}x | {m:.1f} | {m / bm:.2f}x | {n} | {idle:.0f} MiB | "
                     f"{idle / bidle:.2f}x | {peak:.0f} MiB | {peak / bpeak:.2f}x |"
                     for k, (r, m, n, idle, peak) in results.items())
    body = f"""## Throughput through the MLflow client

Command: `python3 bench/throughput.py --rounds {args.rounds} --runs {args.runs} --metrics {args.metrics}`
({THREADS} client threads; medians of {args.rounds} rounds; the same image for both; RSS: all the container's
processes ({source}), page cache not counted; idle: 10 s after /health answered; peak: during the measured rounds)

| server | runs/s | ratio | metrics/s (`log_metric`) | ratio | processes | RSS idle | ratio | RSS peak | ratio |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}
"""
    write_section("throughput", body)


if __name__ == "__main__":
    main()
