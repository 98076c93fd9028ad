"""`inv init` with flags, as a script runs it (no terminal), against the test sshd, registry, dnsmasq and the Nomad
double: it checks each value, writes settings.yaml with what differs from invoke.yaml's defaults, and says
"no change" the second time; a bad value (exit 2) or an unreachable registry (exit 7) writes nothing."""
from __future__ import annotations

from pathlib import Path

import pytest
from invoke.util import yaml

from tests.doubles.nomad import NomadDouble
from tests.flags.conftest import errors, inv, make_project
from tests.services import free_port
from tests.services.mlflow_image import clean_env


@pytest.fixture(scope="module")
def nomad_agent():
    """The Nomad double's API alone (init asks for its leader; nothing is placed)."""
    double = NomadDouble()
    yield double
    double.stop()


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "project", docker=None)


def init_env(ssh_server, dns_server, known_hosts: Path | None = None) -> dict:
    """What the test machine differs in from a homelab beyond init's questions: the sshd's and dnsmasq's ports
    and the SSH client's key and known_hosts (a user's ~/.ssh); doctor's deadline shorter."""
    env = clean_env()
    env.update(MSH_SSH_PORT=str(ssh_server.port), MSH_SSH_KEY=str(ssh_server.key_file),
               MSH_KNOWN_HOSTS=str(known_hosts or ssh_server.known_hosts), MSH_DNS_PORT=str(dns_server.port),
               MSH_DOCTOR_TIMEOUT="4")
    return env


def flags(registry_, ssh_server_, nomad_agent_, **more) -> list[str]:
    """init's flags for the test services; ``more`` replaces some (``registry="..."``, ``**{"dns-backend": ...}``)."""
    values = {"registry": registry_.address, "host": ssh_server_.host, "ssh-user": ssh_server_.user,
              "nomad-addr": nomad_agent_.address, "domain": "mlflow.lan", "dns-target": "traefik.lan",
              "dns-backend": "dnsmasq", "dns-server": "127.0.0.1", "store": "sqlite", **more}
    return [part for name, value in values.items() for part in (f"--{name}", str(value))]


def test_init_writes_what_differs_then_says_no_change(project, registry, ssh_server, dns_server, nomad_agent):
    env = init_env(ssh_server, dns_server)
    first = inv("init", *flags(registry, ssh_server, nomad_agent), cwd=project, env=env, timeout=120)
    written = (project / "settings.yaml").read_text()
    assert written.startswith("# settings.yaml") and "commit" in written.splitlines()[2].lower()
    assert yaml.safe_load(written) == {"mlflow": {
        "image": {"registry": registry.address},
        "host": {"host": ssh_server.host, "ssh_user": ssh_server.user},
        "nomad": {"nomad_addr": nomad_agent.address},
        "dns": {"dns_backend": "dnsmasq", "dns_server": "127.0.0.1"},  # domain, dns_target, store: the defaults
    }}
    assert f"+    registry: {registry.address}" in first.stderr  # it shows what it wrote
    assert "inv doctor" in first.stdout and "Nomad agent" in first.stdout  # and ends with doctor's table
    sources = inv("config", "--json", cwd=project, env={**env, "MSH_PLATFORM": "linux/amd64",
                                                        "MSH_SERVICE_PROVIDER": "nomad"}).stdout
    assert '"source": "settings.yaml"' in sources

    again = inv("init", *flags(registry, ssh_server, nomad_agent), cwd=project, env=env, timeout=120)
    assert "settings.yaml: no change" in again.stderr
    bare = inv("init", cwd=project, env=env, timeout=120)  # no flags, no terminal: the current values
    assert "settings.yaml: no change" in bare.stderr
    assert (project / "settings.yaml").read_text() == written


def test_dry_run_shows_the_file_and_its_diff_and_writes_nothing(project, registry, ssh_server, dns_server,
                                                                nomad_agent):
    env = init_env(ssh_server, dns_server)
    dry = inv("init", "--dry-run", *flags(registry, ssh_server, nomad_agent), cwd=project, env=env)
    assert f"+    registry: {registry.address}" in dry.stderr and "dry run" in dry.stderr
    assert not (project / "settings.yaml").exists()
    inv("init", *flags(registry, ssh_server, nomad_agent), cwd=project, env=env)
    before = (project / "settings.yaml").read_text()
    changed = inv("init", "-d", *flags(registry, ssh_server, nomad_agent, domain="ml.home"), cwd=project, env=env)
    assert "+    domain: ml.home" in changed.stderr
    assert (project / "settings.yaml").read_text() == before


@pytest.mark.parametrize("bad, says", [({"registry": "http://registry.lan:5000"}, "flag --registry: registry"),
                                       ({"dns-backend": "bind"}, "flag --dns-backend: dns_backend"),
                                       ({"host": "m700 m701"}, "flag --host: host")])
def test_a_bad_value_exits_2_writing_nothing(project, registry, ssh_server, dns_server, nomad_agent, bad, says):
    env = init_env(ssh_server, dns_server)
    (project / "settings.yaml").write_text("mlflow:\n  cpu: 300\n")
    done = inv("init", *flags(registry, ssh_server, nomad_agent, **bad), cwd=project, env=env, expect=2)
    (line,) = errors(done)
    assert line.startswith(f"error: {says}")
    assert (project / "settings.yaml").read_text() == "mlflow:\n  cpu: 300\n"


def test_an_unreachable_registry_exits_7_writing_nothing(project, registry, ssh_server, dns_server, nomad_agent):
    env = init_env(ssh_server, dns_server)
    done = inv("init", *flags(registry, ssh_server, nomad_agent, registry=f"127.0.0.1:{free_port()}"), cwd=project,
               env=env, expect=7)
    assert any("registry 127.0.0.1:" in line and "unreachable" in line for line in errors(done))
    assert "settings.yaml was not written" in done.stderr
    assert not (project / "settings.yaml").exists()


def test_an_unknown_host_key_is_shown_and_accepted_only_with_yes(project, tmp_path, registry, ssh_server, dns_server,
                                                                 nomad_agent):
    known_hosts = tmp_path / "known_hosts"
    env = init_env(ssh_server, dns_server, known_hosts)
    refused = inv("init", *flags(registry, ssh_server, nomad_agent), cwd=project, env=env, expect=1)
    (line, summary) = errors(refused)
    assert "host key" in line and "unknown" in line and "SHA256:" in line and "--yes" in refused.stderr
    assert not known_hosts.exists() and not (project / "settings.yaml").exists()
    dry = inv("init", "--yes", "--dry-run", *flags(registry, ssh_server, nomad_agent), cwd=project, env=env)
    assert "would be accepted and recorded" in dry.stderr  # a dry run records no host key either
    assert not known_hosts.exists() and not (project / "settings.yaml").exists()
    inv("init", "--yes", *flags(registry, ssh_server, nomad_agent), cwd=project, env=env)
    assert ssh_server.host_public_key.split()[1] in known_hosts.read_text()
    assert (project / "settings.yaml").exists()
