"""The store and the allocations, side by side in one run: what a logging client sees during a release, and
logging throughput, for SQLite with 1 allocation against PostgreSQL with 1 and 2 allocations.

The setup is tests/job/test_release_on_postgres.py's: the real MLflow image (built with `inv build`'s code
from the stand-in base, pushed to a private registry), the Nomad double running the job's allocations as
containers on the engine, its Consul double's catalogue read by the proxy stand-in (nginx, Traefik's
consulCatalog provider: an allocation is served once its check passes), a private PostgreSQL from Debian
(tests/services/postgres.py) reached by the containers through a TCP relay on the bridge's gateway, and
the project's deploy (`inv deploy`'s code without host step, build or backup) releasing a new version.
Three clusters, each with its own Nomad, Consul, proxy and host folders, run at once on one engine:

- ``sqlite-1``: store sqlite, count 1 (what SQLite allows);
- ``postgres-2``: store postgres, count 2 (the default for postgres), its own empty database;
- ``postgres-1``: store postgres, count 1, its own empty database (throughput only).

1. Release, ``--rounds`` times on sqlite-1 and on postgres-2, alternating: a client logs one metric step
   after another through the proxy (``POST /api/2.0/mlflow/runs/log-metric`` with ``Host: mlflow.lan``,
   what ``MlflowClient.log_metric`` sends; no retries but its own: a call that fails is counted and the same
   step sent again ``--interval`` later) for ``--quiet`` s, then the next version is deployed (the same image
   under a new tag: only the tag changes), then ``--settle`` s more. Figures: failed calls (all the logging),
   the longest time between two acknowledged calls around the release, latency of the calls acknowledged
   from the deploy's start to the settle's end (p50/p95/max; the quiet window's p50 beside them), the steps acknowledged
   against the steps read back from the server (``metrics/get-history``): lost, or stored twice.
2. Throughput, ``--tp-rounds`` rounds, the three clusters in a rotating order: ``--threads`` client threads,
   each logging to its own run, call ``log-metric`` as fast as they can through the proxy for ``--seconds``
   s; successful calls per second, latency, errors.

Job timings (``--timings``): ``test`` (default) is the tests' MLFLOW_TIMINGS (check every 1 s,
min_healthy_time 2 s) with shutdown_delay 2 s and the proxy reading the catalogue every ``--proxy-poll``
(0.5 s) s; ``job`` keeps invoke.yaml's (check every 2 s, min_healthy_time 10 s, shutdown_delay 20 s).

Run: .venv/bin/python bench/release_store.py [--rounds N] [--tp-rounds N] [--threads N] [--seconds S]
(root: initdb runs as the postgres user; needs docker.io, docker-registry, nginx, postgresql; the engine
DOCKER_HOST names, else a private dockerd). Everything it starts is stopped, its images untagged.
"""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from common import ADMIN, ROOT, median, write_section

DOMAIN = "mlflow.lan"
FIRST = "0.99"

# The relay of the test (tests/job/test_release_on_postgres.py), in its own process so that its threads do not
# share the benchmark's interpreter (the client threads) with it. Stops when its stdin closes.
RELAY = """
import sys
sys.path.insert(0, sys.argv[1])
from tests.job.test_release_on_postgres import Relay
relay = Relay(sys.argv[2], ("127.0.0.1", int(sys.argv[3])))
print(relay.port, flush=True)
sys.stdin.read()
relay.stop()
"""


