"""The Pi-hole v6 double answers as the reference spec says (status codes and bodies), raw HTTP."""
from __future__ import annotations

from urllib.parse import quote

import requests

from mlflow_self_host.dns.pihole import PiHole
from tests.dns.conftest import pihole_settings


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
    assert requests.get(url, cookies={"sid": session["sid"]}, headers={"X-FTL-CSRF": session["csrf"]},
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
