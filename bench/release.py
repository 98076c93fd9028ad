"""`inv release --bump patch` to healthy, beside its floor, and the outage a logging client sees.

The real engine, registry, sshd, dnsmasq and nginx (tests/services), and the Nomad double whose client
runs the real MLflow image on the engine (tests/doubles/nomad). A project repository in a temp folder
is released once (cold, not measured), then ``--rounds`` times with ``--bump patch``, warm caches:

- release: wall time of `inv release --bump patch` (bump, commit, tag, build, push, latest, deploy:
  host check, plan, backup, register, follow to healthy), with the job's default timings;
- floor, measured just before in the same round: the new image started the way the double's client
  starts it (bridge network, mapped port, the host folders, memory limit, user) until /health answers,
  plus the job's min_healthy_time, the least any deploy of it can take;
- outage: a client logging one metric step every 0.1 s through the name and the proxy during the
  release; the longest time between two acknowledged steps, and whether an acknowledged step was lost.

``--timings`` compares job timings side by side in one run (each round releases once with each, in turn):
``NAME=check_interval/min_healthy_time``, by default the defaults before issue 28 (``10s/10s``) against
invoke.yaml's. ``--trace`` prints each release's output lines with the seconds since it started (where the
time goes).

Run: python3 bench/release.py [--rounds N] [--timings A=10s/10s,B=2s/10s] [--trace]
(root; ignores DOCKER_HOST: it starts its own dockerd)
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import ROOT, median, write_section

DOMAIN = "mlflow.lan"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timings", default=f"before=10s/10s,now={_default('check_interval')}/"
                                             f"{_default('min_healthy_time')}")
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    variants = [(name, *value.split("/")) for name, value in (v.split("=") for v in args.timings.split(","))]
    os.environ.pop("DOCKER_HOST", None)
    rows = {name: [] for name, *_ in variants}
    from services import nomad_user

    with tempfile.TemporaryDirectory(prefix="msh-bench-release-") as tmp, nomad_user():
        with Stack(Path(tmp), trace=args.trace) as stack:
            stack.release("minor")  # the first deploy: cold, not measured
            for _ in range(args.rounds):
                for name, interval, min_healthy in variants:
                    stack.timings(interval, min_healthy)
                    floor = stack.floor()
                    took, gap, failures, lost = stack.release_under_load("patch")
                    rows[name].append((took, floor, gap, failures, lost))
                    print(f"{name}: release {took:.1f}s, floor {floor:.1f}s, gap {gap:.1f}s", flush=True)
    report(args, variants, rows)


def _default(key: str) -> str:
    from mlflow_self_host.core.settings import Settings

    return str(Settings.load(root=ROOT, env={})[key])


class Stack:
    """Every service of the user's path, started for the benchmark and stopped after it."""

    def __init__(self, root: Path, trace: bool = False):
        self.root, self.trace = root, trace

    def timings(self, check_interval: str, min_healthy_time: str) -> None:
        """The job's check interval and min_healthy_time for the next releases (settings, as a user sets them)."""
        self.env.update(MSH_CHECK_INTERVAL=check_interval, MSH_MIN_HEALTHY_TIME=min_healthy_time)

    def __enter__(self):
        from services import engine

        from tests.doubles.nomad import NomadDouble
        from tests.host.conftest import make_nomad_host
        from tests.services import dns_server, docker_engine, project_repo, proxy, registry, ssh_server
        from tests.services import base_image

        self._engine_cm = engine()
        self.engine = self._engine_cm.__enter__()
        self.client = self.engine.client()
        self.network = f"mshb{os.getpid() % 100000}"
        docker_engine.bridge_network(self.engine, self.network)
        self.registry = registry.start(self.root / "registry")
        self.sshd = ssh_server.start(self.root / "sshd")
        self.dns = dns_server.start(self.root / "dnsmasq")
        self.double = NomadDouble(engine=self.client, network=self.network,
                                  client_config=self.root / "host" / "nomad.d" / "client.hcl")
        self.host = make_nomad_host(self.root / "host", self.sshd, self.double.address,
                                    job_file=str(ROOT / "nomad" / "mlflow.nomad.hcl"))
        (self.root / "host" / "restart-nomad.sh").write_text(
            f"#!/bin/sh\nexec curl -fsS -X POST -d '{{\"seconds\": 1}}' {self.double.address}/_double/agent/restart\n")
        self.double.client.reload()
        self.proxy = proxy.start(self.root / "proxy", self.double.address, poll=0.5)
        self.repo = project_repo.make(self.root / "project")
        self.image = f"msh-bench-release-{uuid.uuid4().hex[:6]}"
        self.env = self._env(base_image.ensure(self.client))
        return self

    def _env(self, base: str) -> dict:
        from tests.services import resolver

        from common import log_in_as_admin

        env = {k: v for k, v in os.environ.items() if not k.startswith(("MSH_", "NOMAD_", "PIHOLE_"))}
        env.update(log_in_as_admin())  # auth: basic: deploy's check and the bench's client log in
        keys = ("host", "ssh_port", "ssh_user", "ssh_key", "known_hosts", "nomad_client_config", "backend_path",
                "artifacts_path", "job_dir", "folder_owner", "folder_group", "nomad_restart_command",
                "nomad_health_timeout")
        env.update({f"MSH_{k.upper()}": str(self.host.settings[k]) for k in keys})
        env.update(DOCKER_HOST=self.engine.base_url, NOMAD_ADDR=self.double.address, MSH_REGISTRY=self.registry.address,
                   MSH_IMAGE=self.image, MSH_BASE_IMAGE=base, MSH_BACKUPS_PATH=str(self.root / "host" / "backups"),
                   MSH_DEPLOY_URL=f"http://{DOMAIN}:{self.proxy.port}/", MSH_DEPLOY_POLL="0.2",
                   MSH_DNS_BACKEND="dnsmasq", MSH_DNSMASQ_DIR=str(self.dns.conf_dir),
                   MSH_DNSMASQ_RESTART_COMMAND=self.dns.restart_command, MSH_DNS_SERVER="127.0.0.1",
                   MSH_DNS_PORT=str(self.dns.port))
        env.update(resolver.env_for_subprocess(self.dns.port))
        return env

    def inv(self, *args) -> float:
        """Wall seconds of `inv ARGS`; with ``trace``, each line of its output with the seconds it came at."""
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "invoke", *args], cwd=self.repo, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in proc.stdout:
            lines.append(f"{time.perf_counter() - start:6.1f}s {line.rstrip()}")
        code = proc.wait(timeout=1200)
        took = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"inv {' '.join(args)} failed ({code}):\n" + "\n".join(lines[-60:]))
        if self.trace:
            print(f"--- inv {' '.join(args)} ({self.env.get('MSH_CHECK_INTERVAL', '')}/"
                  f"{self.env.get('MSH_MIN_HEALTHY_TIME', '')}): {took:.1f}s", *lines, sep="\n", flush=True)
        return took

    def release(self, bump: str) -> float:
        if not (self.dns.conf_dir / "05-pihole-custom-cname.conf").exists():
            self.inv("dns")
        return self.inv("release", "--bump", bump)

    def release_under_load(self, bump: str):
        from mlflow.tracking import MlflowClient

        from tests.services.mlflow_load import SteadyLogger
        from tests.services.resolver import use_dns

        os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
        with use_dns(self.dns.port):
            client = MlflowClient(tracking_uri=f"http://{DOMAIN}:{self.proxy.port}/")
            experiment = client.get_experiment_by_name("bench") or client.get_experiment(
                client.create_experiment("bench"))
            run = client.create_run(experiment.experiment_id).info.run_id
            logger = SteadyLogger(client, run)
            logger.start()
            time.sleep(2)
            logger.reset_gap()
            took = self.release(bump)
            time.sleep(2)
            logger.stop()
            stored = {m.step for m in client.get_metric_history(run, "load")}
        lost = len(set(logger.acknowledged) - stored)
        return took, logger.longest_gap, logger.failures, lost

    def floor(self) -> float:
        """The version being released next, started as the double's client starts it, to /health, plus
        min_healthy_time: the least a deploy of it can take."""
        from mlflow_self_host.steps.job import jobfile
        from mlflow_self_host.core.settings import Settings
        from tests.doubles.nomad.client import SECOND
        from tests.doubles.nomad.jobspec import duration
        from tests.services import free_port

        settings = Settings.load(root=self.repo, env=self.env)
        version = (self.repo / "version.txt").read_text().strip()
        ref = settings.image_ref(version)  # built by the last release; the next patch rebuilds only labels
        job = jobfile.variables(settings, version)
        port = free_port()
        container = self.client.containers.create(
            ref, user=job["user"], environment={"MLFLOW_DOMAIN": DOMAIN}, ports={"5000/tcp": ("127.0.0.1", port)},
            volumes={str(self.root / "floor" / name): {"bind": f"/mnt/{name}", "mode": "rw"}
                     for name in ("backend_store", "artifacts")},
            mem_limit=f"{job['memory']}m", network=self.network)
        for name in ("backend_store", "artifacts"):
            folder = self.root / "floor" / name
            folder.mkdir(parents=True, exist_ok=True)
            os.chown(folder, 1000, 1000)
        ready = to_health(container, port)
        return ready + duration(job["min_healthy_time"], "min_healthy_time") / SECOND

    def __exit__(self, *exc):
        from tests.services import dns_server, docker_engine, proxy, registry, ssh_server

        self.double.stop()
        proxy.stop(self.proxy)
        dns_server.stop(self.dns)
        ssh_server.stop(self.sshd)
        registry.stop(self.registry)
        for image in self.client.images.list(name=f"{self.registry.address}/{self.image}"):
            for tag in image.tags:
                self.client.images.remove(tag, noprune=True)
        docker_engine.remove_network(self.engine, self.network)
        self._engine_cm.__exit__(*exc)


