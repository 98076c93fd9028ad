"""The user's whole path, on the real parts, as a user types it.

A fresh Nomad client (client.hcl without volumes, reached over the real sshd) → `inv deploy --dry-run`
(changes nothing anywhere) → `inv configure-host`
→ `inv dns --backend dnsmasq` (the test dnsmasq) → `inv build push` (the real engine and registry) →
`inv deploy`: the Nomad double's client pulls the real MLflow image and runs it with the host folders
configure-host made. Then the MLflow client logs a run, a metric history and an artifact through the
name (resolved by the test dnsmasq) and the proxy (nginx configured from the service's traefik tags in
the double's catalogue, as Traefik's Nomad provider would be). Then `inv release --bump minor` while a
client keeps logging: every acknowledged metric must be in the store afterwards, and the test reports
how long the service did not answer. Last, a release whose image cannot start: exit 12, its stderr
shown, the previous image running again and answering through the proxy; and what users look at
after that: `inv status --json`, `inv logs`, `inv rollback`.
"""
from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.host.conftest import make_nomad_host, nomad_user  # noqa: F401 - the fixture
from tests.services import project_repo
from tests.services import proxy as proxy_service
from tests.services import resolver, user_path
from tests.services.mlflow_load import SteadyLogger
from tests.services.project_repo import git
from tests.services import ADMIN_PASSWORD  # auth: basic by default

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "mlflow.lan"
pytestmark = pytest.mark.slow



@pytest.fixture
def fresh_host(tmp_path, ssh_server, nomad_user, docker_engine_service, nomad_network):
    """A Nomad client that never saw configure-host, with the Nomad double running on it: its client
    reads the host's client.hcl, and `nomad_restart_command` restarts the double's agent."""
    from tests.doubles.nomad import NomadDouble

    root = tmp_path / "host"
    double = NomadDouble(engine=docker_engine_service.client(), network=nomad_network,
                         client_config=root / "nomad.d" / "client.hcl")
    try:
        host = make_nomad_host(root, ssh_server, double.address, job_file=str(ROOT / "nomad" / "mlflow.nomad.hcl"))
        restart = root / "restart-nomad.sh"
        restart.write_text(f"#!/bin/sh\necho \"$(id -un)\" >> {root / 'restarts.log'}\n"
                           f"exec curl -fsS -X POST -d '{{\"seconds\": 1}}' {double.address}/_double/agent/restart\n")
        double.client.reload()  # the agent was running with this client.hcl
        yield host, double
    finally:
        double.stop()


@pytest.fixture
def proxy(tmp_path, fresh_host):
    _, double = fresh_host
    served = proxy_service.start(tmp_path / "proxy", double.address, poll=0.5)
    yield served
    proxy_service.stop(served)


