"""https: true for real (issue 29): the project's MLflow image with auth on, on the Nomad double, behind the proxy
stand-in (nginx routed from Nomad's catalogue as Traefik's nomad provider) with a TLS entry point (websecure) whose
certificate a CA made in the test signed; deployed and used through `inv` as a user types it, and through the name.

One deploy: deploy's own check and `inv users` verify the certificate with ca_file; a user's MLflow client with
MLFLOW_TRACKING_SERVER_CERT_PATH logs a run, a metric and an artifact through https://{domain}:{port}/; plain HTTP is
redirected to https:// (301, 308 for a POST); `inv smoke` passes with the CA and, with another CA as ca_file, is
one red line naming ca_file, exit 18; `inv doctor` shows the certificate (red with the other CA).
(plain_http: refuse has no router for plain HTTP: tests/job/test_https_tags.py.)
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from mlflow_self_host.core.errors import ExitCode
from tests.job import test_auth as auth_test
from tests.job.test_auth import ALICE, ALICE_PW, CLIENT
from tests.job.test_service_provider import DOMAIN, name  # noqa: F401 - the name fixture
from tests.services import ADMIN_PASSWORD, clean_env, resolver, tls
from tests.services import proxy as proxy_service

pytestmark = pytest.mark.slow
API = "api/2.0/mlflow/experiments/search?max_results=1"


@pytest.fixture
def https_cluster(nomad_double, mlflow_image, docker_engine_service, tmp_path):
    """The job tests' cluster with the real MLflow image (pushed), the proxy with a plain entry point (http) and a
    TLS one (websecure) serving a certificate for DOMAIN from the test's CA; another CA that signed nothing of it."""
    repo, tag = mlflow_image.ref().rsplit(":", 1)
    docker_engine_service.client().images.push(repo, tag=tag)
    ca, other = tls.make_ca(tmp_path / "ca"), tls.make_ca(tmp_path / "other-ca", "another CA")
    certificate = tls.issue(ca, tmp_path / "proxy-cert", [DOMAIN])
    proxy = proxy_service.start(tmp_path / "proxy", nomad_double.address, poll=0.2, entrypoint="http",
                                tls_entrypoint="websecure", certificate=certificate)
    try:
        yield nomad_double, proxy, ca, other, repo
    finally:
        proxy_service.stop(proxy)


def inv(double, proxy, dns, *args, **settings):
    """`inv ARGS` as test_auth runs it (no traceback, no secret in the output), https on, deploy_url the TLS one."""
    return auth_test.inv(double, proxy, dns, *args, **{"https": "true",
                                                       "deploy_url": f"https://{DOMAIN}:{proxy.tls_port}/", **settings})


def as_alice(proxy, dns, ca_path) -> list[str]:
    env = {**clean_env(), **resolver.env_for_subprocess(dns.port),
           "MLFLOW_TRACKING_URI": f"https://{DOMAIN}:{proxy.tls_port}/",
           "MLFLOW_TRACKING_USERNAME": ALICE, "MLFLOW_TRACKING_PASSWORD": ALICE_PW,
           "MLFLOW_TRACKING_SERVER_CERT_PATH": str(ca_path), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    done = subprocess.run([sys.executable, "-c", CLIENT, "log", "alice-https"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def plain(proxy, method: str, path: str):
    return requests.request(method, f"http://127.0.0.1:{proxy.port}/{path}", headers={"Host": DOMAIN},
                            auth=("admin", ADMIN_PASSWORD), allow_redirects=False, timeout=10)


def red_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_https_through_the_proxy_with_a_private_ca(https_cluster, name):
    double, proxy, ca, other, repo = https_cluster
    cluster = dict(image=repo.split("/", 1)[1], ca_file=ca.path)
    done = inv(double, proxy, name, "deploy", "--skip-host", "--skip-build", **cluster)
    url = f"https://{DOMAIN}:{proxy.tls_port}/"
    assert f"deployed v0.99: job version 0, {url}" in done.stderr  # deploy's check, verified with ca_file
    assert proxy.routes(tls=True) == {DOMAIN: proxy.wait_for_route(DOMAIN, tls=True)}
    assert proxy.routes() == {}  # plain HTTP: the redirect only
    tags = double.job()["TaskGroups"][0]["Services"][0]["Tags"]
    assert "traefik.http.routers.mlflow.tls=true" in tags

    # plain HTTP is redirected to https:// (Traefik's redirectScheme: the request's port dropped)
    get, post = plain(proxy, "GET", API), plain(proxy, "POST", "api/2.0/mlflow/experiments/create")
    assert (get.status_code, get.headers["Location"]) == (301, f"https://{DOMAIN}/{API}")
    assert (post.status_code, post.headers["Location"]) == (308, f"https://{DOMAIN}/api/2.0/mlflow/experiments/create")

    # a user added through https, then her client logs a run, a metric and an artifact through the name
    inv(double, proxy, name, "users", "--add", ALICE, extra={"MSH_USER_PASSWORD": ALICE_PW}, **cluster)
    _, _, loss, back, uri = as_alice(proxy, name, ca.path)
    assert (loss, back) == ("0.25", "hello") and uri.startswith("mlflow-artifacts:")

    # inv smoke: passes with the CA (its client gets it as MLFLOW_TRACKING_SERVER_CERT_PATH); another CA: exit 18
    smoke = inv(double, proxy, name, "smoke", "--url", url, **cluster)
    assert f"smoke test passed: {url}" in smoke.stderr
    wrong = inv(double, proxy, name, "smoke", "--url", url, expect=ExitCode.CERTIFICATE,
                **{**cluster, "ca_file": other.path})
    (line,) = red_lines(wrong.stderr)
    assert line.startswith(f"error: {url}: its TLS certificate is refused (") and f"ca_file {other.path}" in line
    assert "set ca_file to the PEM of the CA" in wrong.stderr

    # doctor's certificate row: the subject, the issuer, the days left; red with the other CA
    rows = {r["name"]: r for r in json.loads(inv(double, proxy, name, "doctor", "--json", expect=1,
                                                 doctor_timeout=8, **cluster).stdout)["checks"]}
    assert rows["certificate"]["ok"], rows["certificate"]
    assert rows["certificate"]["found"].startswith(f"CN={DOMAIN}, by CN=mlflow-self-host test CA, until ")
    assert rows["certificate"]["found"].endswith("(19 days left)")
    assert rows["service URL"]["ok"], rows["service URL"]  # through https, verified with ca_file
    rows = {r["name"]: r for r in json.loads(inv(double, proxy, name, "doctor", "--json", expect=1, doctor_timeout=8,
                                                 **{**cluster, "ca_file": other.path}).stdout)["checks"]}
    assert not rows["certificate"]["ok"] and "unable to get local issuer certificate" in rows["certificate"]["found"]
    assert not rows["service URL"]["ok"] and "ca_file" in rows["service URL"]["fix"]

    # https off again: the plan says what clients must use now, from the registered job's tags (a dry run)
    off = inv(double, proxy, name, "deploy", "--skip-host", "--skip-build", "--dry-run", **{**cluster, "https": "false"})
    assert f"clients must now use http://{DOMAIN}/ (MLFLOW_TRACKING_URI)" in off.stderr
    assert double.job()["Version"] == 0
