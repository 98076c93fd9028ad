"""The Pi-hole v6 double answers as the reference spec says (status codes and bodies), raw HTTP."""
from __future__ import annotations

import socket
import time
from urllib.parse import quote

import dns.exception
import dns.resolver
import pytest
import requests

from mlflow_self_host.adapters.dns.pihole import PiHole
from tests.dns.conftest import pihole_settings
from tests.services import wait_for


def login(double, password=None):
    r = requests.post(double.url + "/api/auth", json={"password": password or double.password}, timeout=5)
    return r.status_code, r.json()


def item(double, value):
    return f"{double.url}/api/config/dns/cnameRecords/{quote(value, safe='')}"


def test_login_logout_and_wrong_password_bodies(pihole):
    status, body = login(pihole)
    session = body["session"]
    assert status == 200 and session["valid"] is True and session["sid"] and session["csrf"]
    assert session["validity"] > 0 and "took" in body
    status, body = login(pihole, "wrong")
    assert status == 401 and body["session"] == {"valid": False, "totp": False, "sid": None, "validity": -1,
                                                  "message": "password incorrect"}
    r = requests.delete(pihole.url + "/api/auth", headers={"X-FTL-SID": session["sid"]}, timeout=5)
    assert r.status_code == 204 and r.content == b""
    r = requests.get(pihole.url + "/api/config/dns/cnameRecords", headers={"X-FTL-SID": session["sid"]}, timeout=5)
    assert r.status_code == 401 and r.json()["error"] == {"key": "unauthorized", "message": "Unauthorized",
                                                          "hint": None}


