"""`inv dns` with the dnsmasq backend end to end: real sshd, real dnsmasq on a loopback port.

The record is written over SSH into the dnsmasq fixture's config folder (Pi-hole v5's
05-pihole-custom-cname.conf by default), dnsmasq is restarted with the fixture's restart command,
and the CNAME is resolved with dnspython against it.
"""
from __future__ import annotations

import subprocess

import dns.resolver
import pytest

from mlflow_self_host.dns import record
from mlflow_self_host.errors import UserError
from mlflow_self_host.settings import Settings

PIHOLE_V5_FILE = """\
# Pi-hole v5 custom CNAMEs
cname=nas.lan,traefik.lan
"""


@pytest.fixture
def dnsmasq_host(dns_server, ssh_server, project_env):
    """Settings for the dnsmasq backend on the fixtures; the config folder is cleaned afterwards."""
    values = dict(ssh_server.settings(), dns_backend="dnsmasq", dnsmasq_dir=str(dns_server.conf_dir),
                  dnsmasq_restart_command=dns_server.restart_command, dns_server="127.0.0.1",
                  dns_port=dns_server.port, dns_check_timeout=3)
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
    plan = record.run(settings)
    assert conf.read_text() == PIHOLE_V5_FILE + "cname=mlflow.lan,traefik.lan\n"  # other lines kept
    assert server.pid() != pid  # restarted
    assert cname_of(server, "mlflow.lan") == "traefik.lan"
    assert [a.address for a in server.resolve("mlflow.lan")] == ["127.0.0.1"]
    assert [c.action for c in plan] == ["create", "update", "restart"]
    # running twice changes nothing: same file, no restart
    pid = server.pid()
    assert record.run(settings).empty
    assert server.pid() == pid and conf.read_text().count("mlflow.lan") == 1


def test_replaces_another_target_and_removes(dnsmasq_host):
    server, settings = dnsmasq_host
    (server.conf_dir / "old.conf").write_text("host-record=old-proxy.lan,10.1.1.1\n")
    conf = server.conf_dir / "05-pihole-custom-cname.conf"
    conf.write_text("cname=mlflow.lan,old-proxy.lan\ncname=nas.lan,traefik.lan\n")
    subprocess.run([server.restart_command], check=True, capture_output=True, timeout=30)
    assert cname_of(server, "mlflow.lan") == "old-proxy.lan"
    record.run(settings)
    assert conf.read_text() == "cname=mlflow.lan,traefik.lan\ncname=nas.lan,traefik.lan\n"
    assert cname_of(server, "mlflow.lan") == "traefik.lan"
    record.run(settings, remove=True)
    assert conf.read_text() == "cname=nas.lan,traefik.lan\n"
    assert cname_of(server, "mlflow.lan") is None and cname_of(server, "nas.lan") == "traefik.lan"
    assert record.run(settings, remove=True).empty


def test_dry_run_shows_the_diff_and_changes_nothing(dnsmasq_host, capsys):
    server, settings = dnsmasq_host
    pid = server.pid()
    plan = record.run(settings, dry_run=True)
    err = capsys.readouterr().err
    assert "+cname=mlflow.lan,traefik.lan" in err and "nothing was changed" in err
    assert not (server.conf_dir / "05-pihole-custom-cname.conf").exists() and server.pid() == pid
    assert [c.action for c in plan] == ["create", "create", "restart"]


def test_a_failing_restart_command_is_one_clear_error(dnsmasq_host):
    server, settings = dnsmasq_host
    with pytest.raises(UserError, match="written, but `false` failed"):
        record.run(settings.with_overrides({"dnsmasq_restart_command": "false"}))


def test_a_missing_config_folder_is_named(dnsmasq_host, tmp_path):
    server, settings = dnsmasq_host
    with pytest.raises(UserError, match="does not exist") as info:
        record.run(settings.with_overrides({"dnsmasq_dir": str(tmp_path / "nope")}))
    assert "dnsmasq_dir" in info.value.hint


def test_check_reports_the_answer(dnsmasq_host, capsys):
    server, settings = dnsmasq_host
    with pytest.raises(UserError, match="does not resolve to CNAME traefik.lan"):
        record.run(settings, check_only=True)
    assert "mlflow.lan: the server does not serve this name (REFUSED)" in capsys.readouterr().out
    (server.conf_dir / "05-pihole-custom-cname.conf").write_text("cname=mlflow.lan,traefik.lan\n")
    subprocess.run([server.restart_command], check=True, capture_output=True, timeout=30)
    record.run(settings, check_only=True)
    assert f"mlflow.lan → CNAME traefik.lan → 127.0.0.1  (127.0.0.1:{server.port})" in capsys.readouterr().out


def test_inv_dns_backend_dnsmasq(dnsmasq_host, ssh_server):
    import os
    import sys
    from pathlib import Path

    server, settings = dnsmasq_host
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSH_", "NOMAD_", "PIHOLE_"))}
    env.update(ssh_server.env(), MSH_DNSMASQ_DIR=str(server.conf_dir),
               MSH_DNSMASQ_RESTART_COMMAND=server.restart_command, MSH_DNS_SERVER="127.0.0.1",
               MSH_DNS_PORT=str(server.port))
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "invoke", "dns", "--backend", "dnsmasq"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert cname_of(server, "mlflow.lan") == "traefik.lan"
    assert "mlflow.lan → CNAME traefik.lan → 127.0.0.1" in result.stderr
