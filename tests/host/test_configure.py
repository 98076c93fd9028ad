"""configure-host over the real sshd: what ends up on the host, restarts, errors that change nothing."""
from __future__ import annotations

import os
import pwd
import grp
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_self_host.errors import UserError
from mlflow_self_host.host import configure

from .conftest import CLIENT_HCL

ROOT = Path(__file__).resolve().parents[2]

BLOCK = """\
# MLFLOW_BEGIN ANSIBLE MANAGED BLOCK
  host_volume "mlflow-backend-store" {{
    path      = "{backend}"
    read_only = false
  }}
  host_volume "mlflow-artifacts" {{
    path      = "{artifacts}"
    read_only = false
  }}
# MLFLOW_END ANSIBLE MANAGED BLOCK
"""


def expected_client_hcl(host, before=CLIENT_HCL) -> str:
    """The block goes right before the last line with a `}` (the client stanza's end)."""
    head, sep, tail = before.rstrip("\n").rpartition("\n")
    block = BLOCK.format(backend=host.backend, artifacts=host.artifacts)
    return head + "\n" + block + tail + "\n"


def attrs(path: Path) -> tuple[str, str, str]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, f"{st.st_mode & 0o7777:04o}"


def snapshot(root: Path) -> dict:
    """Every file and folder under root with its bytes, owner, mode and inode."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.stat()
            out[str(p)] = (p.read_bytes() if p.is_file() else None, st.st_uid, st.st_gid, st.st_mode, st.st_ino)
    return out


def test_fresh_host_gets_block_folders_job_file_and_one_restart(nomad_host, agent_health):
    plan = configure.run(nomad_host.settings)

    assert nomad_host.client_config.read_text() == expected_client_hcl(nomad_host)
    for folder in (nomad_host.backend, nomad_host.artifacts, nomad_host.job_dir):
        assert attrs(folder) == ("nomad", "root", "0774"), folder
    assert nomad_host.job_target.read_bytes() == nomad_host.job_source.read_bytes()
    assert attrs(nomad_host.job_target) == ("nomad", "nomad", "0644")
    assert nomad_host.restarts_file.read_text().splitlines() == ["root"]  # once, under sudo
    assert "/v1/agent/health" in agent_health.hits
    assert [c.action for c in plan] == ["update", "create", "create", "create", "create", "restart"]


def test_second_run_changes_nothing_and_restarts_nothing(nomad_host):
    configure.run(nomad_host.settings)
    before = snapshot(nomad_host.root)

    plan = configure.run(nomad_host.settings)

    assert plan.empty
    assert snapshot(nomad_host.root) == before
    assert nomad_host.restarts() == 1


def test_dry_run_shows_the_diff_and_changes_nothing(nomad_host, agent_health):
    before = snapshot(nomad_host.root)

    plan = configure.run(nomad_host.settings, dry_run=True)

    assert snapshot(nomad_host.root) == before
    assert not nomad_host.backend.exists() and nomad_host.restarts() == 0 and not agent_health.hits
    diff = next(c.diff for c in plan if c.target == str(nomad_host.client_config))
    assert "+# MLFLOW_BEGIN ANSIBLE MANAGED BLOCK" in diff and f'+    path      = "{nomad_host.backend}"' in diff


def test_a_block_with_other_paths_is_replaced_in_place(nomad_host):
    old_block = BLOCK.format(backend="/srv/old/backend", artifacts="/srv/old/artifacts")
    before = "data_dir = \"/x\"\n\nclient {\n  enabled = true\n" + old_block + "  # after the block\n}\n\nplugin \"docker\" {\n}\n"
    nomad_host.client_config.write_text(before)

    configure.run(nomad_host.settings)

    new_block = BLOCK.format(backend=nomad_host.backend, artifacts=nomad_host.artifacts)
    assert nomad_host.client_config.read_text() == before.replace(old_block, new_block)
    assert nomad_host.restarts() == 1


def test_wrong_folder_mode_and_owner_are_fixed_without_restart(nomad_host):
    configure.run(nomad_host.settings)
    os.chmod(nomad_host.artifacts, 0o700)
    os.chown(nomad_host.job_target, 0, 0)

    plan = configure.run(nomad_host.settings)

    assert [(c.action, c.target) for c in plan] == [("update", str(nomad_host.artifacts)),
                                                    ("update", str(nomad_host.job_target))]
    assert attrs(nomad_host.artifacts) == ("nomad", "root", "0774")
    assert attrs(nomad_host.job_target) == ("nomad", "nomad", "0644")
    assert nomad_host.restarts() == 1


def test_client_config_keeps_its_owner_and_mode(nomad_host):
    os.chmod(nomad_host.client_config, 0o640)
    os.chown(nomad_host.client_config, pwd.getpwnam("nomad").pw_uid, 0)

    configure.run(nomad_host.settings)

    assert attrs(nomad_host.client_config) == ("nomad", "root", "0640")


@pytest.mark.parametrize("case", ["client.hcl missing", "no closing brace", "user missing", "job file missing"])
def test_errors_leave_the_host_untouched(nomad_host, case):
    host = nomad_host
    if case == "client.hcl missing":
        host = nomad_host.with_settings(nomad_client_config=str(nomad_host.root / "nomad.d" / "nope.hcl"))
        words = ["nope.hcl", "not found"]
    elif case == "no closing brace":
        nomad_host.client_config.write_text('data_dir = "/opt/nomad/data"\nclient {\n  enabled = true\n')
        words = ["client.hcl", "no closing `}`"]
    elif case == "user missing":
        host = nomad_host.with_settings(folder_owner="msh-no-such-user")
        words = ["user msh-no-such-user does not exist"]
    else:
        nomad_host.job_source.unlink()
        words = ["job file", "not found"]
    before = snapshot(nomad_host.root)

    with pytest.raises(UserError) as err:
        configure.run(host.settings)

    assert all(w in err.value.message for w in words), err.value.message
    assert snapshot(nomad_host.root) == before
    assert not nomad_host.backend.exists() and nomad_host.restarts() == 0


def test_agent_not_healthy_after_restart_is_an_error(nomad_host, agent_health):
    agent_health.status = 500
    host = nomad_host.with_settings(nomad_health_timeout=1)

    with pytest.raises(UserError) as err:
        configure.run(host.settings)

    assert "did not answer healthy within 1s" in err.value.message
    assert "journalctl -u nomad" in err.value.hint
    assert nomad_host.restarts() == 1 and agent_health.hits


def test_task_prints_changes_and_exits_zero_then_no_change(nomad_host):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSH_", "NOMAD_"))}
    env.update({f"MSH_{k.upper()}": str(nomad_host.settings[k]) for k in (
        "host", "ssh_port", "ssh_user", "ssh_key", "known_hosts", "nomad_client_config", "backend_path",
        "artifacts_path", "job_dir", "job_file", "folder_owner", "nomad_restart_command", "nomad_addr")})
    inv = [sys.executable, "-m", "invoke", "configure-host"]

    first = subprocess.run(inv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    second = subprocess.run(inv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert first.returncode == 0, first.stderr
    assert str(nomad_host.client_config) in first.stderr and "restart" in first.stderr
    assert second.returncode == 0 and "no change" in second.stderr
    assert nomad_host.restarts() == 1


def test_task_error_is_one_red_line_with_the_fix(nomad_host):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSH_", "NOMAD_"))}
    env.update({"MSH_HOST": "127.0.0.1", "MSH_SSH_PORT": str(_closed_port()), "MSH_KNOWN_HOSTS": "/dev/null",
                "MSH_JOB_FILE": str(nomad_host.job_source)})

    result = subprocess.run([sys.executable, "-m", "invoke", "configure-host"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot reach 127.0.0.1:" in result.stderr and "→" in result.stderr


def _closed_port() -> int:
    from tests.services import free_port

    return free_port()
