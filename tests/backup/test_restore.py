"""inv restore: stop the job, keep the current database aside, put the backup in place, start, wait."""
from __future__ import annotations

import os
import pwd

import pytest

from mlflow_self_host import backup
from mlflow_self_host.errors import UserError
from tests.backup.conftest import count, integrity, make_db
from tests.doubles.nomad import NomadDouble, spec


JOB = {"ID": "mlflow", "Name": "mlflow", "Type": "service", "Datacenters": ["DC0"],
       "TaskGroups": [{"Name": "mlflow", "Count": 1,
                       # as nomad/mlflow.nomad.hcl: an update block, so Nomad makes deployments
                       "Update": {"MaxParallel": 1, "HealthCheck": "checks", "AutoRevert": True},
                       "Tasks": [{"Name": "mlflow", "Driver": "docker",
                                  "Config": {"image": "reg.lan:5000/mlflow:v0.99"}}]}]}


@pytest.fixture
def nomad():
    """The Nomad double with the job running and healthy."""
    double = NomadDouble()
    double.register_out_of_band(JOB)
    double.wait_idle()
    yield double
    double.stop()


def _changes(double):
    """(method, path) of the calls that change the job."""
    return [(m, p) for m, p, q, b in double.requests if m in ("POST", "PUT", "DELETE")]


@pytest.fixture
def host_db(tmp_path):
    """The host's database: 10 rows, owned by `nobody` with mode 0660 (as the job's user would own it)."""
    db = make_db(tmp_path / "host" / "backend" / "mlflow.db", 10)
    nobody = pwd.getpwnam("nobody")
    os.chown(db, nobody.pw_uid, nobody.pw_gid)
    os.chmod(db, 0o660)
    return db


def _stat(path):
    st = os.stat(path)
    return st.st_uid, st.st_gid, st.st_mode & 0o777


def test_round_trip_on_the_ssh_host(remote_settings, host_db, nomad):
    settings = remote_settings(nomad_addr=nomad.address)
    taken = backup.backup(settings)
    assert "-v0.99" in taken.path  # labelled with the version the job runs (its image tag)
    make_db(host_db, 15)  # work done after the backup: 25 rows now
    before = _stat(host_db)

    aside = backup.restore(settings, os.path.basename(taken.path))

    assert count(host_db) == 10 and integrity(host_db) == "ok"
    assert _stat(host_db) == before
    assert count(aside) == 25 and os.path.dirname(aside) == str(host_db.parent)
    assert _changes(nomad) == [("DELETE", "/v1/job/mlflow"), ("POST", "/v1/job/mlflow")]
    versions = nomad.versions()
    assert [v.get("Stop", False) for v in versions] == [False, True, False]  # ran, stopped, started again
    assert spec(versions[-1]) == spec(versions[0])  # the same job definition as before the restore
    newest = max(nomad.allocs.values(), key=lambda a: a["CreateIndex"])
    assert newest["ClientStatus"] == "running" and newest["DeploymentStatus"]["Healthy"] is True


