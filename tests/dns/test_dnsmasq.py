"""`inv dns` with the dnsmasq backend end to end: real sshd, real dnsmasq on a loopback port.

The record is written over SSH into the dnsmasq fixture's config folder (Pi-hole v5's
05-pihole-custom-cname.conf by default), checked with the real ``dnsmasq --test``, dnsmasq is
restarted with the fixture's restart command (it refuses to start on a bad configuration, as a
host's does), and the CNAME is resolved with dnspython against it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dns.resolver
import pytest

from mlflow_self_host.steps.dns import task
from mlflow_self_host.core.errors import UserError
from mlflow_self_host.core.settings import Settings
from tests.services import clean_env

PIHOLE_V5_FILE = """\
# Pi-hole v5 custom CNAMEs
cname=nas.lan,traefik.lan
"""


@pytest.fixture
def dnsmasq_host(dns_server, ssh_server, project_env):
    """Settings for the dnsmasq backend on the fixtures; the config folder is cleaned afterwards."""
    values = dict(ssh_server.settings(), dns_backend="dnsmasq", dnsmasq_dir=str(dns_server.conf_dir),
                  dnsmasq_restart_command=dns_server.restart_command, dnsmasq_test_command=dns_server.test_command,
                  dns_server="127.0.0.1", dns_port=dns_server.port, dns_check_timeout=10)
    yield dns_server, Settings.load(env={}, overrides=values)
    for path in dns_server.conf_dir.iterdir():
        path.unlink()
    subprocess.run([dns_server.restart_command], check=True, capture_output=True, timeout=30)


def cname_of(server, name):
    try:
        return str(server.resolve(name, "CNAME")[0].target).rstrip(".")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers):  # dnsmasq without upstreams: REFUSED
        return None


def test_adds_the_record_over_ssh_restarts_dnsmasq_and_it_resolves(dnsmasq_host):
    server, settings = dnsmasq_host
    conf = server.conf_dir / "05-pihole-custom-cname.conf"
    conf.write_text(PIHOLE_V5_FILE)
    pid = server.pid()
    plan = task.run(settings)
    assert conf.read_text() == PIHOLE_V5_FILE + "cname=mlflow.lan,traefik.lan\n"  # other lines kept
    assert server.pid() != pid  # restarted
    assert cname_of(server, "mlflow.lan") == "traefik.lan"
    assert [a.address for a in server.resolve("mlflow.lan")] == ["127.0.0.1"]
    assert [c.action for c in plan] == ["create", "update", "check", "restart"]
    # running twice changes nothing: same file, no restart
    pid = server.pid()
    assert task.run(settings).empty
    assert server.pid() == pid and conf.read_text().count("mlflow.lan") == 1


def test_replaces_another_target_and_removes(dnsmasq_host):
    server, settings = dnsmasq_host
    (server.conf_dir / "old.conf").write_text("host-record=old-proxy.lan,10.1.1.1\n")
    conf = server.conf_dir / "05-pihole-custom-cname.conf"
    conf.write_text("cname=mlflow.lan,old-proxy.lan\ncname=nas.lan,traefik.lan\n")
    subprocess.run([server.restart_command], check=True, capture_output=True, timeout=30)
    assert cname_of(server, "mlflow.lan") == "old-proxy.lan"
    task.run(settings)
    assert conf.read_text() == "cname=mlflow.lan,traefik.lan\ncname=nas.lan,traefik.lan\n"
    assert cname_of(server, "mlflow.lan") == "traefik.lan"
    task.run(settings, remove=True)
    assert conf.read_text() == "cname=nas.lan,traefik.lan\n"
    assert cname_of(server, "mlflow.lan") is None and cname_of(server, "nas.lan") == "traefik.lan"
    assert task.run(settings, remove=True).empty


def test_dry_run_shows_the_diff_and_changes_nothing(dnsmasq_host, capsys):
    server, settings = dnsmasq_host
    pid = server.pid()
    plan = task.run(settings, dry_run=True)
    err = capsys.readouterr().err
    assert "+cname=mlflow.lan,traefik.lan" in err and "nothing was changed" in err
    assert not (server.conf_dir / "05-pihole-custom-cname.conf").exists() and server.pid() == pid
    assert [c.action for c in plan] == ["create", "create", "check", "restart"]


def test_a_restart_command_that_always_fails_says_dnsmasq_may_be_down(dnsmasq_host):
    server, settings = dnsmasq_host
    conf = server.conf_dir / "05-pihole-custom-cname.conf"
    conf.write_text(PIHOLE_V5_FILE)
    with pytest.raises(UserError, match="`false` failed .* and again with the previous file .*may not be running"):
        task.run(settings.with_overrides({"dnsmasq_restart_command": "false"}))
    assert conf.read_text() == PIHOLE_V5_FILE


def test_a_missing_config_folder_is_named(dnsmasq_host, tmp_path):
    server, settings = dnsmasq_host
    with pytest.raises(UserError, match="does not exist") as info:
        task.run(settings.with_overrides({"dnsmasq_dir": str(tmp_path / "nope")}))
    assert "dnsmasq_dir" in info.value.hint


def test_check_reports_the_answer(dnsmasq_host, capsys):
    server, settings = dnsmasq_host
    with pytest.raises(UserError, match="does not resolve to CNAME traefik.lan"):
        task.run(settings, check_only=True)
    assert "mlflow.lan: the server does not serve this name (REFUSED)" in capsys.readouterr().out
    (server.conf_dir / "05-pihole-custom-cname.conf").write_text("cname=mlflow.lan,traefik.lan\n")
    subprocess.run([server.restart_command], check=True, capture_output=True, timeout=30)
    task.run(settings, check_only=True)
    assert f"mlflow.lan → CNAME traefik.lan → 127.0.0.1  (127.0.0.1:{server.port})" in capsys.readouterr().out


def inv_dns(server, ssh_server, *args, **more_env):
    env = clean_env()
    env.update(ssh_server.env(), MSH_DNSMASQ_DIR=str(server.conf_dir),
               MSH_DNSMASQ_RESTART_COMMAND=server.restart_command, MSH_DNS_SERVER="127.0.0.1",
               MSH_DNS_PORT=str(server.port))
    env.update(more_env)
    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-m", "invoke", "dns", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_inv_dns_backend_dnsmasq(dnsmasq_host, ssh_server):
    # dnsmasq_test_command as in invoke.yaml: `dnsmasq --test --conf-dir={dnsmasq_dir}` on the host
    server, settings = dnsmasq_host
    result = inv_dns(server, ssh_server, "--backend", "dnsmasq")
    assert result.returncode == 0, result.stderr
    assert f"dnsmasq --test --conf-dir={server.conf_dir}" in result.stderr
    assert cname_of(server, "mlflow.lan") == "traefik.lan"
    assert "mlflow.lan → CNAME traefik.lan → 127.0.0.1" in result.stderr


# --- never break the host's DNS ---------------------------------------------------------------------
def test_a_pihole_v6_host_is_refused_before_anything_changes(dnsmasq_host, tmp_path):
    server, settings = dnsmasq_host
    toml = tmp_path / "pihole.toml"  # what /etc/pihole/pihole.toml is on a v6 Pi-hole
    toml.write_text("[dns]\n  cnameRecords = []\n")
    pid = server.pid()
    with pytest.raises(UserError, match="runs Pi-hole v6 .*pihole.toml exists") as info:
        task.run(settings.with_overrides({"pihole_config": str(toml)}))
    assert "pihole backend" in info.value.hint
    assert not (server.conf_dir / "05-pihole-custom-cname.conf").exists() and server.pid() == pid


def test_a_second_definition_elsewhere_is_caught_by_dnsmasq_test_before_the_restart(dnsmasq_host):
    server, settings = dnsmasq_host
    conf = server.conf_dir / "05-pihole-custom-cname.conf"
    conf.write_text(PIHOLE_V5_FILE)
    subprocess.run([server.restart_command], check=True, capture_output=True, timeout=30)
    (server.conf_dir / "10-other.conf").write_text("cname=MLflow.lan,old-proxy.lan\n")  # not loaded yet
    pid = server.pid()
    with pytest.raises(UserError, match="dnsmasq refuses .*duplicate CNAME at line 1 of .*10-other.conf") as info:
        task.run(settings)
    assert "previous file is back and dnsmasq was not restarted" in info.value.message
    assert "another file" in info.value.hint
    assert conf.read_text() == PIHOLE_V5_FILE and server.pid() == pid
    assert cname_of(server, "nas.lan") == "traefik.lan"  # the LAN's DNS never went away


def test_a_new_file_refused_by_the_check_is_removed_again(dnsmasq_host):
    server, settings = dnsmasq_host
    (server.conf_dir / "10-other.conf").write_text("cname=mlflow.lan,old-proxy.lan\n")
    with pytest.raises(UserError, match="duplicate CNAME"):
        task.run(settings)
    assert not (server.conf_dir / "05-pihole-custom-cname.conf").exists()


def test_inv_dns_a_failed_restart_puts_the_previous_file_back_and_restarts_dnsmasq(dnsmasq_host, ssh_server):
    # Without the check (dnsmasq_test_command empty) the duplicate reaches the restart: dnsmasq refuses
    # to start, so the previous file goes back and dnsmasq is started again with it.
    server, settings = dnsmasq_host
    conf = server.conf_dir / "05-pihole-custom-cname.conf"
    conf.write_text(PIHOLE_V5_FILE)
    subprocess.run([server.restart_command], check=True, capture_output=True, timeout=30)
    (server.conf_dir / "10-other.conf").write_text("cname=mlflow.lan,old-proxy.lan\n")
    result = inv_dns(server, ssh_server, "--backend", "dnsmasq", MSH_DNSMASQ_TEST_COMMAND="")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "failed" in errors[0] and "duplicate CNAME" in errors[0]
    assert "the previous file is back and dnsmasq runs with it again" in errors[0]
    assert conf.read_text() == PIHOLE_V5_FILE
    assert cname_of(server, "nas.lan") == "traefik.lan" and cname_of(server, "mlflow.lan") == "old-proxy.lan"


def test_a_check_command_the_host_lacks_is_named_with_the_pihole_v5_one(dnsmasq_host):
    server, settings = dnsmasq_host
    with pytest.raises(UserError, match="cannot run on") as info:
        task.run(settings.with_overrides({"dnsmasq_test_command": "no-such-dnsmasq --test"}))
    assert "pihole-FTL dnsmasq-test" in info.value.hint
    assert not (server.conf_dir / "05-pihole-custom-cname.conf").exists()
