"""The kept playbook and configure-host converge: either one first, the other then changes nothing."""
from __future__ import annotations

import pytest

from mlflow_self_host.errors import UserError
from mlflow_self_host.host import configure

from .conftest import make_nomad_host
from .test_configure import attrs, expected_client_hcl, snapshot


@pytest.fixture
def two_hosts(tmp_path, ssh_server, agent_health, nomad_user, project_env):
    return (make_nomad_host(tmp_path / "a", ssh_server, agent_health.url),
            make_nomad_host(tmp_path / "b", ssh_server, agent_health.url))


def test_playbook_then_configure_host_and_the_reverse_converge(two_hosts, agent_health, capfd):
    a, b = two_hosts
    # a: the playbook first, then configure-host
    configure.run(a.settings, use_ansible=True)
    assert "failed=0" in capfd.readouterr().out
    assert a.restarts() == 1 and "/v1/agent/health" in agent_health.hits
    after_playbook = snapshot(a.root)
    assert configure.run(a.settings).empty
    assert snapshot(a.root) == after_playbook and a.restarts() == 1

    # b: configure-host first, then the playbook
    configure.run(b.settings)
    after_task = snapshot(b.root)
    capfd.readouterr()
    configure.run(b.settings, use_ansible=True)
    out = capfd.readouterr().out
    assert "changed=0" in out and "failed=0" in out
    assert snapshot(b.root) == after_task and b.restarts() == 1

    # both leave the same client.hcl, folders and job file
    assert a.client_config.read_bytes() == b.client_config.read_bytes().replace(b"/b/", b"/a/")
    assert a.client_config.read_text() == expected_client_hcl(a)
    for folder in (a.backend, a.artifacts, a.job_dir):
        assert attrs(folder) == ("nomad", "root", "0774")
    assert attrs(a.job_target) == ("nomad", "nomad", "0644")


def test_playbook_check_mode_changes_nothing(two_hosts, capfd):
    a, _ = two_hosts
    before = snapshot(a.root)
    configure.run(a.settings, use_ansible=True, dry_run=True)
    assert snapshot(a.root) == before and a.restarts() == 0
    assert "MLFLOW_BEGIN" in capfd.readouterr().out  # the --diff


def test_playbook_refuses_an_unknown_host_key(two_hosts, tmp_path, capfd):
    a, _ = two_hosts
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    before = snapshot(a.root)
    with pytest.raises(UserError, match="ansible-playbook failed"):
        configure.run(a.with_settings(known_hosts=str(empty)).settings, use_ansible=True)
    assert "Host key verification failed" in capfd.readouterr().out
    assert snapshot(a.root) == before


def test_both_ways_work_with_a_sudo_password(tmp_path, password_sudo_server, agent_health, nomad_user, project_env,
                                            capfd):
    from .conftest import PASSWORD

    a = make_nomad_host(tmp_path / "a", password_sudo_server, agent_health.url)
    b = make_nomad_host(tmp_path / "b", password_sudo_server, agent_health.url)
    with pytest.raises(UserError, match="asks for a password"):
        configure.run(a.settings)
    assert not a.backend.exists()

    project_env.setenv("MSH_SUDO_PASSWORD", PASSWORD)
    configure.run(a.settings)
    configure.run(b.settings, use_ansible=True)

    assert PASSWORD not in capfd.readouterr().out
    assert a.client_config.read_text() == expected_client_hcl(a)
    assert b.client_config.read_text() == expected_client_hcl(b)
    assert a.restarts() == b.restarts() == 1
    assert attrs(b.job_target) == attrs(a.job_target) == ("nomad", "nomad", "0644")
