"""The SSH flags through `inv`, on the real sshd: configure-host --host/--user/--ansible, --accept-host-key on
configure-host, deploy, migrate and dns (an unknown host key refused with exit 1 and nothing changed; with
the flag accepted and recorded in known_hosts), --ask-sudo-pass on configure-host and dns (the password
sshd's user, the password typed on stdin), and dns --dry-run/--remove on the real dnsmasq."""
from __future__ import annotations

import subprocess
import uuid

import pytest

from tests.dns.test_dnsmasq import cname_of
from tests.flags.conftest import errors, host_env, inv, make_project, recorded, refused_as_unknown, unknown_key
from tests.host.conftest import PASSWORD, make_nomad_host
from tests.host.test_configure import expected_client_hcl, ids, inv_env, snapshot
from tests.services.dns_server import PROXY_NAME
from tests.services.mlflow_image import clean_env


# --- configure-host ------------------------------------------------------------------------------------
def test_configure_host_host_and_user_flags_override_the_settings(nomad_host, ssh_server):
    env = inv_env(nomad_host, MSH_HOST="127.0.0.2", MSH_SSH_USER="nobody-msh")  # settings that lead nowhere
    before = snapshot(nomad_host.root)

    nowhere = inv("configure-host", env=env, expect=1)
    assert f"cannot reach 127.0.0.2:{ssh_server.port} over SSH" in errors(nowhere)[0]
    stranger = inv("configure-host", "--host", "127.0.0.1", env=env, expect=1)
    assert f"authentication refused for nobody-msh@127.0.0.1:{ssh_server.port}" in errors(stranger)[0]
    assert snapshot(nomad_host.root) == before

    inv("configure-host", "--host", "127.0.0.1", "--user", ssh_server.user, env=env)
    assert nomad_host.client_config.read_text() == expected_client_hcl(nomad_host)
    assert ids(nomad_host.backend) == ids(nomad_host.artifacts) == (1000, 1000, "0774")
    assert nomad_host.restarts_file.read_text().splitlines() == ["root"]  # once, with the user's sudo


def test_configure_host_accept_host_key(nomad_host, ssh_server, tmp_path):
    known_hosts = unknown_key(tmp_path)
    env = inv_env(nomad_host, MSH_KNOWN_HOSTS=str(known_hosts))
    before = snapshot(nomad_host.root)

    refused = inv("configure-host", env=env, expect=1)
    refused_as_unknown(refused, ssh_server)
    assert snapshot(nomad_host.root) == before and not known_hosts.exists()

    inv("configure-host", "--accept-host-key", env=env)
    assert recorded(known_hosts, ssh_server)
    assert nomad_host.client_config.read_text() == expected_client_hcl(nomad_host) and nomad_host.restarts() == 1
    again = inv("configure-host", env=env)  # known now: no flag needed
    assert "no change" in again.stderr and nomad_host.restarts() == 1


def test_configure_host_ask_sudo_pass_reads_the_password(reachable_tmp, password_sudo_server, agent_health,
                                                         nomad_user, project_env):
    host = make_nomad_host(reachable_tmp / "host", password_sudo_server, agent_health.url)
    env = inv_env(host)

    asked = inv("configure-host", env=env, expect=1)
    assert "asks for a password" in errors(asked)[0] and "--ask-sudo-pass" in asked.stderr
    assert not host.backend.exists() and host.restarts() == 0

    done = inv("configure-host", "--ask-sudo-pass", env=env, stdin=PASSWORD + "\n")
    assert PASSWORD not in done.stdout + done.stderr
    assert host.client_config.read_text() == expected_client_hcl(host)
    assert ids(host.backend) == (1000, 1000, "0774")
    assert host.restarts_file.read_text().splitlines() == ["root"]


def test_configure_host_waits_for_an_agent_addressed_without_a_scheme(nomad_host, agent_health):
    """NOMAD_ADDR=127.0.0.1:PORT (no scheme, as every other task takes it): the health wait after the restart
    asks the same address with http://, as the Nomad client of the other tasks does (it used to pass it to
    urllib raw and blame client.hcl after the whole nomad_health_timeout)."""
    bare = agent_health.url.removeprefix("http://")
    env = {k: v for k, v in inv_env(nomad_host).items() if k != "MSH_NOMAD_ADDR"}
    done = inv("configure-host", env={**env, "NOMAD_ADDR": bare})
    assert nomad_host.restarts() == 1 and "/v1/agent/health" in agent_health.hits
    assert "Nomad agent healthy" in done.stderr


def test_configure_host_ansible_runs_the_playbook_with_the_same_result(nomad_host, agent_health):
    env = inv_env(nomad_host)
    before = snapshot(nomad_host.root)

    dry = inv("configure-host", "--ansible", "--dry-run", env=env)
    assert "MLFLOW_BEGIN" in dry.stdout  # the playbook's --check --diff
    assert snapshot(nomad_host.root) == before and nomad_host.restarts() == 0

    done = inv("configure-host", "--ansible", env=env)
    assert "failed=0" in done.stdout  # ansible-playbook's own recap
    assert nomad_host.client_config.read_text() == expected_client_hcl(nomad_host)
    assert ids(nomad_host.backend) == (1000, 1000, "0774")
    assert nomad_host.job_target.read_bytes() == nomad_host.job_source.read_bytes()
    assert nomad_host.restarts() == 1 and "/v1/agent/health" in agent_health.hits
    assert "no change" in inv("configure-host", env=env).stderr  # the task agrees with what the playbook did


