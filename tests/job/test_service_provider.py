"""The service is registered where the user's proxy reads it (issue 14).

The original recipe's job has a service without ``provider``: Nomad registers it in Consul, and the
user's Traefik routes from Consul's catalogue (its consulCatalog provider). These tests run `inv` as a
user types it against the Nomad double, whose client has a Consul agent (tests/doubles/consul.py) or
not, and the Traefik stand-in (tests/services/proxy.py) reading Consul's catalogue or Nomad's, with an
entry point that is not called ``web``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.steps.job import service_provider
from mlflow_self_host.core.settings import PROJECT_ROOT
from mlflow_self_host.core.version import read_version
from tests.job.conftest import job_settings
from tests.services import proxy as proxy_service
from tests.services import resolver
from tests.services.dns_server import PROXY_NAME
from tests.services.mlflow_image import clean_env

DOMAIN = f"mlflow-{uuid.uuid4().hex[:6]}.lan"  # the shared dnsmasq: a name no other test uses
TAG_ENTRYPOINTS = "traefik.http.routers.mlflow.entrypoints"


@pytest.fixture
def consul():
    from tests.doubles.consul import ConsulDouble

    with ConsulDouble() as double:
        yield double


@pytest.fixture
def consul_cluster(tmp_path, docker_engine_service, nomad_network, stub_images, consul):
    """The cluster of the job tests, its client with a Consul agent (as a node set up by the original recipe)."""
    from tests.services import nomad_cluster as cluster_service

    cluster = cluster_service.start(tmp_path / "consul-client", docker_engine_service, nomad_network, stub_images,
                                    consul=consul)
    cluster.nomad.cluster = cluster
    cluster.consul = consul
    yield cluster
    cluster.nomad.stop()


@pytest.fixture
def name(dns_server):
    """DOMAIN → CNAME traefik.lan → 127.0.0.1 on the test dnsmasq, as `inv dns` leaves it."""
    record = dns_server.conf_dir / f"30-{DOMAIN}.conf"
    record.write_text(f"cname={DOMAIN},{PROXY_NAME}\n")
    subprocess.run([dns_server.restart_command], check=True, capture_output=True)
    yield dns_server
    record.unlink()
    subprocess.run([dns_server.restart_command], check=True, capture_output=True)


def start_proxy(tmp_path, endpoint: str, provider: str, entrypoint: str = "http"):
    return proxy_service.start(tmp_path / f"proxy-{provider}", endpoint, poll=0.2, entrypoint=entrypoint,
                               provider=provider)


def inv(cluster, *args, expect=0, dns=None, **settings):
    """`inv ARGS` in the project, pointed at the cluster by MSH_ variables, as a user's shell would be."""
    env = clean_env()
    env.update(cluster.env(domain=DOMAIN, **settings))
    if dns is not None:
        env.update(resolver.env_for_subprocess(dns.port))
    done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == expect, f"inv {' '.join(args)} → {done.returncode}\n{done.stderr[-4000:]}"
    assert "Traceback" not in done.stderr
    return done


def service_of(double) -> dict:
    return double.job()["TaskGroups"][0]["Services"][0]


def checked(proxy) -> dict:
    """Settings that make deploy's last step ask MLflow through the name and this proxy."""
    return {"deploy_check": "true", "deploy_url": f"http://{DOMAIN}:{proxy.port}/", "deploy_check_timeout": 5}


def test_defaults_keep_the_original_traefik_reading_consul_working(consul_cluster, name, tmp_path):
    """(a) A client with Consul and a Traefik reading Consul's catalogue on an entry point named "http":
    `inv deploy` with the defaults registers the service in Consul, with no entrypoints tag, and the name
    answers through the proxy (deploy's own last check included)."""
    consul_cluster.publish(read_version(PROJECT_ROOT).text)
    proxy = start_proxy(tmp_path, consul_cluster.consul.address, "consulCatalog")
    try:
        done = inv(consul_cluster, "deploy", "--skip-host", "--skip-build", dns=name, **checked(proxy))
        assert "service provider: consul (auto: the Nomad client client-1 has Consul 1.17.1" in done.stderr
        assert f"deployed v{read_version(PROJECT_ROOT).text}: job version 0, http://{DOMAIN}:{proxy.port}/" \
            in done.stderr
        service = service_of(consul_cluster.nomad)
        assert service["Provider"] == "consul"
        assert not any(tag.startswith(TAG_ENTRYPOINTS) for tag in service["Tags"])
        group = consul_cluster.nomad.job()["TaskGroups"][0]
        assert {"LTarget": "${attr.consul.version}", "RTarget": ">= 1.8.0", "Operand": "semver"} in group["Constraints"]
        assert "mlflow" in consul_cluster.consul.catalog_services()
        assert consul_cluster.nomad.services == {}  # not in Nomad's own catalogue
        (alloc,) = consul_cluster.nomad.running_allocs()
        port = alloc["AllocatedResources"]["Shared"]["Ports"][0]["Value"]
        assert proxy.routes() == {DOMAIN: [f"127.0.0.1:{port}"]}
        (entry,) = consul_cluster.consul.health_service("mlflow")
        assert [c["Status"] for c in entry["Checks"]] == ["passing", "passing"]  # serfHealth, mlflow-health
        assert entry["Service"]["ID"] == f"_nomad-task-{alloc['ID']}-group-svc-mlflow-mlflow_http"
        assert consul_cluster.nomad.client.check_results(alloc["ID"]) == {}  # Consul's checks, not Nomad's
    finally:
        proxy_service.stop(proxy)