def test_the_whole_user_path(tmp_path, fresh_host, proxy, dns_server, registry, base_image, docker_engine_service,
                             monkeypatch, capsys):
    host, double = fresh_host
    repo = project_repo.make(tmp_path / "project")
    image = f"mlflow-path-{uuid.uuid4().hex[:8]}"
    url = f"http://{DOMAIN}:{proxy.port}/"
    env = user_path.env(host, double, docker_engine_service, registry, image, base_image, dns_server, url,
                        tmp_path / "host" / "data" / "backups", "05-mlflow-path.conf")

    inv = user_path.runner(repo, env)

    try:
        # 0. what would happen: nothing on the host, the registry or Nomad
        dry = inv("deploy", "--dry-run")
        assert "dry run: nothing was registered" in dry.stderr and '+ Job: "mlflow"' in dry.stderr
        assert "missing compatible host volumes" in dry.stderr  # the fresh client cannot place it yet
        assert double.registrations() == [] and "host_volume" not in host.client_config.read_text()
        assert registry.tags(image) == [] and host.restarts() == 0

        # 1. the host: volumes in client.hcl, folders for the image's user, Nomad restarted and reading them
        inv("configure-host")
        assert {"mlflow-backend-store", "mlflow-artifacts"} <= set(double.client.volumes)
        for folder in (host.backend, host.artifacts):
            assert (folder.stat().st_uid, folder.stat().st_gid) == (1000, 1000)
        assert host.restarts() == 1

        # 2. DNS: the name is a CNAME of the proxy's name on the dnsmasq
        dns = inv("dns")
        assert f"{DOMAIN} → CNAME traefik.lan → 127.0.0.1" in dns.stderr + dns.stdout

        # 3-4. build, push, deploy; deploy's own last check goes through the name and the proxy
        inv("build", "push")
        deployed = inv("deploy")
        assert f"deployed v0.99: job version 0, {url}" in deployed.stderr
        (alloc,) = double.running_allocs()
        assert double.container_of(alloc["ID"]).attrs["Config"]["Image"] == f"{registry.address}/{image}:v0.99"
        assert (tmp_path / "host" / "jobs" / "mlflow" / "mlflow.nomad.hcl").read_bytes() == \
            (ROOT / "nomad" / "mlflow.nomad.hcl").read_bytes()

        # again, with nothing new: no build, no push, no host change, nothing registered
        hcl_stat = host.client_config.stat()
        digest = registry.digest(image, "v0.99")
        again = inv("deploy")
        assert "already deployed: v0.99" in again.stderr
        assert "building" not in again.stderr and "pushed" not in again.stderr
        assert registry.digest(image, "v0.99") == digest and len(double.registrations()) == 1
        assert host.client_config.stat().st_mtime_ns == hcl_stat.st_mtime_ns and host.restarts() == 1

        # 5. a user logs through the name and the proxy
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")  # auth: basic, the default: the admin logs
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        with resolver.use_dns(dns_server.port):
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=url)
            _, run, artifact = user_path.log_work(client, "path", tmp_path)
            assert [m.step for m in client.get_metric_history(run, "loss")] == list(range(10))
            assert [f.path for f in client.list_artifacts(run)] == ["model.txt"]
            stored = list(host.artifacts.rglob("model.txt"))  # served artifacts: on the host, not here
            assert len(stored) == 1 and stored[0].read_text() == artifact.read_text()
            with sqlite3.connect(host.backend / "mlflow.db") as db:
                assert db.execute("SELECT count(*) FROM metrics WHERE run_uuid = ?", (run,)).fetchone()[0] == 10

            # 6. a release while a training job keeps logging
            logger = SteadyLogger(client, run)
            logger.start()
            time.sleep(2)
            started = time.monotonic()
            released = inv("release", "--bump", "minor")
            took = time.monotonic() - started
            time.sleep(2)
            logger.stop()
            assert "v0.100" in released.stdout + released.stderr
            (alloc,) = double.running_allocs()
            assert double.container_of(alloc["ID"]).attrs["Config"]["Image"].endswith(f"/{image}:v0.100")
            history = {m.step for m in client.get_metric_history(run, "load")}
            assert logger.acknowledged and set(logger.acknowledged) <= history, "an acknowledged metric was lost"
            with capsys.disabled():
                print(f"\nrelease --bump minor: {took:.1f}s; the logging client saw the service away for "
                      f"{logger.longest_gap:.1f}s at most ({logger.failures} failed calls, "
                      f"{len(logger.acknowledged)} steps acknowledged)")
            assert list(Path(env["MSH_BACKUPS_PATH"]).glob("mlflow-*-v0.99.db"))  # deploy backed up first

            # 7. a release whose image cannot start: caught, reverted, the previous image answers
            entrypoint = repo / "docker" / "entrypoint.sh"
            entrypoint.write_text(entrypoint.read_text().replace(
                "set -eu\n", "set -eu\necho 'mlflow-entrypoint: broken on purpose' >&2\nexit 1\n", 1))
            git(repo, "commit", "--quiet", "--all", "--message", "a bug")
            broken = inv("release", "--bump", "patch", expect=12)
            assert "mlflow-entrypoint: broken on purpose" in broken.stderr
            assert "rolled back" in broken.stderr
            (alloc,) = double.running_allocs()
            assert double.container_of(alloc["ID"]).attrs["Config"]["Image"].endswith(f"/{image}:v0.100")
            port = alloc["AllocatedResources"]["Shared"]["Ports"][0]["Value"]
            proxy.wait_for_route(DOMAIN, timeout=10, upstreams=[f"127.0.0.1:{port}"])
            answer = requests.get(url + "api/2.0/mlflow/experiments/search?max_results=5", timeout=10,
                                  auth=("admin", ADMIN_PASSWORD))
            assert answer.status_code == 200 and "path" in answer.text
            assert {m.step for m in client.get_metric_history(run, "load")} >= set(logger.acknowledged)

        # 8. what users look at afterwards
        status = json.loads(inv("status", "--json").stdout)
        assert status["job"]["version"] == 3 and status["job"]["image"].endswith(f"/{image}:v0.100")
        assert status["job"]["up_to_date"] is False and status["version_txt"] == "0.100.1"
        logs = inv("logs", "--stderr", "--lines", "3").stdout
        assert len(logs.splitlines()) == 3
        rollback = inv("rollback", "--to", "0", "--dry-run")
        assert "version 3" in rollback.stderr and "version 0" in rollback.stderr
        missing = inv("rollback", "--to", "9", expect=2)
        assert "error: job mlflow has no version 9 (versions: 0, 1, 2, 3)" in missing.stderr
        assert len(double.versions()) == 4

        # the record goes away again
        inv("dns", "--remove")
    finally:
        double.stop()  # its containers first, then the image tags (layers stay as build cache)
        engine = docker_engine_service.client()
        for tagged in engine.images.list(name=f"{registry.address}/{image}"):
            for tag in tagged.tags:
                engine.images.remove(tag, noprune=True)
