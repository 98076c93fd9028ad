"""The server's Prometheus endpoint (setting metrics): the real image deployed on the Nomad double, its service
tagged for a Prometheus reading Nomad's catalogue, /metrics scraped through the proxy (nginx routed from that
catalogue, as Traefik's nomad provider does), and doctor's `metrics` row reading it there."""
from __future__ import annotations

import subprocess
import uuid

import pytest
import requests

from mlflow_self_host.core.settings import PROJECT_ROOT, Settings
from mlflow_self_host.flows import deploy as job_deploy
from mlflow_self_host.flows import doctor
from tests.services import proxy as proxy_service
from tests.services import resolver, wait_for
from tests.services.dns_server import PROXY_NAME
from tests.services.nomad_cluster import MLFLOW_TIMINGS, layout

pytestmark = pytest.mark.slow
DOMAIN = f"metrics-{uuid.uuid4().hex[:6]}.lan"  # the shared dnsmasq: a name no other test uses


@pytest.fixture
def name(dns_server):
    """DOMAIN → CNAME traefik.lan → 127.0.0.1 on the test dnsmasq, as `inv dns` leaves it; resolved in this
    process while the test runs."""
    record = dns_server.conf_dir / f"30-{DOMAIN}.conf"
    record.write_text(f"cname={DOMAIN},{PROXY_NAME}\n")
    subprocess.run([dns_server.restart_command], check=True, capture_output=True)
    with resolver.use_dns(dns_server.port):
        yield dns_server
    record.unlink()
    subprocess.run([dns_server.restart_command], check=True, capture_output=True)


@pytest.fixture
def cluster(tmp_path, mlflow_image, docker_engine_service, nomad_network):
    from tests.doubles.nomad import NomadDouble

    repo, tag = mlflow_image.ref().rsplit(":", 1)
    docker_engine_service.client().images.push(repo, tag=tag)  # built once per session; deploy pulls it
    root = tmp_path / "host"
    layout(root)
    double = NomadDouble(engine=docker_engine_service.client(), network=nomad_network,
                         client_config=root / "nomad.d" / "client.hcl")
    proxy = proxy_service.start(tmp_path / "proxy", double.address, poll=0.5, provider="nomad")

    def settings(**more) -> Settings:
        return Settings.load(root=PROJECT_ROOT, env={}, overrides={
            **mlflow_image.settings_overrides, "nomad_addr": double.address, "service_provider": "nomad",
            "deploy_check": False, "deploy_poll": "0.2", "deploy_timeout": 240, "domain": DOMAIN,
            "auth": "none",  # the scrapes here send no credentials (with auth: basic a scrape needs basic_auth)
            "deploy_url": f"http://{DOMAIN}:{proxy.port}/",
            "backend_path": str(root / "data" / "mlflow" / "backend"),
            "artifacts_path": str(root / "data" / "mlflow" / "artifacts"), **MLFLOW_TIMINGS, **more})

    try:
        yield settings, double, proxy
    finally:
        proxy_service.stop(proxy)
        double.stop()


def scrape(proxy) -> str:
    # Through the proxy with the domain's Host header, as a Prometheus outside the cluster would reach it
    response = requests.get(f"http://127.0.0.1:{proxy.port}/metrics", headers={"Host": DOMAIN}, timeout=10)
    assert response.status_code == 200, response.text[:300]
    return response.text


def test_metrics_are_served_tagged_and_scraped_through_the_proxy(cluster, name):
    settings, double, proxy = cluster
    job_deploy.deploy(settings(), "0.99", skip_host=True, skip_build=True, backup=False)
    service = double.job()["TaskGroups"][0]["Services"][0]
    assert {"prometheus.io/scrape=true", "prometheus.io/path=/metrics"} <= set(service["Tags"])
    env = double.job()["TaskGroups"][0]["Tasks"][0]["Env"]
    assert env["MLFLOW_EXPOSE_PROMETHEUS"] == "true"
    proxy.wait_for_route(DOMAIN, timeout=60)

    for _ in range(3):
        requests.get(f"http://127.0.0.1:{proxy.port}/api/2.0/mlflow/experiments/search",
                     params={"max_results": 5}, headers={"Host": DOMAIN}, timeout=10)
    wait_for(lambda: "mlflow_http_request_total" in scrape(proxy), 30, "the request counter")
    assert doctor.request_total(scrape(proxy)) >= 3

    (row,) = list(doctor.check_metrics(settings(), 10))
    assert row.ok and row.found.endswith("requests counted"), row

    # metrics: false: no endpoint, no tags; doctor says it is off
    job_deploy.deploy(settings(metrics=False), "0.99", skip_host=True, skip_build=True, backup=False)
    service = double.job()["TaskGroups"][0]["Services"][0]
    assert not any(tag.startswith("prometheus.io/") for tag in service["Tags"])
    assert double.job()["TaskGroups"][0]["Tasks"][0]["Env"]["MLFLOW_EXPOSE_PROMETHEUS"] == "false"
    (row,) = list(doctor.check_metrics(settings(metrics=False), 10))
    assert row.ok and row.found == "off (setting metrics: false)"
    # the setting on, the job without (once the new allocation serves): red
    wait_for(lambda: not list(doctor.check_metrics(settings(), 10))[0].ok, 120, "the new allocation without /metrics")
    (row,) = list(doctor.check_metrics(settings(), 10))
    assert not row.ok and "inv deploy" in row.fix