def test_forcing_nomad_takes_the_service_away_from_a_traefik_reading_consul(consul_cluster, name, tmp_path):
    """(b) The bug the issue reports: the same setup, service_provider=nomad: Nomad reports the job healthy,
    but the proxy reading Consul no longer routes the name. deploy warns before, shows it in the plan, and
    its last check fails (exit 13) instead of claiming success."""
    consul_cluster.publish(read_version(PROJECT_ROOT).text)
    proxy = start_proxy(tmp_path, consul_cluster.consul.address, "consulCatalog")
    try:
        inv(consul_cluster, "deploy", "--skip-host", "--skip-build", dns=name, **checked(proxy))
        proxy.wait_for_route(DOMAIN)

        done = inv(consul_cluster, "deploy", "--skip-host", "--skip-build", expect=13, dns=name,
                   service_provider="nomad", **checked(proxy))
        assert "service provider: nomad (env MSH_SERVICE_PROVIDER)" in done.stderr
        assert "the running job's service is in consul's catalogue; this deploy moves it to nomad's" in done.stderr
        assert 'Provider: "consul" => "nomad"' in done.stderr  # the plan's diff
        assert "Nomad reports the job healthy, but" in done.stderr
        job = consul_cluster.nomad.job()
        assert job["Stable"] is True and service_of(consul_cluster.nomad)["Provider"] == "nomad"
        assert "mlflow" not in consul_cluster.consul.catalog_services()
        assert [r["ServiceName"] for r in consul_cluster.nomad.services.values()] == ["mlflow"]
        proxy.wait_for_no_route(DOMAIN)
    finally:
        proxy_service.stop(proxy)


def test_auto_without_consul_is_nomad_and_consul_forced_there_cannot_be_placed(nomad_double, tmp_path):
    """(c) A client without Consul: auto means Nomad's own catalogue (`inv config` says why), and a proxy
    reading it routes the name; consul forced there: Nomad's implicit constraint filters the client (exit 10,
    the hint names the setting), nothing changes."""
    nomad_double.cluster.publish(read_version(PROJECT_ROOT).text)
    shown = json.loads(inv(nomad_double.cluster, "config", "--json").stdout)["service_provider"]
    assert shown["value"] == "nomad"
    assert shown["source"] == ("invoke.yaml, auto: the Nomad client client-1 has no Consul (datacenter DC0, with "
                               "the job's host volumes)")

    proxy = start_proxy(tmp_path, nomad_double.address, "nomad")
    try:
        done = inv(nomad_double.cluster, "deploy", "--skip-host", "--skip-build")
        assert "service provider: nomad (auto: the Nomad client client-1 has no Consul" in done.stderr
        assert service_of(nomad_double)["Provider"] == "nomad"
        assert proxy.wait_for_route(DOMAIN)
    finally:
        proxy_service.stop(proxy)

    refused = inv(nomad_double.cluster, "deploy", "--skip-host", "--skip-build", expect=10, service_provider="consul")
    assert "constraint ${attr.consul.version} semver >= 1.8.0 filtered 1 node" in refused.stderr
    assert "set service_provider=nomad" in refused.stderr
    assert service_of(nomad_double)["Provider"] == "nomad" and len(nomad_double.versions()) == 1


