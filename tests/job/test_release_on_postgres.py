"""store: postgres for real: the MLflow image in two allocations of the Nomad double, on the real PostgreSQL,
behind the proxy (nginx routed from Consul's catalogue, as Traefik's consulCatalog provider does). A release
while a client logs metrics through the proxy fails no request and loses no metric; a killed allocation's
partner keeps serving."""
from __future__ import annotations

import ipaddress
import socket
import threading
import time
import uuid

import pytest
import requests

from mlflow_self_host.flows import deploy as job_deploy
from mlflow_self_host.core.settings import PROJECT_ROOT, Settings
from tests.services import proxy as proxy_service
from tests.services import wait_for
from tests.services.nomad_cluster import MLFLOW_TIMINGS, layout
from tests.services import ADMIN_PASSWORD  # auth: basic by default

ADMIN = ("admin", ADMIN_PASSWORD)

pytestmark = pytest.mark.slow
DOMAIN = "mlflow.lan"


class Relay:
    """TCP from the containers' bridge (its gateway, on this machine) to PostgreSQL on loopback: Nomad's
    tasks reach the database over the network, the test cluster only listens on 127.0.0.1."""

    def __init__(self, listen_host: str, target: tuple[str, int]):
        self.target = target
        self.server = socket.create_server((listen_host, 0))
        self.port = self.server.getsockname()[1]
        self.stopped = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.stopped.set()
        self.server.close()
        for s in self.sockets:
            s.close()