def percentile(values, p: float) -> float:
    """Nearest rank; 0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


class Cluster:
    """One Nomad double (its client runs the allocations on the engine), its Consul double, the proxy reading
    Consul's catalogue, the host folders, and the settings of a deploy to them."""

    def __init__(self, label: str, root: Path, stack: contextlib.ExitStack, client, network: str, image,
                 store: str, count: int, database_url: str | None, timings: dict, proxy_poll: float):
        from mlflow_self_host.core.settings import PROJECT_ROOT, Settings
        from tests.doubles.consul import ConsulDouble
        from tests.doubles.nomad import NomadDouble
        from tests.services import proxy as proxy_service
        from tests.services.nomad_cluster import layout

        self.label, self.store, self.count = label, store, count
        host = root / "host"
        layout(host)
        self.consul = ConsulDouble()
        stack.callback(self.consul.stop)
        self.double = NomadDouble(engine=client, network=network, client_config=host / "nomad.d" / "client.hcl",
                                  consul=self.consul)
        stack.callback(self.double.stop)
        self.proxy = proxy_service.start(root / "proxy", self.consul.address, poll=proxy_poll,
                                         provider="consulCatalog")
        stack.callback(proxy_service.stop, self.proxy)
        from common import log_in_as_admin

        env = {**({"MSH_DATABASE_URL": database_url} if database_url else {}), **log_in_as_admin()}
        self.settings = Settings.load(root=PROJECT_ROOT, env=env, overrides={
            **image.settings_overrides, "nomad_addr": self.double.address, "store": store, "count": count,
            "service_provider": "consul", "deploy_check": False, "deploy_poll": "0.2", "deploy_timeout": 600,
            "backend_path": str(host / "data" / "mlflow" / "backend"),
            "artifacts_path": str(host / "data" / "mlflow" / "artifacts"), **timings})
        self.experiment = None

    def deploy(self, version: str) -> float:
        from mlflow_self_host.flows import deploy as job_deploy

        start = time.monotonic()
        result = job_deploy.deploy(self.settings, version, skip_host=True, skip_build=True, backup=False)
        took = time.monotonic() - start
        if result.status != "deployed":
            raise SystemExit(f"{self.label}: deploy of v{version} ended {result.status}")
        return took

    def wait_served(self, timeout: float = 120) -> None:
        from tests.services import wait_for

        wait_for(lambda: len(self.proxy.routes().get(DOMAIN, [])) == self.count, timeout,
                 f"{self.label}: {self.count} allocation(s) behind the proxy")

    def url(self, path: str) -> str:
        return f"{self.proxy.url}/api/2.0/mlflow/{path}"

    def new_run(self) -> str:
        import requests

        headers = {"Host": DOMAIN}
        if self.experiment is None:
            self.experiment = requests.post(self.url("experiments/create"), json={"name": "bench"},
                                            headers=headers, timeout=30, auth=ADMIN).json()["experiment_id"]
        answer = requests.post(self.url("runs/create"), json={"experiment_id": self.experiment}, headers=headers,
                               auth=ADMIN, timeout=30)
        answer.raise_for_status()
        return answer.json()["run"]["info"]["run_id"]

    def history(self, run_id: str, key: str) -> list[int]:
        import requests

        answer = requests.get(self.url("metrics/get-history"), headers={"Host": DOMAIN}, timeout=60, auth=ADMIN,
                              params={"run_id": run_id, "metric_key": key, "max_results": 1000000})
        answer.raise_for_status()
        return [m["step"] for m in answer.json().get("metrics", [])]


class StepLogger(threading.Thread):
    """A training job logging metric ``loss`` one step after another through the proxy; a failed call (not
    200, or no answer within 10 s) is counted and the same step sent again. ``calls``: (start, end, ok)."""

    def __init__(self, cluster: Cluster, run_id: str, interval: float):
        super().__init__(daemon=True)
        self.cluster, self.run_id, self.interval = cluster, run_id, interval
        self.calls: list[tuple[float, float, bool]] = []
        self.acknowledged: list[int] = []
        self.halt = threading.Event()

    def run(self):
        import requests

        session, url, step = requests.Session(), self.cluster.url("runs/log-metric"), 0
        session.auth = ADMIN
        while not self.halt.is_set():
            body = {"run_id": self.run_id, "key": "loss", "value": 1.0 / (step + 1), "step": step,
                    "timestamp": int(time.time() * 1000)}
            start = time.monotonic()
            try:
                ok = session.post(url, json=body, headers={"Host": DOMAIN}, timeout=10).status_code == 200
            except requests.RequestException:
                ok = False
            self.calls.append((start, time.monotonic(), ok))
            if ok:
                self.acknowledged.append(step)
                step += 1
            time.sleep(self.interval)