def test_the_entrypoints_tag_only_when_the_setting_names_entry_points(nomad_double, tmp_path):
    """(d) traefik_entrypoints=web: the tag is there, and a Traefik whose entry point is "http" ignores the
    router; empty again: no tag, and it serves the name on its entry point."""
    nomad_double.cluster.publish(read_version(PROJECT_ROOT).text)
    proxy = start_proxy(tmp_path, nomad_double.address, "nomad")
    try:
        inv(nomad_double.cluster, "deploy", "--skip-host", "--skip-build", traefik_entrypoints="web")
        assert f"{TAG_ENTRYPOINTS}=web" in service_of(nomad_double)["Tags"]
        assert nomad_double.services  # registered in the catalogue the proxy reads...
        for _ in range(5):
            proxy.refresh()
        assert proxy.routes() == {}  # ...but not on its entry point

        done = inv(nomad_double.cluster, "deploy", "--skip-host", "--skip-build", traefik_entrypoints="")
        assert f'- Tags[2]: "{TAG_ENTRYPOINTS}=web"' in done.stderr
        assert not any(tag.startswith(TAG_ENTRYPOINTS) for tag in service_of(nomad_double)["Tags"])
        proxy.wait_for_route(DOMAIN)

        inv(nomad_double.cluster, "deploy", "--skip-host", "--skip-build", traefik_entrypoints=" http, websecure")
        assert f"{TAG_ENTRYPOINTS}=http,websecure" in service_of(nomad_double)["Tags"]
        proxy.wait_for_route(DOMAIN)  # it names the proxy's entry point (among others)
    finally:
        proxy_service.stop(proxy)
    bad = inv(nomad_double.cluster, "deploy", "--skip-host", "--skip-build", expect=1, traefik_entrypoints="web secure")
    assert "traefik_entrypoints must name Traefik entry points" in bad.stderr


def test_doctor_shows_the_running_jobs_provider_and_consul_on_the_client(consul_cluster):
    """(e) `inv doctor`: which catalogue the running job's service is in, and whether the client has Consul."""
    consul_cluster.publish(read_version(PROJECT_ROOT).text)
    inv(consul_cluster, "deploy", "--skip-host", "--skip-build")
    done = inv(consul_cluster, "doctor", "--json", expect=1, doctor_timeout=5)  # no SSH host here: red rows
    rows = {row["name"]: row for row in json.loads(done.stdout)["checks"]}
    assert rows["service provider"]["ok"]
    assert rows["service provider"]["found"].startswith("consul (the running job); deploy keeps it there (auto: "
                                                        "the Nomad client client-1 has Consul 1.17.1")
    assert rows["Consul on the client"] == {"name": "Consul on the client", "ok": True, "found": "yes, 1.17.1",
                                            "fix": ""}

    moved = inv(consul_cluster, "doctor", "--json", expect=1, doctor_timeout=5, service_provider="nomad")
    rows = {row["name"]: row for row in json.loads(moved.stdout)["checks"]}
    assert rows["service provider"]["found"].startswith("consul (the running job); deploy would move it to nomad")
    assert "set service_provider=consul" in rows["service provider"]["fix"]


def test_doctor_fails_consul_forced_on_a_client_without_it(nomad_double):
    from mlflow_self_host.flows import doctor

    rows = {r.name: r for r in doctor.check_nomad(job_settings(nomad_double, service_provider="consul"), 10)}
    assert rows["service provider"].ok
    assert rows["service provider"].found.startswith("no job registered; deploy registers it in consul")
    consul_row = rows["Consul on the client"]
    assert not consul_row.ok and consul_row.found.startswith("no (Nomad found no Consul agent")
    assert "set service_provider=nomad" in consul_row.fix


def test_auto_follows_the_host_in_a_mixed_cluster_and_the_registered_job_without_node_read(nomad_double, consul):
    """Some clients with Consul, some without: the host setting's node decides. A token that may not read
    the nodes: the registered job's provider, so a deploy moves nothing."""
    from tests.doubles.nomad import ALL_CAPS

    config = nomad_double.cluster.client_config
    nomad_double.add_node("m700", client_config=config, consul=consul)
    settings = job_settings(nomad_double)
    assert service_provider.wanted(settings).value == "consul"  # the host setting (m700) has Consul
    assert service_provider.wanted(settings.with_overrides({"host": "client-1"})).value == "nomad"
    assert "client-1 (no Consul), m700 (Consul 1.17.1)" in service_provider.wanted(
        settings.with_overrides({"host": "elsewhere"})).source
    with pytest.raises(UserError, match="service_provider must be auto, consul or nomad"):
        service_provider.wanted(settings.with_overrides({"service_provider": "traefik"}))

    nomad_double.cluster.publish("0.99")
    from mlflow_self_host.flows import deploy as job_deploy

    job_deploy.deploy(settings.with_overrides({"service_provider": "consul"}), "0.99", skip_host=True,
                      skip_build=True, backup=False)
    assert nomad_double.running_allocs()[0]["NodeName"] == "m700"  # the implicit constraint: where Consul is
    nomad_double.acl_tokens = {"jobs-only": {"default": ALL_CAPS}}
    blind = job_settings(nomad_double, env={"NOMAD_TOKEN": "jobs-only"})
    choice = service_provider.wanted(blind)
    assert choice.value == "consul" and choice.source.startswith("auto: the registered job's (the Nomad clients "
                                                                 "could not be read")