def to_health(container, port: int) -> float:
    """Seconds from starting ``container`` (created, its 5000 published on ``port``) until /health answers; it is
    removed afterwards."""
    import requests

    start = time.perf_counter()
    container.start()
    try:
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return time.perf_counter() - start
            except requests.RequestException:
                pass
            if time.perf_counter() - start > 300:
                raise SystemExit("the floor's server never answered /health")
            time.sleep(0.1)
    finally:
        container.remove(force=True)


def report(args, variants, rows) -> None:
    table, outage = [], []
    for name, interval, min_healthy in variants:
        took, floor = median([r[0] for r in rows[name]]), median([r[1] for r in rows[name]])
        gaps, lost = [r[2] for r in rows[name]], sum(r[4] for r in rows[name])
        table.append(f"| {name}: check every {interval}, min_healthy_time {min_healthy} | {floor:.1f} s | "
                     f"{took:.1f} s | {took / floor:.2f}x |")
        outage.append(f"{name}: the service did not answer for {median(gaps):.1f} s (median; longest "
                      f"{max(gaps):.1f} s), {sum(r[3] for r in rows[name])} calls failed and were retried, {lost} "
                      f"acknowledged step{'s were' if lost != 1 else ' was'} lost")
    body = f"""## Release to healthy, and the outage a client sees

Command: `python3 bench/release.py --rounds {args.rounds} --timings {args.timings}` (real engine, registry, sshd,
dnsmasq, nginx for Traefik; the Nomad double runs the real MLflow image; each round releases once with each
job timing, in turn; medians of {args.rounds} rounds)

| job timings | floor: the new image started to `/health`, plus min_healthy_time | `inv release --bump patch` to healthy (warm caches) | ratio to the floor |
| --- | --- | --- | --- |
{chr(10).join(table)}

A client logging one metric step every 0.1 s through the name and the proxy during each release:
{'; '.join(outage)}.
One allocation and one SQLite file: the replacement starts once the old server has stopped (Nomad waits
for the previous allocation on the node), so the outage is the new server's start plus the proxy's next
refresh (0.5 s here; Traefik's default is 15 s).
"""
    write_section("release", body)


if __name__ == "__main__":
    main()