def release_round(cluster: Cluster, version: str, args) -> dict:
    run_id = cluster.new_run()
    logger = StepLogger(cluster, run_id, args.interval)
    logger.start()
    try:
        time.sleep(args.quiet)
        begin = time.monotonic()
        took = cluster.deploy(version)
        time.sleep(args.settle)
        end = time.monotonic()
    finally:
        logger.halt.set()
        logger.join(30)
    cluster.wait_served()
    stored = cluster.history(run_id, "loss")
    calls = logger.calls
    window = [c for c in calls if begin <= c[0] < end]
    quiet = [c[1] - c[0] for c in calls if c[0] < begin and c[2]]
    # the longest time without an acknowledgement, from the last one before the deploy to the window's end
    acks = [c[1] for c in calls if c[2]]
    points = [a for a in acks if a < begin][-1:] + [a for a in acks if begin <= a < end] + [end]
    gap = max(b - a for a, b in zip(points, points[1:])) if len(points) > 1 else end - begin
    latency = [c[1] - c[0] for c in window if c[2]]
    acknowledged = set(logger.acknowledged)
    return {"took": took, "failed": sum(1 for c in calls if not c[2]), "calls": len(calls), "gap": gap,
            "p50": percentile(latency, 0.5), "p95": percentile(latency, 0.95),
            "max": max(latency, default=0.0), "quiet_p50": percentile(quiet, 0.5),
            "acknowledged": len(acknowledged), "read_back": len(set(stored)),
            "lost": len(acknowledged - set(stored)), "twice": len(stored) - len(set(stored)),
            "unacknowledged_stored": len(set(stored) - acknowledged)}


