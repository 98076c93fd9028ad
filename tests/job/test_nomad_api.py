"""nomad_api: the client from the settings (address, token, namespace, region, TLS) and its errors."""
from __future__ import annotations

import socket
import subprocess

import pytest

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.adapters import nomad_api
from tests.doubles.nomad import NomadDouble
from tests.job.conftest import job_settings


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "agent.pem", folder / "agent-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_double(certificate):
    double = NomadDouble(tls=certificate)
    yield double
    double.stop()


def leader(settings):
    n = nomad_api.client(settings)
    return nomad_api.call(settings, "reading the leader", n.status.leader.get_leader)


def test_https_is_verified_by_default(tls_double):
    settings = job_settings(tls_double)
    with pytest.raises(UserError) as caught:
        leader(settings)
    assert caught.value.message.startswith(f"TLS with the Nomad agent at {tls_double.address} failed")
    assert "NOMAD_CACERT" in caught.value.hint


def test_nomad_cacert_from_the_environment_verifies_the_agent(tls_double, certificate):
    settings = job_settings(tls_double, env={"NOMAD_CACERT": str(certificate[0])})
    assert leader(settings) == "127.0.0.1:4647"


def test_skip_verify_is_an_explicit_opt_in(tls_double):
    assert leader(job_settings(tls_double, env={"NOMAD_SKIP_VERIFY": "true"})) == "127.0.0.1:4647"


def test_client_certificate_needs_cert_and_key(nomad_double, certificate):
    with pytest.raises(UserError) as caught:
        nomad_api.client(job_settings(nomad_double, env={"NOMAD_CLIENT_CERT": str(certificate[0])}))
    assert "both NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY" in caught.value.message


def test_token_namespace_and_region_reach_the_agent(nomad_double):
    nomad_double.acl_tokens = {"t0ken": "management"}
    nomad_double.namespaces.add("ml")
    settings = job_settings(nomad_double, env={"NOMAD_TOKEN": "t0ken", "NOMAD_NAMESPACE": "ml",
                                               "NOMAD_REGION": "global"})
    n = nomad_api.client(settings)
    nomad_api.call(settings, "listing jobs", n.jobs.get_jobs)
    method, path, query, body = nomad_double.requests[-1]
    assert (path, query.get("namespace"), query.get("region")) == ("/v1/jobs", "ml", "global")


def test_a_wrong_region_is_nomads_error_not_a_crash(nomad_double):
    settings = job_settings(nomad_double, nomad_region="mars")
    n = nomad_api.client(settings)
    with pytest.raises(UserError) as caught:
        nomad_api.call(settings, "listing jobs", n.jobs.get_jobs)
    assert caught.value.message == "Nomad: listing jobs failed (HTTP 500): No path to region"


def test_an_agent_that_never_answers_times_out(nomad_double):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        address = f"http://127.0.0.1:{listener.getsockname()[1]}"
        settings = job_settings(address)
        n = nomad_api.client(settings, timeout=1)
        with pytest.raises(UserError) as caught:
            nomad_api.call(settings, "reading the leader", n.status.leader.get_leader)
    assert caught.value.message == f"the Nomad agent at {address} did not answer in time (reading the leader)"


def test_a_bad_token_is_reported_without_showing_it(nomad_double):
    nomad_double.acl_tokens = {"right": "management"}
    settings = job_settings(nomad_double, env={"NOMAD_TOKEN": "wr0ng-secret"})
    n = nomad_api.client(settings)
    with pytest.raises(UserError) as caught:
        nomad_api.call(settings, "listing jobs", n.jobs.get_jobs)
    assert "lacks permission (ACL token not found)" in caught.value.message
    assert "wr0ng-secret" not in str(caught.value)


def test_an_address_without_scheme_is_http(nomad_double):
    assert nomad_api.address(job_settings(nomad_double.address.removeprefix("http://"))) == nomad_double.address


def test_nomads_multierror_is_said_by_its_reasons():
    from mlflow_self_host.adapters.nomad_api import one_line

    assert one_line("1 error occurred:\n\t* Missing job task groups\n\n") == "Missing job task groups"
    assert one_line("2 errors occurred:\n\t* Task group svc validation failed\n\t* bad port\n\n") == \
        "Task group svc validation failed; bad port"
    assert one_line("job not found\n") == "job not found" and one_line("") == ""
