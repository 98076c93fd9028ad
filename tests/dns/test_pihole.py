"""`inv dns` on Pi-hole v6, against the API double (tests/doubles/pihole.py) and its DNS answers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_self_host.steps.dns import task
from mlflow_self_host.core.errors import UserError
from tests.dns.conftest import pihole_settings
from tests.services import clean_env, free_port

ROOT = Path(__file__).resolve().parents[2]


def config_calls(double):
    return [(c.method, c.path, c.query) for c in double.requests if c.path.startswith("/api/config")]


def logged_out(double) -> bool:
    """Every session opened was closed again."""
    return double.active_sessions() == [] and any(c.method == "DELETE" and c.path == "/api/auth"
                                                  for c in double.requests)


def test_adds_the_missing_record_and_it_resolves(start_pihole):
    pihole = start_pihole(cname_records=["nas.lan,traefik.lan"])
    plan = task.run(pihole_settings(pihole))
    assert pihole.cname_records == ["nas.lan,traefik.lan", "mlflow.lan,traefik.lan"]
    assert ("PUT", "/api/config/dns/cnameRecords/mlflow.lan,traefik.lan", {}) in config_calls(pihole)
    assert [c.action for c in plan] == ["create"]
    assert logged_out(pihole)
    answer = resolve_cname(pihole.dns_port, "mlflow.lan")
    assert answer == "traefik.lan."


def resolve_cname(port, name):
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], port
    return str(resolver.resolve(name, "CNAME")[0].target)


def test_the_value_is_percent_encoded_as_the_web_interface_does(pihole):
    task.run(pihole_settings(pihole, dns_ttl=300))
    raw = [c for c in pihole.requests if c.method == "PUT"]
    assert pihole.cname_records == ["mlflow.lan,traefik.lan,300"] and len(raw) == 1


def test_replaces_another_target_with_one_restart(start_pihole):
    double = start_pihole(cname_records=["mlflow.lan,old-proxy.lan"], hosts=["127.0.0.1 traefik.lan",
                                                                               "10.9.9.9 old-proxy.lan"])
    task.run(pihole_settings(double))
    assert double.cname_records == ["mlflow.lan,traefik.lan"]
    calls = [(m, q) for m, p, q in config_calls(double) if m in ("PUT", "DELETE")]
    assert calls == [("DELETE", {"restart": "false"}), ("PUT", {})]  # FTL restarts once, at the end
    assert double.restart_count == 1 and logged_out(double)


def test_right_record_is_no_change_and_nothing_is_written(start_pihole, capsys):
    double = start_pihole(cname_records=["mlflow.lan,traefik.lan"])
    plan = task.run(pihole_settings(double))
    assert plan.empty and double.mutations() == [] and double.restart_count == 0
    assert "no change" in capsys.readouterr().err
    assert logged_out(double)


def test_running_twice_changes_nothing_the_second_time(pihole):
    task.run(pihole_settings(pihole))
    first = len(pihole.mutations())
    assert task.run(pihole_settings(pihole)).empty
    assert len(pihole.mutations()) == first == 1


def test_dry_run_shows_the_plan_and_changes_nothing(start_pihole, capsys):
    double = start_pihole(cname_records=["mlflow.lan,old-proxy.lan"])
    plan = task.run(pihole_settings(double), dry_run=True)
    err = capsys.readouterr().err
    assert [c.action for c in plan] == ["replace"]
    assert "would change" in err and "old-proxy.lan" in err and "nothing was changed" in err
    assert double.mutations() == [] and double.cname_records == ["mlflow.lan,old-proxy.lan"]
    assert logged_out(double)


def test_remove_takes_the_record_away_and_it_no_longer_resolves(start_pihole):
    double = start_pihole(cname_records=["mlflow.lan,traefik.lan", "nas.lan,traefik.lan"])
    task.run(pihole_settings(double), remove=True)
    assert double.cname_records == ["nas.lan,traefik.lan"]
    assert task.run(pihole_settings(double), remove=True).empty
    assert logged_out(double)


def test_check_fails_when_the_dns_answer_is_wrong_after_the_change(start_pihole):
    double = start_pihole(dns_frozen=True)  # the resolver keeps its old answers
    with pytest.raises(UserError, match="does not resolve to CNAME traefik.lan") as info:
        task.run(pihole_settings(double, dns_check_timeout=3))
    assert "NXDOMAIN" in info.value.message
    assert double.cname_records == ["mlflow.lan,traefik.lan"] and logged_out(double)


def test_wrong_password_is_a_clear_error(pihole):
    with pytest.raises(UserError, match="refused the password") as info:
        task.run(pihole_settings(pihole, password="not-it"))
    assert "PIHOLE_PASSWORD" in info.value.hint and "not-it" not in str(info.value)
    assert pihole.mutations() == []


def test_no_password_set_says_which_variable(pihole):
    with pytest.raises(UserError, match="PIHOLE_PASSWORD is not set"):
        task.run(pihole_settings(pihole, password=""))


def test_a_pihole_without_a_password_needs_no_login(start_pihole):
    double = start_pihole(password="")
    task.run(pihole_settings(double, password=""))
    assert double.cname_records == ["mlflow.lan,traefik.lan"]


def test_app_password_without_app_sudo_says_how_to_enable_it(pihole):
    with pytest.raises(UserError, match="app_sudo is false") as info:
        task.run(pihole_settings(pihole, password=pihole.app_password))
    assert "webserver.api.app_sudo" in info.value.hint and "pihole-FTL --config" in info.value.hint
    assert pihole.cname_records == [] and logged_out(pihole)


def test_app_password_with_app_sudo_works(start_pihole):
    double = start_pihole(app_sudo=True)
    task.run(pihole_settings(double, password=double.app_password))
    assert double.cname_records == ["mlflow.lan,traefik.lan"] and logged_out(double)


def test_records_set_by_an_ftlconf_variable_are_read_only(start_pihole):
    double = start_pihole(env={"FTLCONF_dns_cnameRecords": "nas.lan,traefik.lan"})
    with pytest.raises(UserError, match="read-only.*FTLCONF_dns_cnameRecords"):
        task.run(pihole_settings(double))
    assert double.cname_records == ["nas.lan,traefik.lan"] and logged_out(double)


def test_a_failed_add_after_a_delete_puts_the_old_record_back(start_pihole):
    double = start_pihole(cname_records=["mlflow.lan,old.lan"], fail_puts=1)
    with pytest.raises(UserError, match="answered 500 while adding .*Could not write config file"):
        task.run(pihole_settings(double))
    assert double.cname_records == ["mlflow.lan,old.lan"] and logged_out(double)


def test_2fa_asks_for_an_app_password(start_pihole):
    double = start_pihole(totp=True)
    with pytest.raises(UserError, match="2FA") as info:
        task.run(pihole_settings(double))
    assert "app password" in info.value.hint


def test_logging_out_every_time_leaves_the_api_seats_free(start_pihole):
    double = start_pihole(max_sessions=1)
    for _ in range(3):
        task.run(pihole_settings(double))
    assert double.active_sessions() == []


def test_no_free_seat_is_a_clear_error(start_pihole):
    double = start_pihole(max_sessions=0)
    with pytest.raises(UserError, match="no free API session") as info:
        task.run(pihole_settings(double))
    assert "max_sessions" in info.value.hint


def test_unreachable_pihole(project_env, pihole):
    with pytest.raises(UserError, match="cannot reach Pi-hole.*connection refused") as info:
        task.run(pihole_settings(pihole, pihole_url=f"http://127.0.0.1:{free_port()}"))
    assert "pihole_url" in info.value.hint


def test_something_else_than_a_pihole_v6(pihole, tmp_path):
    with pytest.raises(UserError, match="does not answer like a Pi-hole v6") as info:
        task.run(pihole_settings(pihole, pihole_url=pihole.url + "/elsewhere"))
    assert "dnsmasq" in info.value.hint


def test_pihole_own_ca_needs_the_ca_file_or_insecure(start_pihole, tmp_path, capsys):
    double = start_pihole(tls_dir=tmp_path / "tls")
    with pytest.raises(UserError, match="signed by a CA this machine does not trust") as info:
        task.run(pihole_settings(double))
    assert "tls_ca.crt" in info.value.hint and "pihole_cafile" in info.value.hint and "--insecure" in info.value.hint
    assert double.cname_records == []
    task.run(pihole_settings(double, pihole_cafile=str(double.ca_file)))
    assert double.cname_records == ["mlflow.lan,traefik.lan"]
    task.run(pihole_settings(double, pihole_insecure=True), remove=True)
    assert double.cname_records == [] and "not verifying the TLS certificate" in capsys.readouterr().err


def test_a_missing_ca_file_is_named(pihole, tmp_path):
    with pytest.raises(UserError, match="pihole_cafile .* not found"):
        task.run(pihole_settings(pihole, pihole_cafile=str(tmp_path / "nope.crt")))


def inv_dns(double, *args, password=None, **more_env):
    env = clean_env()
    env.update(PIHOLE_PASSWORD=double.password if password is None else password, MSH_PIHOLE_URL=double.url,
               MSH_DNS_SERVER="127.0.0.1", MSH_DNS_PORT=str(double.dns_port), MSH_DNS_CHECK_TIMEOUT="10")
    env.update(more_env)
    return subprocess.run([sys.executable, "-m", "invoke", "dns", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_inv_dns_then_check(pihole):
    result = inv_dns(pihole)
    assert result.returncode == 0, result.stderr
    assert pihole.cname_records == ["mlflow.lan,traefik.lan"]
    assert pihole.password not in result.stdout + result.stderr
    check = inv_dns(pihole, "--check")
    assert check.returncode == 0, check.stderr
    assert "mlflow.lan → CNAME traefik.lan → 127.0.0.1" in check.stdout


def test_inv_dns_check_fails_when_the_record_is_missing(pihole):
    result = inv_dns(pihole, "--check")
    assert result.returncode == 1 and "NXDOMAIN" in result.stdout
    assert [l for l in result.stderr.splitlines() if "error:" in l]


def test_inv_dns_wrong_password_is_one_red_line_without_the_password(pihole):
    result = inv_dns(pihole, password="hunter2-wrong")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "hunter2-wrong" not in result.stdout + result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "refused the password" in errors[0]


def test_inv_dns_insecure_flag_accepts_a_self_signed_pihole(start_pihole, tmp_path):
    double = start_pihole(tls_dir=tmp_path / "tls")
    refused = inv_dns(double)
    assert refused.returncode == 1 and "does not trust" in refused.stderr and double.cname_records == []
    result = inv_dns(double, "--insecure")
    assert result.returncode == 0, result.stderr
    assert double.cname_records == ["mlflow.lan,traefik.lan"]


# --- Pi-hole restarts after the change (FTL re-executes itself: src/api/api.c, src/main.c) ----------
def test_inv_dns_waits_through_the_restart_and_exits_0(start_pihole):
    # No password: no logout to wait for, the check starts while FTL is down (longer than one query).
    double = start_pihole(password="", restart_seconds=4)
    result = inv_dns(double, password="", MSH_DNS_CHECK_TIMEOUT="30")
    assert result.returncode == 0, result.stderr
    assert "waiting for the DNS server to answer again" in result.stderr
    assert "mlflow.lan → CNAME traefik.lan → 127.0.0.1" in result.stderr
    assert double.restart_count == 1 and double.restarts[0][1] is not None


def test_inv_dns_says_to_raise_dns_check_timeout_when_pihole_is_slower(start_pihole):
    double = start_pihole(password="", restart_seconds=4)
    result = inv_dns(double, password="", MSH_DNS_CHECK_TIMEOUT="1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "did not answer" in errors[0] and "1s after the change" in errors[0]
    assert "MSH_DNS_CHECK_TIMEOUT" in result.stderr
    assert double.cname_records == ["mlflow.lan,traefik.lan"]  # the record is set; only the check gave up


def test_a_change_with_a_password_survives_the_restart_and_frees_its_seat(start_pihole):
    # FTL's 250 ms grace: the logout right after the change still gets in; the check then waits.
    double = start_pihole(restart_seconds=1, max_sessions=1)
    task.run(pihole_settings(double, dns_check_timeout=30))
    assert resolve_cname(double.dns_port, "mlflow.lan") == "traefik.lan."
    assert double.active_sessions() == []
    task.run(pihole_settings(double, dns_check_timeout=30), remove=True)  # the only seat was free again
    assert double.cname_records == [] and double.active_sessions() == []


def test_the_logout_is_retried_until_pihole_is_back(start_pihole, capsys):
    # No grace: the logout meets the restart; the session would survive it and hold a seat for 30 min.
    double = start_pihole(restart_seconds=2, shutdown_grace=0)
    task.run(pihole_settings(double, dns_check_timeout=30))
    assert double.active_sessions() == []
    (went_down, came_back) = double.restarts[0]
    logout = [c for c in double.requests if c.method == "DELETE" and c.path == "/api/auth"]
    assert [c.status for c in logout] == [204] and logout[0].time >= came_back
    assert "logging out when it is back" in capsys.readouterr().err


def test_restartdns_applies_what_the_last_call_did_not(start_pihole):
    # Our DELETE is saved without a restart; meanwhile an admin adds the same record (restart=false),
    # so our last call, the PUT, finds it present and FTL does not restart by itself.
    def admin(double, method, path):
        if method == "PUT" and "mlflow.lan" in path and "mlflow.lan,traefik.lan" not in double.cname_records:
            double.cname_records.append("mlflow.lan,traefik.lan")

    double = start_pihole(cname_records=["mlflow.lan,old-proxy.lan"], on_request=admin,
                          hosts=["127.0.0.1 traefik.lan", "10.9.9.9 old-proxy.lan"])
    task.run(pihole_settings(double))
    calls = [(c.method, c.path, c.status) for c in double.mutations()]
    assert calls[-2:] == [("PUT", "/api/config/dns/cnameRecords/mlflow.lan,traefik.lan", 400),
                          ("POST", "/api/action/restartdns", 200)]
    assert double.restart_count == 1 and resolve_cname(double.dns_port, "mlflow.lan") == "traefik.lan."
    assert logged_out(double)


def test_restartdns_not_allowed_says_how_to_apply_it(start_pihole):
    def admin(double, method, path):
        if method == "PUT" and "mlflow.lan,traefik.lan" not in double.cname_records:
            double.cname_records.append("mlflow.lan,traefik.lan")

    double = start_pihole(cname_records=["mlflow.lan,old-proxy.lan"], on_request=admin, allow_destructive=False)
    with pytest.raises(UserError, match="does not serve it yet") as info:
        task.run(pihole_settings(double))
    assert "pihole restartdns" in info.value.hint and "allow_destructive" in info.value.hint
    assert double.restart_count == 0 and logged_out(double)


# --- what FTL refuses -------------------------------------------------------------------------------
def test_a_name_defined_elsewhere_on_the_pihole_is_refused_and_nothing_changes(start_pihole):
    # FTL runs dnsmasq --test on the configuration it would write: a second definition of the alias
    # (here in misc.dnsmasq_lines, in another case) would stop its resolver.
    double = start_pihole(dnsmasq_lines=["cname=MLflow.lan,nas.lan"])
    with pytest.raises(UserError, match="would not start with it .*duplicate CNAME") as info:
        task.run(pihole_settings(double))
    assert "nothing was changed" in info.value.message
    assert "misc.dnsmasq_lines" in info.value.hint and "/etc/dnsmasq.d" in info.value.hint
    assert double.cname_records == [] and double.restart_count == 0 and logged_out(double)


def test_a_name_in_etc_dnsmasq_d_is_refused_too(start_pihole, tmp_path):
    folder = tmp_path / "dnsmasq.d"
    folder.mkdir()
    (folder / "05-pihole-custom-cname.conf").write_text("cname=mlflow.lan,old-proxy.lan\n")
    double = start_pihole(etc_dnsmasq_d=True, dnsmasq_d=folder)
    with pytest.raises(UserError, match="duplicate CNAME"):
        task.run(pihole_settings(double))
    assert double.cname_records == [] and double.restart_count == 0


def test_the_cli_password_is_told_apart_from_an_app_password(pihole):
    with pytest.raises(UserError, match="does not let the CLI password change settings") as info:
        task.run(pihole_settings(pihole, password=pihole.cli_password))
    assert "cli_pw" in info.value.hint and "web interface password" in info.value.hint
    assert "app_sudo is false" not in info.value.message
    assert pihole.cname_records == [] and logged_out(pihole)


# --- HTTPS and the password -------------------------------------------------------------------------
def test_https_by_ip_address_is_checked_for_the_name_pi_hole(start_pihole, tmp_path):
    # Pi-hole's certificate names pi.hole, never an address: https://<ip> works with its CA alone.
    double = start_pihole(tls_dir=tmp_path / "tls")
    assert double.url.startswith("https://127.0.0.1:")
    task.run(pihole_settings(double, pihole_cafile=str(double.ca_file)))
    assert double.cname_records == ["mlflow.lan,traefik.lan"] and logged_out(double)


def test_inv_dns_tls_server_name_mismatch_names_the_certificate_names(start_pihole, tmp_path):
    double = start_pihole(tls_dir=tmp_path / "tls")
    result = inv_dns(double, "--tls-server-name", "127.0.0.1", MSH_PIHOLE_CAFILE=str(double.ca_file))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "is not for 127.0.0.1 (it names pi.hole)" in errors[0]
    assert "--insecure" not in result.stderr and "pihole_tls_server_name" in result.stderr
    assert double.cname_records == []
    ok = inv_dns(double, "--tls-server-name", "pi.hole", MSH_PIHOLE_CAFILE=str(double.ca_file))
    assert ok.returncode == 0, ok.stderr


def test_https_pi_hole_through_the_pihole_own_dns(start_pihole, tmp_path):
    # The default form: https://pi.hole, a name the Pi-hole answers itself (and not while it restarts).
    from tests.services import resolver

    double = start_pihole(tls_dir=tmp_path / "tls", restart_seconds=1, shutdown_grace=0)
    with resolver.use_dns(double.dns_port, suffixes=(".hole",)):
        task.run(pihole_settings(double, pihole_url=f"https://pi.hole:{double.port}",
                                   pihole_cafile=str(double.ca_file), dns_check_timeout=30))
    assert double.cname_records == ["mlflow.lan,traefik.lan"] and double.active_sessions() == []


def test_another_ca_in_pihole_cafile_is_named(start_pihole, tmp_path):
    from tests.doubles.pihole import make_certificate

    double = start_pihole(tls_dir=tmp_path / "tls")
    other_ca = make_certificate(tmp_path / "other")[2]
    with pytest.raises(UserError, match=f"not signed by the CA in pihole_cafile {other_ca}"):
        task.run(pihole_settings(double, pihole_cafile=str(other_ca)))


def test_https_to_the_http_port_says_so(pihole):
    with pytest.raises(UserError, match="does not speak TLS on this port") as info:
        task.run(pihole_settings(pihole, pihole_url=pihole.url.replace("http://", "https://")))
    assert "http://" in info.value.hint


def test_inv_dns_warns_when_the_password_goes_in_clear_to_another_host(pihole):
    from tests.services import resolver

    by_name = inv_dns(pihole, MSH_PIHOLE_URL=f"http://pi.hole:{pihole.port}",
                      **resolver.env_for_subprocess(pihole.dns_port, suffixes=(".hole",)))
    assert by_name.returncode == 0, by_name.stderr
    assert "password goes to http://pi.hole" in by_name.stderr and "in clear text" in by_name.stderr
    assert "https://pi.hole" in by_name.stderr and pihole.password not in by_name.stdout + by_name.stderr
    loopback = inv_dns(pihole, "--remove")  # http://127.0.0.1: nothing leaves this machine
    assert loopback.returncode == 0 and "clear text" not in loopback.stderr