def throughput_round(cluster: Cluster, threads: int, seconds: float) -> dict:
    import requests

    runs = [cluster.new_run() for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)
    results: list[tuple[list[float], int]] = [([], 0)] * threads
    deadline = [0.0]

    def work(index: int) -> None:
        session, url, latencies, errors, step = requests.Session(), cluster.url("runs/log-metric"), [], 0, 0
        session.auth = ADMIN
        barrier.wait()
        while True:
            start = time.monotonic()
            if start >= deadline[0]:
                break
            body = {"run_id": runs[index], "key": "m", "value": float(step), "step": step,
                    "timestamp": int(time.time() * 1000)}
            try:
                ok = session.post(url, json=body, headers={"Host": DOMAIN}, timeout=30).status_code == 200
            except requests.RequestException:
                ok = False
            if ok:
                latencies.append(time.monotonic() - start)
                step += 1
            else:
                errors += 1
        results[index] = (latencies, errors)

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    deadline[0] = time.monotonic() + seconds
    barrier.wait()
    for w in workers:
        w.join(seconds + 60)
    latencies = [x for lat, _ in results for x in lat]
    return {"rate": len(latencies) / seconds, "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95), "errors": sum(e for _, e in results)}


@contextlib.contextmanager
def relay_to(gateway: str, port: int):
    proc = subprocess.Popen([sys.executable, "-c", RELAY, str(ROOT), gateway, str(port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            raise SystemExit(f"the relay to PostgreSQL did not start: {line!r}")
        yield int(line)
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2, help="releases per store")
    parser.add_argument("--tp-rounds", type=int, default=3, help="throughput rounds per cluster")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of one throughput round")
    parser.add_argument("--interval", type=float, default=0.05, help="pause between two logged steps")
    parser.add_argument("--quiet", type=float, default=5.0, help="logging before the release starts")
    parser.add_argument("--settle", type=float, default=3.0, help="logging after the release ended")
    parser.add_argument("--timings", choices=("test", "job"), default="test")
    parser.add_argument("--proxy-poll", type=float, default=0.5)
    args = parser.parse_args()
    os.environ.setdefault("MSH_QUIET", "1")

    def interrupted(*_):  # SIGTERM (a timeout) unwinds like Ctrl-C: everything started is stopped
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    try:
        releases, tp, context = measure(args)
    except BaseException as exc:  # pytest's skip (tests/services' unavailable()) is a BaseException
        if type(exc).__name__ == "Skipped":
            raise SystemExit(f"a service is unavailable: {exc}") from None
        raise
    report(args, releases, tp, context, time.monotonic() - started)


def measure(args):
    from services import engine, registry

    from tests.services import base_image, docker_engine, mlflow_image
    from tests.services import postgres as postgres_service
    from tests.services.nomad_cluster import MLFLOW_TIMINGS

    timings = {**MLFLOW_TIMINGS, "shutdown_delay": "2s"} if args.timings == "test" else {}
    versions = [FIRST] + [f"0.{100 + i}" for i in range(args.rounds)]
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="msh-bench-store-")))
        os.chmod(tmp, 0o755)
        eng = stack.enter_context(engine())
        client = eng.client()
        reg = stack.enter_context(registry())
        print("building the MLflow image ...", flush=True)
        image = mlflow_image.build(eng, reg, base_image.ensure(client))
        stack.callback(mlflow_image.remove, eng, image)
        repo = image.ref().rsplit(":", 1)[0]
        for version in versions:
            if version != FIRST:
                client.images.get(image.ref()).tag(repo, f"v{version}")
            client.images.push(repo, tag=f"v{version}")
        network = f"mshs{os.getpid() % 100000}"
        docker_engine.bridge_network(eng, network)
        stack.callback(docker_engine.remove_network, eng, network)
        ipam = client.networks.get(network).attrs["IPAM"]["Config"][0]
        gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
        pg = postgres_service.start()
        stack.callback(postgres_service.stop, pg)
        relay_port = stack.enter_context(relay_to(gateway, pg.port))
        context = {"postgres": pg.bin_dir.parent.name, "timings": timings}

        def database(name: str) -> str:
            pg.database(name)
            return pg.url(name, port=relay_port).replace("@127.0.0.1:", f"@{gateway}:")

        clusters = {}
        for label, store, count in (("sqlite-1", "sqlite", 1), ("postgres-2", "postgres", 2),
                                    ("postgres-1", "postgres", 1)):
            url = database(f"bench_{label.replace('-', '_')}_{uuid.uuid4().hex[:6]}") if store == "postgres" else None
            cluster = Cluster(label, tmp / label, stack, client, network, image, store, count, url, timings,
                              args.proxy_poll)
            print(f"{label}: first deploy (v{FIRST}) ...", flush=True)
            cluster.deploy(FIRST)
            cluster.wait_served()
            cluster.new_run()  # the experiment, and a first write
            clusters[label] = cluster

        releases = {"sqlite-1": [], "postgres-2": []}
        for i, version in enumerate(versions[1:]):
            order = list(releases) if i % 2 == 0 else list(reversed(releases))
            for label in order:
                print(f"{label}: release to v{version} under a logging client ...", flush=True)
                releases[label].append(release_round(clusters[label], version, args))
                print(f"  {releases[label][-1]}", flush=True)

        tp = {label: [] for label in ("postgres-1", "postgres-2", "sqlite-1")}
        for label in tp:  # warm-up, not counted
            throughput_round(clusters[label], args.threads, 2)
        for i in range(args.tp_rounds):
            labels = list(tp)
            for label in labels[i % 3:] + labels[:i % 3]:
                tp[label].append(throughput_round(clusters[label], args.threads, args.seconds))
                print(f"{label}: throughput {tp[label][-1]}", flush=True)
        print("stopping everything ...", flush=True)
    return releases, tp, context


NAMES = {"sqlite-1": "SQLite, 1 allocation", "postgres-1": "PostgreSQL, 1 allocation",
         "postgres-2": "PostgreSQL, 2 allocations"}


