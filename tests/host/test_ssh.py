"""adapters/ssh.py against the real sshd: host keys, auth, sudo, atomic writes, each failure's message."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import paramiko
import pytest

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.adapters.ssh import connect
from mlflow_self_host.core.settings import Settings
from tests.services import free_port

from .conftest import PASSWORD, PASSWORD_USER, sftp_refusals



def settings_for(server, env=None, **overrides) -> Settings:
    return Settings.load(env=env or {}, overrides={**server.settings(), **overrides})


@pytest.fixture
def folder():
    """A folder the SSH user can reach (pytest's tmp_path sits under a 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="msh-ssh-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_stat_ids_gives_numbers_with_the_hosts_names(ssh_server, folder, project_env):
    import pwd

    nobody = pwd.getpwnam("nobody")
    named, unnamed = folder / "named", folder / "unnamed"
    named.mkdir()
    unnamed.mkdir(mode=0o700)
    os.chown(named, nobody.pw_uid, 0)
    os.chmod(named, 0o755)
    os.chown(unnamed, 4242, 4243)  # no user or group has these ids
    os.chmod(unnamed, 0o774)
    with connect(settings_for(ssh_server)) as remote:
        assert remote.stat_ids(str(named)) == (nobody.pw_uid, 0, "0755", "nobody", "root")
        assert remote.stat_ids(str(unnamed), sudo=True) == (4242, 4243, "0774", "UNKNOWN", "UNKNOWN")
        assert remote.stat_ids(str(folder / "missing")) is None


def test_run_read_write_stat(ssh_server, folder, project_env):
    with connect(settings_for(ssh_server)) as remote:
        assert remote.run("id -un").stdout.strip() == ssh_server.user
        assert remote.run("id -un", sudo=True).stdout.strip() == "root"
        assert remote.run("exit 3", check=False).exited == 3
        target = folder / "sub" / "f.txt"
        target.parent.mkdir()
        assert remote.read(str(target)) is None and remote.stat(str(target)) is None
        remote.write(str(target), "a\r\nb é", owner="nobody", group="root", mode="0640")
        assert target.read_bytes() == "a\r\nb é".encode()
        assert remote.stat(str(target)) == ("nobody", "root", "0640")
        assert remote.read(str(target), sudo=True) == "a\r\nb é"
        remote.write(str(target), b"second")  # keeps owner and mode
        assert remote.stat(str(target)) == ("nobody", "root", "0640") and target.read_bytes() == b"second"
        os.chmod(folder, 0o700)  # the SSH user can no longer reach it: an error, not "missing"
        assert remote.stat(str(target), sudo=True) == ("nobody", "root", "0640")
        with pytest.raises(UserError, match="Permission denied"):
            remote.read(str(target))
        assert [p.name for p in target.parent.iterdir()] == ["f.txt"]  # no temp file left
        with pytest.raises(UserError, match="permission denied"):
            remote.get(str(target), folder / "copy")
        remote.get(str(target), folder / "copy", sudo=True)
        assert (folder / "copy").read_bytes() == b"second"
        os.chmod(folder, 0o755)
        with pytest.raises(UserError, match="permission denied"):
            remote.put(folder / "copy", str(folder / "put"))
        remote.put(folder / "copy", str(folder / "put"), sudo=True, mode="0600")
        assert (folder / "put").read_bytes() == b"second" and remote.stat(str(folder / "put")) == ("root", "root", "0600")
        mine = folder / "mine"
        mine.mkdir()
        shutil.chown(mine, ssh_server.user)
        remote.put(folder / "copy", str(mine / "put"))
        remote.get(str(mine / "put"), folder / "copy2")
        assert (folder / "copy2").read_bytes() == b"second"


def test_failed_command_names_it(ssh_server, project_env):
    with connect(settings_for(ssh_server)) as remote:
        with pytest.raises(UserError, match=r"exit 2\): ls /nonexistent-msh"):
            remote.run("ls /nonexistent-msh")


def test_unknown_host_key_is_refused_then_accepted_with_the_flag(ssh_server, tmp_path, project_env):
    known_hosts = tmp_path / "ssh" / "known_hosts"
    settings = settings_for(ssh_server, known_hosts=str(known_hosts))
    with pytest.raises(UserError) as err:
        connect(settings)
    assert f"[127.0.0.1]:{ssh_server.port} is unknown" in err.value.message
    assert "--accept-host-key" in err.value.hint and f"ssh-keyscan -p {ssh_server.port} 127.0.0.1" in err.value.hint
    assert not known_hosts.exists()

    connect(settings.with_overrides({"accept_host_key": True})).close()
    assert known_hosts.read_text() == f"[127.0.0.1]:{ssh_server.port} {ssh_server.host_public_key}\n"
    connect(settings).close()  # now known: no flag needed


def test_changed_host_key_is_refused_even_with_the_flag(ssh_server, tmp_path, project_env):
    other = paramiko.Ed25519Key.from_private_key_file(str(ssh_server.key_file))  # any other ed25519 key
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{ssh_server.port} ssh-ed25519 {other.get_base64()}\n")
    before = known_hosts.read_bytes()
    with pytest.raises(UserError) as err:
        connect(settings_for(ssh_server, known_hosts=str(known_hosts), accept_host_key=True))
    assert "CHANGED" in err.value.message and "ssh-keygen -R" in err.value.hint
    assert known_hosts.read_bytes() == before


def test_unreachable_host_names_host_and_port(ssh_server, project_env):
    port = free_port()
    with pytest.raises(UserError, match=f"cannot reach 127.0.0.1:{port} over SSH"):
        connect(settings_for(ssh_server, ssh_port=port))


def test_refused_authentication(ssh_server, tmp_path, project_env):
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with pytest.raises(UserError) as err:
        connect(settings_for(ssh_server, ssh_key=str(key)))
    assert f"authentication refused for {ssh_server.user}@127.0.0.1:{ssh_server.port}" in err.value.message
    assert "ssh_key" in err.value.hint


def test_sudo_asking_for_a_password_says_how_to_give_it(password_sudo_server, project_env):
    with connect(settings_for(password_sudo_server)) as remote:
        with pytest.raises(UserError) as err:
            remote.run("true", sudo=True)
    assert "sudo on" in err.value.message and "asks for a password" in err.value.message
    assert "--ask-sudo-pass" in err.value.hint and "MSH_SUDO_PASSWORD" in err.value.hint


def test_sudo_with_a_wrong_password_is_refused(password_sudo_server, project_env):
    with connect(settings_for(password_sudo_server, env={"MSH_SUDO_PASSWORD": "wrong password"})) as remote:
        with pytest.raises(UserError) as err:
            remote.run("true", sudo=True)
    assert "refused the password" in err.value.message
    assert "wrong password" not in str(err.value)


def test_sudo_password_from_the_environment_or_the_prompt(password_sudo_server, project_env, monkeypatch):
    with connect(settings_for(password_sudo_server, env={"MSH_SUDO_PASSWORD": PASSWORD})) as remote:
        assert remote.run("id -un", sudo=True).stdout.strip() == "root"
    monkeypatch.setattr("getpass.getpass", lambda prompt="": PASSWORD)
    with connect(settings_for(password_sudo_server, ask_sudo_pass=True)) as remote:
        assert remote.run("id -un", sudo=True).stdout.strip() == "root"
        assert PASSWORD not in remote.run("true", sudo=True).stdout + remote.run("true", sudo=True).stderr


def test_user_without_sudo_rights_is_refused(password_sudo_server, project_env):
    sudoers = Path(f"/etc/sudoers.d/{PASSWORD_USER}")
    saved = sudoers.read_text()
    sudoers.write_text(f"Defaults:{PASSWORD_USER} timestamp_timeout=0\n")
    try:
        with connect(settings_for(password_sudo_server, env={"MSH_SUDO_PASSWORD": PASSWORD})) as remote:
            with pytest.raises(UserError) as err:
                remote.run("true", sudo=True)
        assert "sudo refused" in err.value.message and "sudoers" in err.value.hint
    finally:
        sudoers.write_text(saved)


def test_files_round_trip_through_exec_on_a_host_without_sftp(no_sftp_server, folder, project_env):
    """Issue 14: sshd has no ``Subsystem sftp``. SFTP is asked for once per connection, refused, and
    every copy then goes through ``cat`` on exec channels with the bytes as they are."""
    data = bytes(range(256)) + b"\x00\xff\xfe not UTF-8 \xc3\x28\r\n" + os.urandom(300_000) + b"\x00"
    local = folder / "local.bin"
    local.write_bytes(data)
    mine = folder / "mine"
    mine.mkdir()
    shutil.chown(mine, no_sftp_server.user)
    before = sftp_refusals(no_sftp_server)
    with connect(settings_for(no_sftp_server)) as remote:
        target = folder / "f.bin"
        remote.write(str(target), data, owner="nobody", group="root", mode="0640")
        assert target.read_bytes() == data and remote.stat(str(target)) == ("nobody", "root", "0640")
        remote.write(str(target), b"")  # keeps owner and mode
        assert target.read_bytes() == b"" and remote.stat(str(target)) == ("nobody", "root", "0640")
        remote.put(local, str(mine / "put.bin"))
        assert (mine / "put.bin").read_bytes() == data
        remote.get(str(mine / "put.bin"), folder / "back.bin")
        assert (folder / "back.bin").read_bytes() == data
        with pytest.raises(UserError, match="permission denied") as err:
            remote.put(local, str(folder / "not-mine"))  # root's 0755 folder
        assert "copy it with sudo" in err.value.hint
        with pytest.raises(UserError, match="not found"):
            remote.get(str(mine / "missing"), folder / "missing")
        assert not (folder / "missing").exists()
    assert sftp_refusals(no_sftp_server) == before + 1
    assert sorted(p.name for p in folder.iterdir()) == ["back.bin", "f.bin", "local.bin", "mine"]


@pytest.mark.parametrize("case", ["cat cannot write there", "the exec channel is refused too"])
def test_a_failed_fallback_is_one_red_line_naming_the_sftp_subsystem(no_sftp_server, folder, project_env,
                                                                      monkeypatch, capfd, case):
    """As a task shows it: the one red line says that SFTP is missing and why ``cat`` failed, the
    hint how to add SFTP; no traceback."""
    from invoke import Exit

    from mlflow_self_host.core.taskrun import guarded

    local = folder / "local.bin"
    local.write_bytes(b"\x00data")
    missing = folder / "no-such-folder" / "f.bin"
    target = str(missing)

    def refused(self, command):
        raise paramiko.SSHException("Channel closed.")  # what paramiko raises when sshd refuses a request

    @guarded
    def upload():
        with connect(settings_for(no_sftp_server)) as remote:
            if case == "the exec channel is refused too":
                monkeypatch.setattr(paramiko.Channel, "exec_command", refused)
            remote.put(local, target)

    with pytest.raises(Exit) as exited:
        upload()

    err = capfd.readouterr().err
    assert exited.value.code == 1 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    where = f"{no_sftp_server.user}@127.0.0.1:{no_sftp_server.port}"
    assert len(errors) == 1 and errors[0].startswith(
        f"error: cannot upload to {target} on {where}: the host's sshd has no SFTP subsystem (Channel closed.), "
        f"and copying through `cat` failed too: "), err
    reason = "No such file or directory" if case == "cat cannot write there" else "Channel closed."
    assert errors[0].endswith(reason), err
    assert "→ add `Subsystem sftp internal-sftp` to /etc/ssh/sshd_config" in err and "free space" not in err
    assert not missing.parent.exists()


def test_backup_download_and_restore_upload_on_a_host_without_sftp(no_sftp_server, folder, tmp_path, project_env):
    """backup/ copies through adapters/ssh.py too: ``inv backup --download`` and the upload of a
    downloaded backup that ``inv restore`` makes first, byte for byte, with no SFTP on the host."""
    import sqlite3

    from mlflow_self_host.steps import backup
    from mlflow_self_host.steps.backup.restore import upload

    project = tmp_path / "project"
    project.mkdir()
    for name in ("invoke.yaml", "version.txt"):
        shutil.copy(Path(__file__).resolve().parents[2] / name, project / name)
    db = folder / "backend" / "mlflow.db"
    db.parent.mkdir()
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x BLOB)")
    con.executemany("INSERT INTO t VALUES (?)", [(os.urandom(1000),) for _ in range(200)])
    con.commit()
    con.close()
    settings = Settings.load(root=project, env={}, overrides={
        **no_sftp_server.settings(), "backend_path": str(db.parent), "backups_path": str(folder / "backups"),
        "nomad_addr": "http://127.0.0.1:1"})
    before = sftp_refusals(no_sftp_server)

    taken = backup.backup(settings, download=True, version="0.99")

    assert Path(taken.downloaded).read_bytes() == Path(taken.path).read_bytes()
    uploaded = f"{settings.backups_path}/uploaded.db"
    upload(backup.Target.remote(settings), Path(taken.downloaded), uploaded)
    assert Path(uploaded).read_bytes() == Path(taken.path).read_bytes()
    assert f"{os.stat(uploaded).st_mode & 0o777:o}" == "640"
    assert sftp_refusals(no_sftp_server) > before
