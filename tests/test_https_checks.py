"""https (issue 29): its settings checked once at load (one red line, exit 2, through `inv` as typed), the URL our
tasks use, and doctor's certificate row against a TLS server on loopback whose certificate a CA made in the test
signed (the service itself, through the proxy, is tests/job/test_https.py)."""
from __future__ import annotations

import http.server
import ssl
import threading

import pytest

from mlflow_self_host.core.settings import Settings
from mlflow_self_host.flows import doctor
from mlflow_self_host.flows.deploy_plan import deploy_url
from tests.services import tls
from tests.test_settings import inv_config, refused


@pytest.mark.parametrize("variable,value,starts,instead", [
    ("MSH_PLAIN_HTTP", "allow", "plain_http must be redirect or refuse, not 'allow'", "one of them"),
    ("MSH_TRAEFIK_TLS_ENTRYPOINTS", "web secure", "traefik_tls_entrypoints 'web secure' is not", "web,websecure"),
    ("MSH_TRAEFIK_CERTRESOLVER", "lets encrypt", "traefik_certresolver 'lets encrypt' is not", "letsencrypt"),
    ("MSH_CA_FILE", "/nonexistent/ca.pem", "ca_file '/nonexistent/ca.pem' cannot be read", "PEM"),
    ("MSH_HTTPS", "maybe", "https must be true or false", ""),
])
def test_a_bad_https_setting_is_one_red_line_and_exit_2(variable, value, starts, instead):
    assert instead in refused(inv_config({variable: value}), f"error: env {variable}: {starts}")


def test_a_ca_file_without_a_certificate_is_refused(tmp_path):
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n")
    refused(inv_config({"MSH_CA_FILE": str(tmp_path / "key.pem")}), "error: env MSH_CA_FILE: ca_file")


def test_https_makes_the_service_url_https_and_ca_file_absolute(tmp_path, monkeypatch):
    ca = tls.make_ca(tmp_path / "ca")
    monkeypatch.chdir(tmp_path)
    s = Settings.load(env={"MSH_HTTPS": "true", "MSH_CA_FILE": "ca/ca.pem"})
    assert (s.service_url(), deploy_url(s), s.ca_file) == ("https://mlflow.lan/", "https://mlflow.lan/", str(ca.path))
    assert deploy_url(Settings.load(env={})) == "http://mlflow.lan/"
    assert deploy_url(Settings.load(env={"MSH_HTTPS": "true", "MSH_DEPLOY_URL": "http://10.0.0.5/"})) == \
        "http://10.0.0.5/"  # a URL of the user's own is theirs


@pytest.fixture
def tls_server(tmp_path):
    """serve(cert, key) -> port: an HTTPS server on 127.0.0.1 with that certificate (stopped after the test)."""
    servers = []

    def serve(cert, key) -> int:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def certificate_row(port: int, ca_file, domain: str = "localhost"):
    settings = Settings.load(env={}, overrides={"https": True, "domain": domain, "ca_file": str(ca_file or ""),
                                                "deploy_url": f"https://localhost:{port}/"})
    (row,) = list(doctor.check_certificate(settings, 4))
    return row


def test_doctor_shows_the_certificate_and_turns_red_for_another_ca_or_name_and_warns_near_expiry(tmp_path, tls_server):
    ca, other = tls.make_ca(tmp_path / "ca"), tls.make_ca(tmp_path / "other", "another CA")
    port = tls_server(*tls.issue(ca, tmp_path / "good", ["localhost"], days=60))
    good = certificate_row(port, ca.path)
    assert good.ok and not good.fix, good
    assert good.found.startswith("CN=localhost, by CN=mlflow-self-host test CA, until ")
    assert good.found.endswith("(59 days left)")

    refused_row = certificate_row(port, other.path)
    assert not refused_row.ok and f"checked with ca_file {other.path}" in refused_row.found
    assert "unable to get local issuer certificate" in refused_row.found and "ca_file" in refused_row.fix
    system = certificate_row(port, None)  # the system's CAs do not know the test's
    assert not system.ok and "the system's CAs (ca_file is empty)" in system.found

    other_name = tls_server(*tls.issue(ca, tmp_path / "name", ["not-localhost.lan"], days=60))
    wrong = certificate_row(other_name, ca.path)
    assert not wrong.ok and "Hostname mismatch" in wrong.found

    soon = tls_server(*tls.issue(ca, tmp_path / "soon", ["localhost"], days=5))
    near = certificate_row(soon, ca.path)
    assert near.ok and "(4 days left)" in near.found and "expires in 4 days" in near.fix  # yellow: a fix, passing


def test_doctor_has_no_certificate_row_without_https():
    names = [name for check in doctor._checks(Settings.load(env={})) for name in check.names]
    assert "certificate" not in names
    assert "certificate" in [n for c in doctor._checks(Settings.load(env={"MSH_HTTPS": "1"})) for n in c.names]


def test_a_certificate_that_does_not_verify_is_one_line_naming_ca_file_exit_18(tmp_path, tls_server):
    from mlflow_self_host.adapters import mlflow_http
    from mlflow_self_host.core.errors import UserError

    ca = tls.make_ca(tmp_path / "ca")
    port = tls_server(*tls.issue(ca, tmp_path / "c", ["not-localhost.lan"]))
    settings = Settings.load(env={}, overrides={"ca_file": str(ca.path)})
    with pytest.raises(UserError) as caught:
        mlflow_http.get(settings, f"https://localhost:{port}/version", timeout=5)
    assert caught.value.code == 18
    assert caught.value.message == (f"https://localhost:{port}/: its TLS certificate is refused (Hostname mismatch, "
                                    f"certificate is not valid for 'localhost'), checked with ca_file {ca.path}")
    assert "set ca_file" in caught.value.hint