def report(args, releases, tp, context, wall) -> None:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.0f} ms"

    def ratio(value: float, base: float) -> str:
        return f"{value / base:.2f}x" if base else "-"

    rel = {label: {key: median([r[key] for r in rows]) for key in ("took", "gap", "p50", "p95", "quiet_p50")}
           for label, rows in releases.items()}
    base = rel["sqlite-1"]
    release_rows = []
    for label, rows in releases.items():
        m = rel[label]
        release_rows.append(
            f"| {NAMES[label]} | {m['took']:.1f} s | {sum(r['failed'] for r in rows)} of {sum(r['calls'] for r in rows)} "
            f"| {m['gap']:.2f} s ({ratio(m['gap'], base['gap'])}) | {ms(m['p50'])} | {ms(m['p95'])} "
            f"({ratio(m['p95'], base['p95'])}) | {ms(max(r['max'] for r in rows))} | {ms(m['quiet_p50'])} "
            f"| {sum(r['acknowledged'] for r in rows)} / {sum(r['read_back'] for r in rows)} "
            f"/ {sum(r['lost'] for r in rows)} / {sum(r['twice'] for r in rows)} |")
    tpm = {label: {key: median([r[key] for r in rows]) for key in ("rate", "p50", "p95")} for label, rows in tp.items()}
    tp_base = tpm["postgres-1"]["rate"]
    tp_rows = [f"| {NAMES[label]} | {m['rate']:.1f} | {ratio(m['rate'], tp_base)} | {ms(m['p50'])} | {ms(m['p95'])} "
               f"| {sum(r['errors'] for r in tp[label])} |" for label, m in tpm.items()]
    timings = (f"check every {context['timings']['check_interval']}, min_healthy_time "
               f"{context['timings']['min_healthy_time']}, shutdown_delay {context['timings']['shutdown_delay']}"
               if context["timings"] else "invoke.yaml's: check every 2s, min_healthy_time 10s, shutdown_delay 20s")
    command = (f"python3 bench/release_store.py --rounds {args.rounds} --tp-rounds {args.tp_rounds} "
               f"--threads {args.threads} --seconds {args.seconds:g}"
               + (" --timings job" if args.timings == "job" else "")
               + (f" --proxy-poll {args.proxy_poll:g}" if args.proxy_poll != 0.5 else ""))
    rounds = f"{args.rounds} release{'s' if args.rounds != 1 else ''}"
    body = f"""## Releases and logging throughput: SQLite against PostgreSQL, one and two allocations

Command: `{command}` (whole run: {wall / 60:.0f} min)
The real MLflow image in the Nomad double's allocations on the engine; nginx for Traefik, reading the
Consul double's catalogue every {args.proxy_poll:g} s (an allocation is served once its check passes);
PostgreSQL {context['postgres']} from Debian as the tests run it (fsync off); the project's deploy without host
step, build or backup; job timings: {timings}. One process is the client, the proxy's provider and the
Nomad and Consul doubles, on the same {os.cpu_count()} cores as the servers and the database.

A release (the same image under a new tag) while a client logs one metric step after another (`log-metric`
through the proxy, {args.interval * 1000:.0f} ms apart; a failed call is counted and its step sent again), over
{rounds} each; medians, ratios to SQLite. Failed calls: over all the logging ({args.quiet:g} s before the deploy
to {args.settle:g} s after it); latency: the acknowledged calls from the deploy's start to {args.settle:g} s after
its end; steps: acknowledged / read back / lost / stored twice, summed.

| store, allocations | release to healthy | failed calls | longest gap (ratio) | p50 | p95 (ratio) | max | p50 before the release | steps |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(release_rows)}

Logging throughput: {args.threads} client threads, each logging to its own run, `log-metric` back to back
through the proxy for {args.seconds:g} s; medians of {args.tp_rounds} rounds (the clusters in a rotating order).

| store, allocations | log-metric calls/s | ratio to PostgreSQL, 1 allocation | p50 | p95 | errors |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(tp_rows)}
"""
    write_section("release_store", body)


if __name__ == "__main__":
    main()