# --- deploy and migrate: their host step -----------------------------------------------------------------
def test_deploy_accept_host_key(nomad_double, ssh_server, nomad_user, tmp_path):
    cluster = nomad_double.cluster
    project = make_project(tmp_path / "project", docker=None)
    known_hosts = unknown_key(tmp_path)
    env = host_env(cluster, ssh_server, tmp_path, known_hosts)

    refused = inv("deploy", "--skip-build", cwd=project, env=env, expect=1)
    refused_as_unknown(refused, ssh_server)
    assert nomad_double.registrations() == [] and not known_hosts.exists()
    assert not (tmp_path / "jobs").exists()

    inv("deploy", "--skip-build", "--accept-host-key", cwd=project, env=env)
    assert recorded(known_hosts, ssh_server)
    assert (tmp_path / "jobs" / "mlflow" / "mlflow.nomad.hcl").read_bytes() == \
        (project / "nomad" / "mlflow.nomad.hcl").read_bytes()  # configure-host ran, over SSH
    (alloc,) = nomad_double.running_allocs()
    assert nomad_double.container_of(alloc["ID"]).attrs["Config"]["Image"] == cluster.images.ref("0.99")


def test_migrate_accept_host_key(nomad_double, ssh_server, nomad_user, tmp_path):
    """migrate reads the store over SSH first: refused for the unknown key; accepted, it gets as far as the
    store, which has no database here (exit 15, nothing changed)."""
    cluster = nomad_double.cluster
    project = make_project(tmp_path / "project", docker=None)
    known_hosts = unknown_key(tmp_path)
    env = host_env(cluster, ssh_server, tmp_path, known_hosts)

    refused = inv("migrate", "--skip-build", cwd=project, env=env, expect=1)
    refused_as_unknown(refused, ssh_server)
    assert not known_hosts.exists()

    read = inv("migrate", "--skip-build", "--accept-host-key", cwd=project, env=env, expect=15)
    assert f"no MLflow database at {cluster.backend / 'mlflow.db'}" in errors(read)[0]
    assert recorded(known_hosts, ssh_server)
    assert nomad_double.registrations() == [] and not (tmp_path / "backups").exists()


# --- dns, dnsmasq backend ----------------------------------------------------------------------------------
@pytest.fixture
def dnsmasq_env(dns_server):
    """make(ssh_server, **more): `inv dns` on the test dnsmasq over SSH, a name and a file of the test's own;
    the file is removed and dnsmasq restarted afterwards."""
    domain = f"flags-{uuid.uuid4().hex[:6]}.lan"
    name = f"40-{domain}.conf"

    def make(ssh_server, **more) -> dict:
        env = clean_env()
        env.update(ssh_server.env(), MSH_DNS_BACKEND="dnsmasq", MSH_DOMAIN=domain,
                   MSH_DNSMASQ_DIR=str(dns_server.conf_dir), MSH_DNSMASQ_FILE=name,
                   MSH_DNSMASQ_RESTART_COMMAND=dns_server.restart_command,
                   MSH_DNSMASQ_TEST_COMMAND=dns_server.test_command, MSH_DNS_SERVER="127.0.0.1",
                   MSH_DNS_PORT=str(dns_server.port), MSH_DNS_CHECK_TIMEOUT="10", **more)
        return env

    make.domain, make.file = domain, dns_server.conf_dir / name
    yield make
    if make.file.exists():
        make.file.unlink()
        subprocess.run([dns_server.restart_command], check=True, capture_output=True, timeout=30)


def test_dns_accept_host_key_then_remove_and_dry_runs(dnsmasq_env, dns_server, ssh_server, tmp_path):
    known_hosts = unknown_key(tmp_path)
    env = dnsmasq_env(ssh_server, MSH_KNOWN_HOSTS=str(known_hosts))
    domain, record = dnsmasq_env.domain, dnsmasq_env.file
    line = f"cname={domain},{PROXY_NAME}\n"

    refused = inv("dns", env=env, expect=1)
    refused_as_unknown(refused, ssh_server)
    assert not record.exists() and not known_hosts.exists()

    dry = inv("dns", "--dry-run", "--accept-host-key", env=env)
    assert "dry run: nothing was changed" in dry.stderr and domain in dry.stderr
    assert not record.exists() and cname_of(dns_server, domain) is None
    assert recorded(known_hosts, ssh_server)  # the key is accepted on a dry run too: it changes nothing remote

    added = inv("dns", env=env)
    assert record.read_text() == line and cname_of(dns_server, domain) == PROXY_NAME
    assert f"{domain} → CNAME {PROXY_NAME} → 127.0.0.1" in added.stderr

    dry = inv("dns", "--remove", "--dry-run", env=env)
    assert "dry run: nothing was changed" in dry.stderr
    assert record.read_text() == line and cname_of(dns_server, domain) == PROXY_NAME

    inv("dns", "--remove", env=env)
    assert not record.exists() or line not in record.read_text()
    assert cname_of(dns_server, domain) is None


def test_dns_ask_sudo_pass_reads_the_password(dnsmasq_env, dns_server, password_sudo_server):
    env = dnsmasq_env(password_sudo_server)
    domain, record = dnsmasq_env.domain, dnsmasq_env.file

    asked = inv("dns", env=env, expect=1)
    assert "asks for a password" in errors(asked)[0] and "--ask-sudo-pass" in asked.stderr
    assert not record.exists()

    done = inv("dns", "--ask-sudo-pass", env=env, stdin=PASSWORD + "\n")
    assert PASSWORD not in done.stdout + done.stderr
    assert record.read_text() == f"cname={domain},{PROXY_NAME}\n" and cname_of(dns_server, domain) == PROXY_NAME
