"""configure-host over the real sshd: what ends up on the host, restarts, errors that change nothing.

The two volume folders belong to the image's uid:gid (setting image_user, 1000:1000), checked by
number and by writing in them as that uid; job_dir and the job file to folder_owner.
"""
from __future__ import annotations

import os
import pwd
import grp
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.steps.host import configure
from tests.services import clean_env

from .conftest import CLIENT_HCL, root_squashed, sftp_refusals

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
  host_volume "mlflow-backups" {{
    path      = "{backups}"
    read_only = false
  }}
# MLFLOW_END ANSIBLE MANAGED BLOCK
"""


def expected_client_hcl(host, before=CLIENT_HCL) -> str:
    """The block goes right before the last line with a `}` (the client stanza's end)."""
    head, sep, tail = before.rstrip("\n").rpartition("\n")
    block = BLOCK.format(backend=host.backend, artifacts=host.artifacts, backups=host.backups)
    return head + "\n" + block + tail + "\n"


def attrs(path: Path) -> tuple[str, str, str]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, f"{st.st_mode & 0o7777:04o}"


def ids(path: Path) -> tuple[int, int, str]:
    """(uid, gid, mode): the volume folders' owner is a number (uid 1000 need not exist here)."""
    st = path.stat()
    return st.st_uid, st.st_gid, f"{st.st_mode & 0o7777:04o}"


IMAGE_USER = (1000, 1000, "0774")


def writes_as(uid: int, gid: int, folder: Path) -> subprocess.CompletedProcess:
    """Create a file in ``folder`` as uid:gid with no other groups, as the container's process does."""
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                           "touch", str(folder / "written-by-the-image-user")], capture_output=True, text=True)