def test_put_delete_status_codes_and_bodies(pihole):
    sid = login(pihole)[1]["session"]["sid"]
    h = {"X-FTL-SID": sid}
    r = requests.put(item(pihole, "mlflow.lan,traefik.lan"), headers=h, timeout=5)
    assert r.status_code == 201 and set(r.json()) == {"took"}
    r = requests.put(item(pihole, "mlflow.lan,traefik.lan"), headers=h, timeout=5)
    assert r.status_code == 400 and r.json()["error"] == {"key": "bad_request", "message": "Item already present",
                                                          "hint": "Uniqueness of items is enforced"}
    r = requests.put(item(pihole, "lonely.lan"), headers=h, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["message"] == "Invalid value"
    assert "too few elements" in r.json()["error"]["hint"]
    r = requests.get(pihole.url + "/api/config/dns/cnameRecords", headers=h, timeout=5)
    assert r.json()["config"] == {"dns": {"cnameRecords": ["mlflow.lan,traefik.lan"]}}
    r = requests.delete(item(pihole, "mlflow.lan,traefik.lan"), headers=h, timeout=5)
    assert r.status_code == 204 and r.content == b""
    r = requests.delete(item(pihole, "mlflow.lan,traefik.lan"), headers=h, timeout=5)
    assert r.status_code == 404 and set(r.json()) == {"took"}
    r = requests.put(pihole.url + "/api/config/dns/cnameRecords", headers=h, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["message"] == "Invalid path depth"


def test_cookie_auth_needs_the_csrf_header(pihole):
    session = login(pihole)[1]["session"]
    url = pihole.url + "/api/config/dns/cnameRecords"
    assert requests.get(url, cookies={"sid": session["sid"]}, timeout=5).status_code == 401
    # FTL v6.4.1 reads X-CSRF-TOKEN (src/api/auth.c), not the X-FTL-CSRF of the docs
    assert requests.get(url, cookies={"sid": session["sid"]}, headers={"X-FTL-CSRF": session["csrf"]},
                        timeout=5).status_code == 401
    assert requests.get(url, cookies={"sid": session["sid"]}, headers={"X-CSRF-TOKEN": "not-it"},
                        timeout=5).status_code == 401
    assert requests.get(url, cookies={"sid": session["sid"]}, headers={"X-CSRF-TOKEN": session["csrf"]},
                        timeout=5).status_code == 200


def test_app_session_is_forbidden_to_change_config_without_app_sudo(pihole):
    sid = login(pihole, pihole.app_password)[1]["session"]["sid"]
    r = requests.put(item(pihole, "mlflow.lan,traefik.lan"), headers={"X-FTL-SID": sid}, timeout=5)
    assert r.status_code == 403 and r.json()["error"]["key"] == "forbidden"
    assert "webserver.api.app_sudo is false" in r.json()["error"]["hint"]


def test_the_client_takes_item_already_present_as_done(pihole):
    with PiHole(pihole_settings(pihole)) as api:
        api.add("mlflow.lan,traefik.lan")
        api.add("mlflow.lan,traefik.lan")  # e.g. added by someone else meanwhile
        api.delete("gone.lan,traefik.lan")  # 404: already gone
        assert api.cname_records() == ["mlflow.lan,traefik.lan"]
    assert pihole.active_sessions() == []


def test_cli_session_is_forbidden_to_change_config_with_its_own_hint(pihole):
    sid = login(pihole, pihole.cli_password)[1]["session"]["sid"]
    r = requests.put(item(pihole, "mlflow.lan,traefik.lan"), headers={"X-FTL-SID": sid}, timeout=5)
    assert r.status_code == 403 and r.json()["error"] == {
        "key": "forbidden", "message": "Unable to change configuration (read-only)",
        "hint": "The current CLI session is not allowed to modify Pi-hole config settings"}


def test_every_put_runs_the_real_dnsmasq_test_and_refuses_like_ftl(start_pihole):
    double = start_pihole(dnsmasq_lines=["cname=nas.lan,traefik.lan"])
    sid = login(double)[1]["session"]["sid"]
    r = requests.put(item(double, "NAS.lan,other.lan"), headers={"X-FTL-SID": sid}, timeout=5)
    error = r.json()["error"]
    assert r.status_code == 400 and error["key"] == "bad_request" and error["message"] == "Invalid configuration"
    # dnsmasq's own words (alias names compare case-insensitively), then the generated line FTL appends
    assert error["hint"].startswith("dnsmasq: duplicate CNAME at line ")
    assert error["hint"].endswith(': "cname=nas.lan,traefik.lan"')
    assert double.cname_records == [] and double.restart_count == 0
    r = requests.put(item(double, "mlflow.lan,traefik.lan"), headers={"X-FTL-SID": sid}, timeout=5)
    assert r.status_code == 201 and double.dnsmasq_tests[-1] == "dnsmasq: syntax check OK."


def dns_answer(double, name, lifetime=1.0):
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port, resolver.lifetime = ["127.0.0.1"], double.dns_port, lifetime
    return str(resolver.resolve(name, "CNAME")[0].target)


def api_refuses_connections(double) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", double.port)) != 0


def test_a_change_restarts_ftl_its_api_and_dns_go_away_and_come_back_with_the_session(start_pihole):
    double = start_pihole(restart_seconds=1.5)
    sid = login(double)[1]["session"]["sid"]
    h = {"X-FTL-SID": sid}
    assert requests.put(item(double, "a.lan,traefik.lan") + "?restart=false", headers=h, timeout=5).status_code == 201
    assert double.restart_count == 0 and double.applied["cnameRecords"] == []  # saved, not served
    start = time.monotonic()
    assert requests.put(item(double, "mlflow.lan,traefik.lan"), headers=h, timeout=5).status_code == 201
    # FTL restarts after its answer is sent (api_handler): the answer can reach us first
    wait_for(lambda: double.restarts, 2, "the restart to begin", interval=0.01)
    with pytest.raises(dns.exception.Timeout):  # then the resolver stops at once
        dns_answer(double, "mlflow.lan", lifetime=0.2)
    time.sleep(0.4)  # past FTL's 250 ms grace: the process is gone
    assert api_refuses_connections(double)
    with pytest.raises(requests.ConnectionError):
        requests.get(double.url + "/api/auth", headers=h, timeout=2)
    double.wait_until_up()
    assert time.monotonic() - start >= 1.5
    r = requests.get(double.url + "/api/auth", headers=h, timeout=5)  # the session survived the restart
    assert r.status_code == 200 and r.json()["session"]["sid"] == sid
    assert dns_answer(double, "mlflow.lan") == "traefik.lan." and dns_answer(double, "a.lan") == "traefik.lan."
    assert double.restart_count == 1


def test_restartdns_applies_saved_changes_unless_destructive_actions_are_off(start_pihole):
    double = start_pihole()
    sid = login(double)[1]["session"]["sid"]
    h = {"X-FTL-SID": sid}
    requests.put(item(double, "mlflow.lan,traefik.lan") + "?restart=false", headers=h, timeout=5)
    assert requests.post(double.url + "/api/action/restartdns", timeout=5).status_code == 401
    r = requests.post(double.url + "/api/action/restartdns", headers=h, timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "success"
    double.wait_until_up()
    assert dns_answer(double, "mlflow.lan") == "traefik.lan."
    off = start_pihole(allow_destructive=False)
    sid = login(off)[1]["session"]["sid"]
    r = requests.post(off.url + "/api/action/restartdns", headers={"X-FTL-SID": sid}, timeout=5)
    assert r.status_code == 403 and r.json()["error"] == {
        "key": "forbidden", "message": "Restarting DNS is not allowed",
        "hint": "Check setting webserver.api.allow_destructive"}
    assert off.restart_count == 0


def test_the_certificate_names_pi_hole_and_no_address(start_pihole, tmp_path):
    from cryptography import x509

    double = start_pihole(tls_dir=tmp_path / "tls", webserver_domain="pihole.example.lan")
    cert = x509.load_pem_x509_certificate((tmp_path / "tls" / "tls.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["pi.hole", "pihole.example.lan"]
    assert san.get_values_for_type(x509.IPAddress) == []
    with pytest.raises(requests.exceptions.SSLError, match="mismatch"):
        requests.get(double.url + "/api/auth", verify=str(double.ca_file), timeout=5)