def test_corrupt_backup_is_refused_and_nothing_is_touched(remote_settings, host_db, nomad, tmp_path):
    settings = remote_settings(nomad_addr=nomad.address)
    os.makedirs(settings.backups_path)
    good = backup.backup(settings)
    data = open(good.path, "rb").read()
    cut = os.path.join(settings.backups_path, "mlflow-20260101T000000Z-v0.99.db")
    open(cut, "wb").write(data[: len(data) // 2])
    garbage = os.path.join(settings.backups_path, "garbage.db")
    open(garbage, "wb").write(os.urandom(8192))
    before = (open(host_db, "rb").read(), _stat(host_db))
    for bad in (cut, "garbage.db"):
        with pytest.raises(UserError, match="fails the SQLite integrity check") as info:
            backup.restore(settings, bad)
        assert "refusing" in info.value.hint
    assert (open(host_db, "rb").read(), _stat(host_db)) == before
    assert _changes(nomad) == []
    assert sorted(os.listdir(host_db.parent)) == ["mlflow.db"]


def test_missing_backup_is_named(remote_settings, host_db, nomad):
    settings = remote_settings(nomad_addr=nomad.address)
    with pytest.raises(UserError, match="no backup at .*nope.db"):
        backup.restore(settings, "nope.db")


def test_dry_run_plans_and_changes_nothing(remote_settings, host_db, nomad, capsys):
    settings = remote_settings(nomad_addr=nomad.address)
    taken = backup.backup(settings)
    make_db(host_db, 1)
    plan = backup.restore(settings, taken.path, dry_run=True)
    assert [c.action for c in plan] == ["stop", "move", "create", "start"]
    assert count(host_db) == 11 and sorted(os.listdir(host_db.parent)) == ["mlflow.db"]
    assert _changes(nomad) == []
    assert "dry run: nothing was changed" in capsys.readouterr().err


def test_restore_a_downloaded_backup_uploads_it(remote_settings, host_db, nomad, project, monkeypatch):
    settings = remote_settings(nomad_addr=nomad.address)
    taken = backup.backup(settings, download=True)
    os.remove(taken.path)  # only the laptop's copy is left
    make_db(host_db, 5)
    monkeypatch.chdir(project)
    backup.restore(settings, os.path.relpath(taken.downloaded))  # backups/mlflow-...db, as a user types it
    assert count(host_db) == 10
    assert os.path.exists(taken.path)  # uploaded into backups_path first


def test_local_restore_stops_and_starts_local_mode(project, monkeypatch):
    from mlflow_self_host import local
    from mlflow_self_host.settings import Settings

    settings = Settings.load(root=project, env={})
    db = make_db(project / "data" / "backend" / "mlflow.db", 4)
    taken = backup.backup(settings, local=True)
    make_db(db, 4)
    events = []
    monkeypatch.setattr(local, "down", lambda s: events.append(("down", count(db))))
    monkeypatch.setattr(local, "up", lambda s, v, **kw: events.append(("up", count(db), str(v))))
    aside = backup.restore(settings, os.path.basename(taken.path), local=True)
    assert events == [("down", 8), ("up", 4, "0.99")]
    assert count(db) == 4 and count(aside) == 8


def test_a_stopped_job_is_left_stopped(remote_settings, host_db, nomad, capsys):
    settings = remote_settings(nomad_addr=nomad.address)
    taken = backup.backup(settings)
    stopped = dict(JOB, Stop=True)
    nomad.register_out_of_band(stopped)
    make_db(host_db, 1)
    backup.restore(settings, taken.path)
    assert count(host_db) == 10
    assert nomad.job()["Stop"] is True
    assert not [a for a in nomad.allocs.values() if a["ClientStatus"] in ("pending", "running")]
    assert "left stopped" in capsys.readouterr().err


def test_a_backup_from_another_version_is_pointed_out(remote_settings, host_db, nomad, capsys):
    settings = remote_settings(nomad_addr=nomad.address)
    taken = backup.before_deploy(settings, "0.98", "0.99")
    backup.restore(settings, taken.path, dry_run=True)
    assert "taken under v0.98; v0.99 will run it" in capsys.readouterr().err


def test_a_job_that_fails_after_the_restore_keeps_the_old_database_aside(remote_settings, host_db, nomad):
    settings = remote_settings(nomad_addr=nomad.address)
    taken = backup.backup(settings)
    make_db(host_db, 3)
    nomad.next_deployment("failed")
    with pytest.raises(UserError, match="failed") as info:
        backup.restore(settings, taken.path)
    assert info.value.code == 11  # deploy's exit code for a failed deployment
    assert info.value.message.startswith("after the restore: ") and "before-restore-" in info.value.hint
    assert count(host_db) == 10
    aside = [n for n in os.listdir(host_db.parent) if n.startswith("mlflow.db.before-restore-")]
    assert len(aside) == 1 and count(host_db.parent / aside[0]) == 13


def test_a_job_without_deployments_is_waited_for_until_running(remote_settings, host_db):
    no_update = {**JOB, "TaskGroups": [{k: v for k, v in JOB["TaskGroups"][0].items() if k != "Update"}]}
    with NomadDouble() as double:
        double.register_out_of_band(no_update)
        double.wait_idle()
        settings = remote_settings(nomad_addr=double.address)
        taken = backup.backup(settings)
        backup.restore(settings, taken.path)
        newest = max(double.allocs.values(), key=lambda a: a["CreateIndex"])
        assert newest["ClientStatus"] == "running" and newest["JobVersion"] == 2
