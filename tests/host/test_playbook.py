"""The kept playbook and configure-host converge: either one first, the other then changes nothing."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.steps.host import configure

from .conftest import CLIENT_HCL, make_nomad_host, root_squashed
from .test_configure import IMAGE_USER, attrs, expected_client_hcl, ids, snapshot


@pytest.fixture
def two_hosts(tmp_path, ssh_server, agent_health, nomad_user, project_env):
    return (make_nomad_host(tmp_path / "a", ssh_server, agent_health.url),
            make_nomad_host(tmp_path / "b", ssh_server, agent_health.url))


def tree(root: Path) -> dict:
    """Every folder and file under root (the restart log aside) by relative path: uid, gid, mode."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.name != "restarts.log":
                st = p.stat()
                out[str(p.relative_to(root))] = (st.st_uid, st.st_gid, f"{st.st_mode & 0o7777:04o}")
    return out


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
    for folder in (a.backend, a.artifacts):
        assert ids(folder) == IMAGE_USER
    assert attrs(a.job_dir) == ("nomad", "root", "0774")
    assert attrs(a.job_target) == ("nomad", "nomad", "0644")
    # ...and the same folders between them (mkdir -p's parents: root's, 0755)
    assert tree(a.root) == tree(b.root)
    assert ids(a.backend.parent)[:2] == (0, 0)


def test_playbook_takes_image_user_from_the_settings(two_hosts):
    a, _ = two_hosts
    host = a.with_settings(image_user="4242:4243")

    configure.run(host.settings, use_ansible=True)

    assert ids(a.backend) == ids(a.artifacts) == (4242, 4243, "0774")
    assert configure.run(host.settings).empty


def test_playbook_stops_at_a_root_squashed_folder_before_client_hcl(two_hosts, capfd):
    """Ansible's own message (its file module's "chown failed"), and client.hcl left as it was."""
    a, _ = two_hosts
    with root_squashed(a.root / "nfs-export", a.root / "data"):
        with pytest.raises(UserError, match="ansible-playbook failed"):
            configure.run(a.settings, use_ansible=True)
        out = capfd.readouterr().out
    assert "chown failed" in out and "Operation not permitted" in out and str(a.backend) in out
    assert a.client_config.read_text() == CLIENT_HCL and a.restarts() == 0


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

    with_password = {"sudo_password": PASSWORD}
    configure.run(a.settings.with_overrides(with_password))
    configure.run(b.settings.with_overrides(with_password), use_ansible=True)

    assert PASSWORD not in capfd.readouterr().out
    assert a.client_config.read_text() == expected_client_hcl(a)
    assert b.client_config.read_text() == expected_client_hcl(b)
    assert a.restarts() == b.restarts() == 1
    assert attrs(b.job_target) == attrs(a.job_target) == ("nomad", "nomad", "0644")