def inv(*args, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def inv_env(host, **more) -> dict:
    """The environment `inv` runs with: the host's settings as MSH_ variables, nothing from the shell."""
    env = clean_env()
    env.update({f"MSH_{k.upper()}": str(host.settings[k]) for k in (
        "host", "ssh_port", "ssh_user", "ssh_key", "known_hosts", "nomad_client_config", "backend_path",
        "artifacts_path", "backups_path", "job_dir", "job_file", "folder_owner", "folder_group", "nomad_restart_command",
        "nomad_addr", "nomad_health_timeout")})
    env.update(more)
    return env


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
    for folder in (nomad_host.backend, nomad_host.artifacts, nomad_host.backups):
        assert ids(folder) == IMAGE_USER, folder
    assert attrs(nomad_host.job_dir) == ("nomad", "root", "0774")
    assert nomad_host.job_target.read_bytes() == nomad_host.job_source.read_bytes()
    assert attrs(nomad_host.job_target) == ("nomad", "nomad", "0644")
    assert nomad_host.restarts_file.read_text().splitlines() == ["root"]  # once, under sudo
    assert "/v1/agent/health" in agent_health.hits
    # the folders first: a host refusing them stops the run before client.hcl changes
    assert [(c.action, c.target) for c in plan] == [
        ("create", str(nomad_host.backend)), ("create", str(nomad_host.artifacts)),
        ("create", str(nomad_host.backups)),  # the nightly backup's host volume
        ("create", str(nomad_host.job_dir)), ("update", str(nomad_host.client_config)),
        ("create", str(nomad_host.job_target)), ("restart", "nomad")]
    assert plan.changes[0].detail == "folder 1000:1000 0774"


def test_fresh_host_volume_folders_are_writable_by_the_image_user(nomad_host):
    """Issue 12: the image runs as uid 1000 with no other groups; nomad:root 0774 kept it out."""
    configure.run(nomad_host.settings)

    for folder in (nomad_host.backend, nomad_host.artifacts):
        wrote = writes_as(1000, 1000, folder)
        assert wrote.returncode == 0, wrote.stderr
        assert ids(folder / "written-by-the-image-user")[:2] == (1000, 1000)
    # what the entrypoint met before (exit 78): a nomad:root 0774 folder is not writable by uid 1000
    refused = writes_as(1000, 1000, nomad_host.job_dir)
    assert refused.returncode != 0 and "Permission denied" in refused.stderr


@pytest.mark.parametrize("who", ["nomad's uid:gid (names on the host)", "4242:4243 (no names on the host)"])
def test_another_image_user_is_honoured_and_compared_by_number(nomad_host, who):
    nomad = pwd.getpwnam("nomad")
    uid, gid = (nomad.pw_uid, nomad.pw_gid) if who.startswith("nomad") else (4242, 4243)
    host = nomad_host.with_settings(image_user=f"{uid}:{gid}")

    first = configure.run(host.settings)
    second = configure.run(host.settings)

    assert first.changes[0].detail == f"folder {uid}:{gid} 0774"
    for folder in (host.backend, host.artifacts):
        assert ids(folder) == (uid, gid, "0774")
        assert writes_as(uid, gid, folder).returncode == 0
    assert attrs(host.job_dir) == ("nomad", "root", "0774")
    assert second.empty  # `ls -l` shows "nomad nomad" (or bare numbers): still no change


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
    old_block = BLOCK.format(backend="/srv/old/backend", artifacts="/srv/old/artifacts", backups="/srv/old/backups")
    before = "data_dir = \"/x\"\n\nclient {\n  enabled = true\n" + old_block + "  # after the block\n}\n\nplugin \"docker\" {\n}\n"
    nomad_host.client_config.write_text(before)

    configure.run(nomad_host.settings)

    new_block = BLOCK.format(backend=nomad_host.backend, artifacts=nomad_host.artifacts, backups=nomad_host.backups)
    assert nomad_host.client_config.read_text() == before.replace(old_block, new_block)
    assert nomad_host.restarts() == 1


def test_wrong_folder_mode_and_owner_are_fixed_without_restart(nomad_host):
    configure.run(nomad_host.settings)
    nomad = pwd.getpwnam("nomad")
    os.chown(nomad_host.backend, nomad.pw_uid, 0)  # as the playbook and configure-host used to leave it
    os.chmod(nomad_host.artifacts, 0o700)
    os.chown(nomad_host.job_target, 0, 0)

    plan = configure.run(nomad_host.settings)

    assert [(c.action, c.target, c.detail) for c in plan] == [
        ("update", str(nomad_host.backend), "owner nomad:root → 1000:1000"),
        ("update", str(nomad_host.artifacts), "mode 0700 → 0774"),
        ("update", str(nomad_host.job_target), "owner root:root → nomad:nomad")]
    assert ids(nomad_host.backend) == ids(nomad_host.artifacts) == IMAGE_USER
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
    env = inv_env(nomad_host)

    first = inv("configure-host", env=env)
    second = inv("configure-host", env=env)

    assert first.returncode == 0, first.stderr
    assert str(nomad_host.client_config) in first.stderr and "restart" in first.stderr
    assert f"{nomad_host.backend}  folder 1000:1000 0774" in first.stderr
    assert second.returncode == 0 and "no change" in second.stderr
    assert nomad_host.restarts() == 1
    assert ids(nomad_host.backend) == ids(nomad_host.artifacts) == IMAGE_USER


def test_task_dry_run_shows_the_owner_change(nomad_host):
    configure.run(nomad_host.settings)
    os.chown(nomad_host.backend, pwd.getpwnam("nomad").pw_uid, 0)
    before = snapshot(nomad_host.root)

    dry = inv("configure-host", "--dry-run", env=inv_env(nomad_host))

    assert dry.returncode == 0, dry.stderr
    assert f"update {nomad_host.backend}  owner nomad:root → 1000:1000" in dry.stderr
    assert "would change (1)" in dry.stderr and "dry run: nothing was changed" in dry.stderr
    assert snapshot(nomad_host.root) == before


@pytest.mark.parametrize("value", ["mlflow", "1000", "1000:", "1000:mlflow", "-1:1000"])
@pytest.mark.parametrize("flags", [[], ["--ansible"]])
def test_task_refuses_a_bad_image_user_with_one_red_line(nomad_host, value, flags):
    before = snapshot(nomad_host.root)

    result = inv("configure-host", *flags, env=inv_env(nomad_host, MSH_IMAGE_USER=value))

    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: image_user must be the image's UID:GID as numbers, like 1000:1000, not {value!r}"]
    assert "→ set image_user (settings.yaml or MSH_IMAGE_USER)" in result.stderr
    assert snapshot(nomad_host.root) == before and nomad_host.restarts() == 0


def test_root_squash_refusal_names_the_folder_and_the_fix(nomad_host, agent_health):
    """/opt/nomad/data on an NFS export with root_squash: root on the client cannot chown there.
    The mechanism is real (a bindfs mount refusing chown), not a mocked function."""
    data = nomad_host.root / "data"  # backend_path and artifacts_path are under it
    export = nomad_host.root / "nfs-export"  # the folder as the NFS server holds it
    env = inv_env(nomad_host)
    with root_squashed(export, data):
        refused = inv("configure-host", env=env)

        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, refused.stderr
        assert errors[0].startswith(f"error: cannot give {nomad_host.backend} to 1000:1000 on 127.0.0.1: chown: ")
        assert errors[0].endswith("Operation not permitted")
        assert (f"→ it is probably on an NFS export with root_squash: on the NFS server run `mkdir -p "
                f"{nomad_host.backend} && chown 1000:1000 {nomad_host.backend} && chmod 0774 "
                f"{nomad_host.backend}`") in refused.stderr
        assert "all_squash,anonuid=1000,anongid=1000" in refused.stderr
        assert refused.stderr.rstrip().endswith("then run configure-host again")
        # the folders come first: client.hcl and Nomad are untouched
        assert nomad_host.client_config.read_text() == CLIENT_HCL and nomad_host.restarts() == 0

        # the fix, made where root is root (the NFS server), then configure-host again
        for folder in ("backend", "artifacts", "backups"):
            server_side = export / "mlflow" / folder
            server_side.mkdir(parents=True, exist_ok=True)
            os.chown(server_side, 1000, 1000)
            os.chmod(server_side, 0o774)
        again = inv("configure-host", env=env)

        assert again.returncode == 0, again.stderr
        assert nomad_host.client_config.read_text() == expected_client_hcl(nomad_host)
        assert nomad_host.restarts() == 1 and "/v1/agent/health" in agent_health.hits
        assert ids(nomad_host.backend) == ids(nomad_host.artifacts) == IMAGE_USER
        assert writes_as(1000, 1000, nomad_host.backend).returncode == 0
    assert not os.path.ismount(data)


def test_a_refused_mkdir_names_the_folder_too():
    """mkdir under root_squash fails with "Permission denied" (bindfs passes mkdir through, so this
    one is the message alone)."""
    op = configure.Op("folder", "/opt/nomad/data/mlflow/backend", owner="1000", group="1000", mode="0774")
    reason = "mkdir: cannot create directory '/opt/nomad/data/mlflow': Permission denied"

    err = configure.folder_refused(op, reason, create=True, host="m700")

    assert err.message == f"cannot create /opt/nomad/data/mlflow/backend on m700: {reason}"
    assert "NFS export with root_squash" in err.hint and "chown 1000:1000 /opt/nomad/data/mlflow/backend" in err.hint


def test_task_error_is_one_red_line_with_the_fix(nomad_host):
    env = clean_env()
    env.update({"MSH_HOST": "127.0.0.1", "MSH_SSH_PORT": str(_closed_port()), "MSH_KNOWN_HOSTS": "/dev/null",
                "MSH_JOB_FILE": str(nomad_host.job_source)})

    result = subprocess.run([sys.executable, "-m", "invoke", "configure-host"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot reach 127.0.0.1:" in result.stderr and "→" in result.stderr


def _closed_port() -> int:
    from tests.services import free_port

    return free_port()


# client.hcl as the original recipe's playbook left it: its `block: |` had the stanzas at column 0.
RECIPE_CLIENT_HCL = """\
# Nomad client configuration
data_dir = "/opt/nomad/data"

client {{
  enabled = true
  servers = ["127.0.0.1:4647"]

  meta {{
    role = "apps"
  }}
# MLFLOW_BEGIN ANSIBLE MANAGED BLOCK
host_volume "mlflow-backend-store" {{
  path      = "{backend}"
  read_only = false
}}
host_volume "mlflow-artifacts" {{
  path      = "{artifacts}"
  read_only = false
}}
host_volume "mlflow-backups" {{
  path      = "{backups}"
  read_only = false
}}
# MLFLOW_END ANSIBLE MANAGED BLOCK
}}
"""


def test_the_recipes_unindented_block_is_kept_and_nomad_not_restarted(nomad_host):
    """Issue 14: the same host volumes, only whitespace differs: client.hcl is not written (same inode,
    bytes and mtime), Nomad is not restarted; the plan says the volumes are in place."""
    recipe = RECIPE_CLIENT_HCL.format(backend=nomad_host.backend, artifacts=nomad_host.artifacts,
                                      backups=nomad_host.backups).encode()
    nomad_host.client_config.write_bytes(recipe)
    os.utime(nomad_host.client_config, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before = nomad_host.client_config.stat()
    env = inv_env(nomad_host)

    dry = inv("configure-host", "--dry-run", env=env)
    result = inv("configure-host", env=env)
    again = inv("configure-host", env=env)

    for run in (dry, result, again):
        assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
        assert (f"{nomad_host.client_config}: the MLflow host volumes are in place (same host volumes, only "
                f"whitespace differs)") in run.stderr
        assert f"update {nomad_host.client_config}" not in run.stderr
        assert "restart nomad" not in run.stderr and "restarting Nomad" not in run.stderr
    assert "no change" in again.stderr
    after = nomad_host.client_config.stat()
    assert nomad_host.client_config.read_bytes() == recipe
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == (before.st_ino, before.st_mtime_ns,
                                                                     before.st_ctime_ns)
    assert nomad_host.restarts() == 0
    assert ids(nomad_host.backend) == IMAGE_USER and nomad_host.job_target.exists()  # the rest is done


def test_whitespace_inside_a_path_string_is_a_change(nomad_host):
    recipe = RECIPE_CLIENT_HCL.format(backend=f"{nomad_host.backend} ", artifacts=nomad_host.artifacts,
                                      backups=nomad_host.backups)
    nomad_host.client_config.write_text(recipe)

    result = inv("configure-host", env=inv_env(nomad_host))

    assert result.returncode == 0, result.stderr
    assert f"update {nomad_host.client_config}  replace the MLflow host volumes" in result.stderr
    assert "only whitespace differs" not in result.stderr
    assert nomad_host.client_config.read_text() == expected_client_hcl(nomad_host)
    assert nomad_host.restarts() == 1


def test_task_configures_a_host_without_sftp(no_sftp_host, no_sftp_server):
    """Issue 14: sshd has no `Subsystem sftp`: client.hcl and the job file go through the exec channel,
    with the same bytes, owner and mode as over SFTP; SFTP is asked for once."""
    job = b'job "mlflow" {\n  # \xc3\xa9 \xff\xfe\x00 not UTF-8\r\n  datacenters = ["DC0"]\n}\n'
    no_sftp_host.job_source.write_bytes(job)
    os.chmod(no_sftp_host.client_config, 0o640)
    os.chown(no_sftp_host.client_config, pwd.getpwnam("nomad").pw_uid, 0)
    refused = sftp_refusals(no_sftp_server)
    env = inv_env(no_sftp_host)

    first = inv("configure-host", env=env)
    second = inv("configure-host", env=env)

    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr
    assert no_sftp_host.client_config.read_text() == expected_client_hcl(no_sftp_host)
    assert attrs(no_sftp_host.client_config) == ("nomad", "root", "0640")
    assert no_sftp_host.job_target.read_bytes() == job
    assert attrs(no_sftp_host.job_target) == ("nomad", "nomad", "0644")
    assert ids(no_sftp_host.backend) == ids(no_sftp_host.artifacts) == IMAGE_USER
    assert no_sftp_host.restarts() == 1
    assert second.returncode == 0 and "no change" in second.stderr, second.stderr
    assert sftp_refusals(no_sftp_server) == refused + 1  # the first run's one connection, once