@pytest.fixture
def cluster(tmp_path, mlflow_image, postgres_server, docker_engine_service, nomad_network):
    from tests.doubles.consul import ConsulDouble
    from tests.doubles.nomad import NomadDouble

    client = docker_engine_service.client()
    ipam = client.networks.get(nomad_network).attrs["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))  # the bridge's own
    relay = Relay(gateway, ("127.0.0.1", postgres_server.port))
    name = f"release_{uuid.uuid4().hex[:8]}"
    postgres_server.database(name)  # empty: the first allocations make MLflow's schema
    url = postgres_server.url(name, port=relay.port).replace("@127.0.0.1:", f"@{gateway}:")
    # the same image as a second version: a release that changes only the tag
    ref = mlflow_image.ref()
    repo, _ = ref.rsplit(":", 1)
    client.images.get(ref).tag(repo, "v0.100")
    for tag in ("v0.99", "v0.100"):
        client.images.push(repo, tag=tag)
    root = tmp_path / "host"
    layout(root)
    consul = ConsulDouble()
    double = NomadDouble(engine=client, network=nomad_network, client_config=root / "nomad.d" / "client.hcl",
                         consul=consul)
    proxy = proxy_service.start(tmp_path / "proxy", consul.address, poll=0.5, provider="consulCatalog")
    settings = Settings.load(root=PROJECT_ROOT, env={"MSH_DATABASE_URL": url,
                                                     "MSH_MLFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD},
                             overrides={
        **mlflow_image.settings_overrides, "nomad_addr": double.address, "store": "postgres",
        "service_provider": "consul", "deploy_check": False, "deploy_poll": "0.2", "deploy_timeout": 240,
        "backend_path": str(root / "data" / "mlflow" / "backend"),
        "artifacts_path": str(root / "data" / "mlflow" / "artifacts"), **MLFLOW_TIMINGS,
        "shutdown_delay": "2s"})  # above the proxy's 0.5 s catalogue poll, as 20 s is above Traefik's 15 s
    try:
        yield settings, double, proxy
    finally:
        proxy_service.stop(proxy)
        double.stop()
        consul.stop()
        relay.stop()
        client.images.remove(f"{repo}:v0.100", noprune=True)


def deploy(settings, version):
    return job_deploy.deploy(settings, version, skip_host=True, skip_build=True, backup=False)


def api(proxy, path):
    return f"http://127.0.0.1:{proxy.port}/api/2.0/mlflow/{path}"


class MetricLogger(threading.Thread):
    """A training job logging one metric step after another through the proxy, no retries: every answer
    that is not 200 is a failed request."""

    def __init__(self, proxy, run_id):
        super().__init__(daemon=True)
        self.proxy, self.run_id = proxy, run_id
        self.logged, self.failed = [], []
        self.stop = threading.Event()
        self.session = requests.Session()
        self.session.auth = ADMIN  # auth: basic (the default): the admin logs the metrics

    def run(self):
        step = 0
        while not self.stop.is_set():
            body = {"run_id": self.run_id, "key": "loss", "value": 1.0 / (step + 1), "step": step,
                    "timestamp": int(time.time() * 1000)}
            try:
                response = self.session.post(api(self.proxy, "runs/log-metric"), json=body, timeout=10,
                                             headers={"Host": DOMAIN})
                (self.logged if response.status_code == 200 else self.failed).append(
                    step if response.status_code == 200 else (step, response.status_code, response.text[:100]))
            except requests.RequestException as exc:
                self.failed.append((step, "error", str(exc)[:100]))
            step += 1
            time.sleep(0.02)


def history(proxy, run_id) -> list[int]:
    response = requests.get(api(proxy, "metrics/get-history"), auth=ADMIN,
                            params={"run_id": run_id, "metric_key": "loss", "max_results": 100000},
                            headers={"Host": DOMAIN}, timeout=30)
    response.raise_for_status()
    return sorted(m["step"] for m in response.json().get("metrics", []))


def test_a_release_and_a_killed_allocation_fail_no_request(cluster):
    settings, double, proxy = cluster
    assert deploy(settings, "0.99").status == "deployed"
    allocs = double.running_allocs()
    assert len(allocs) == 2
    # two allocations made MLflow's tables and the auth app's in an empty database, one at a time: none crashed
    assert [a["TaskStates"]["mlflow_app"]["Restarts"] for a in allocs] == [0, 0]
    proxy.wait_for_route(DOMAIN, timeout=30)
    wait_for(lambda: len(proxy.routes().get(DOMAIN, [])) == 2, 30, "both allocations behind the proxy")
    headers = {"Host": DOMAIN}
    experiment = requests.post(api(proxy, "experiments/create"), json={"name": "release"}, headers=headers, auth=ADMIN,
                               timeout=10).json()["experiment_id"]
    run_id = requests.post(api(proxy, "runs/create"), json={"experiment_id": experiment}, headers=headers, auth=ADMIN,
                           timeout=10).json()["run"]["info"]["run_id"]

    # 1. a release while the client logs: no failed request, nothing lost
    logger = MetricLogger(proxy, run_id)
    logger.start()
    try:
        result = deploy(settings, "0.100")
        time.sleep(1)
    finally:
        logger.stop.set()
        logger.join()
    assert result.status == "deployed"
    assert not logger.failed, (logger.failed[:5], proxy.error_log()[-3000:])
    assert len(logger.logged) > 50
    assert history(proxy, run_id) == logger.logged
    new = double.running_allocs()
    assert len(new) == 2 and {a["JobVersion"] for a in new} == {1}

    # 2. one allocation's container killed: the other keeps serving (directly at every moment; through the
    # proxy once the dead one's check fails and it leaves the route), and Nomad restarts the killed task
    wait_for(lambda: len(proxy.routes().get(DOMAIN, [])) == 2, 30, "both new allocations behind the proxy")
    victim, survivor = new
    port = next(p["Value"] for p in survivor["AllocatedResources"]["Shared"]["Ports"])
    double.container_of(victim["ID"]).kill()
    direct, through = [], []
    deadline = time.monotonic() + 6  # and 40 rounds at least: with auth each request is a password check (~0.15 s)
    while time.monotonic() < deadline or len(through) < 40:
        direct.append(requests.get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1",
                                   auth=ADMIN,
                                   headers=headers, timeout=5).status_code)
        through.append(requests.get(api(proxy, "experiments/search?max_results=1"), headers=headers, auth=ADMIN,
                                    timeout=5).status_code)
        time.sleep(0.05)
    assert set(direct) == {200}
    assert through[-20:] == [200] * 20  # the proxy serves from the survivor once the dead one left
    assert history(proxy, run_id) == logger.logged  # the database is shared: nothing was on the killed one
    wait_for(lambda: len(proxy.routes().get(DOMAIN, [])) == 2, 60, "the killed task restarted by Nomad")
