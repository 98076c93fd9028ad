"""inv restore: stop the job, keep the current database aside, put the backup in place, start, wait.

The job runs on the Nomad cluster (its client runs the stub image of v0.99 on the test engine with the
backend folder mounted), and that folder is the SSH host's backend_path: the restore stops the real
task, swaps the file under it and starts it again; the stub logs each start in the folder."""
from __future__ import annotations

import os

import pytest
import requests

from mlflow_self_host.steps import backup
from mlflow_self_host.core.errors import UserError
from tests.services import wait_for
from tests.backup.conftest import count, deploy, integrity, make_db, stub_starts
from tests.doubles.nomad import spec

IMAGE_UID = 1000  # the image's user (setting image_user), owner of what MLflow writes in the folder


@pytest.fixture
def settings(cluster_settings):
    return cluster_settings()


@pytest.fixture
def host_db(nomad_cluster):
    """The host's database in the backend folder the job mounts: 10 rows, owned by the image's user with
    mode 0660 (as MLflow leaves it)."""
    db = make_db(nomad_cluster.backend / "mlflow.db", 10)
    os.chown(db, IMAGE_UID, IMAGE_UID)
    os.chmod(db, 0o660)
    return db


@pytest.fixture
def nomad(nomad_cluster, settings, host_db):
    """The Nomad double running v0.99 as `inv deploy` registered it, healthy; its request log starts
    after that deploy, so a test sees only what the restore did."""
    deploy(settings, "0.99", backup=False)
    double = nomad_cluster.nomad
    double.cluster = nomad_cluster
    with double.lock:
        double.requests.clear()
    return double


def _changes(double):
    """(method, path) of the calls that change the job."""
    return [(m, p) for m, p, q, b in double.requests if m in ("POST", "PUT", "DELETE")]


def _db_files(folder):
    """The database and what restore keeps beside it (the stub's start log is not one of them)."""
    return sorted(n for n in os.listdir(folder) if n.startswith("mlflow.db"))


def _stat(path):
    st = os.stat(path)
    return st.st_uid, st.st_gid, st.st_mode & 0o777


def test_round_trip_on_the_ssh_host(settings, host_db, nomad):
    taken = backup.backup(settings)
    assert "-v0.99" in taken.path  # labelled with the version the job runs (its image tag)
    make_db(host_db, 15)  # work done after the backup: 25 rows now
    before = _stat(host_db)

    aside = backup.restore(settings, os.path.basename(taken.path))

    assert count(host_db) == 10 and integrity(host_db) == "ok"
    assert _stat(host_db) == before
    assert count(aside) == 25 and os.path.dirname(aside) == str(host_db.parent)
    # under the deploy lock: stop, take the Stable flag off the stopped copy (so auto_revert never goes
    # back to it), start; then the lock is released
    lock = "/v1/var/mlflow-self-host/lock/mlflow"
    # the nightly backup deploy registered: stopped first, registered again (as it was) before the lock's release
    assert _changes(nomad) == [("PUT", lock), ("DELETE", "/v1/job/mlflow-backup"), ("DELETE", "/v1/job/mlflow"),
                               ("POST", "/v1/job/mlflow/stable"), ("POST", "/v1/job/mlflow"), ("POST", "/v1/jobs"),
                               ("DELETE", lock)]
    assert nomad.job("mlflow-backup")["Stop"] is False  # running again
    versions = nomad.versions()
    assert [v.get("Stop", False) for v in versions] == [False, True, False]  # ran, stopped, started again
    assert spec(versions[-1]) == spec(versions[0])  # the same job definition as before the restore
    (alloc,) = nomad.running_allocs()
    assert alloc["JobVersion"] == 2 and alloc["DeploymentStatus"]["Healthy"] is True
    assert stub_starts(host_db.parent) == ["v0.99 uid=1000"] * 2  # stopped, then started on the restored file


def test_corrupt_backup_is_refused_and_nothing_is_touched(settings, host_db, nomad):
    (running,) = nomad.running_allocs()
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
    assert _db_files(host_db.parent) == ["mlflow.db"]
    assert [a["ID"] for a in nomad.running_allocs()] == [running["ID"]]  # MLflow kept running
    assert stub_starts(host_db.parent) == ["v0.99 uid=1000"]


def test_missing_backup_is_named(settings, host_db, nomad):
    with pytest.raises(UserError, match="no backup at .*nope.db"):
        backup.restore(settings, "nope.db")


def test_dry_run_plans_and_changes_nothing(settings, host_db, nomad, capsys):
    taken = backup.backup(settings)
    make_db(host_db, 1)
    plan = backup.restore(settings, taken.path, dry_run=True)
    assert [c.action for c in plan] == ["stop", "move", "create", "start"]
    assert count(host_db) == 11 and _db_files(host_db.parent) == ["mlflow.db"]
    assert _changes(nomad) == [] and stub_starts(host_db.parent) == ["v0.99 uid=1000"]
    assert "dry run: nothing was changed" in capsys.readouterr().err


def test_restore_a_downloaded_backup_uploads_it(settings, host_db, nomad, project, monkeypatch):
    taken = backup.backup(settings, download=True)
    os.remove(taken.path)  # only the laptop's copy is left
    make_db(host_db, 5)
    monkeypatch.chdir(project)
    backup.restore(settings, os.path.relpath(taken.downloaded))  # backups/mlflow-...db, as a user types it
    assert count(host_db) == 10
    assert os.path.exists(taken.path)  # uploaded into backups_path first


def test_local_restore_stops_and_starts_local_mode(project, stub_images, docker_client, docker_engine_service,
                                                   monkeypatch):
    """Local mode runs for real (`inv up`'s container on the test engine, the stub image as v0.99): the
    restore stops it before the database is moved aside and starts a new one, of version.txt's v0.99,
    once the backup is in place (the engine's die/start times against the files' change times)."""
    import time
    import uuid

    from mlflow_self_host.steps import local
    from mlflow_self_host.core.settings import Settings
    from mlflow_self_host.core.version import Version
    from tests.services.ports import reserved_port

    stub_images.publish("0.99")  # tagged on the engine too: `inv up` runs it, builds nothing
    monkeypatch.setenv("DOCKER_HOST", docker_engine_service.base_url)
    settings = Settings.load(root=project, env={}, overrides={
        "registry": stub_images.registry, "image": stub_images.repository, "local_port": reserved_port(),
        "local_container": f"mlflow-local-restore-{uuid.uuid4().hex[:8]}"})
    db = make_db(project / "data" / "backend" / "mlflow.db", 4)
    try:
        local.up(settings, Version("0.99"), require_docker=True)
        before = docker_client.containers.get(settings.local_container)
        taken = backup.backup(settings, local=True)
        make_db(db, 4)
        since = int(time.time()) - 1
        aside = backup.restore(settings, os.path.basename(taken.path), local=True)
        after = docker_client.containers.get(settings.local_container)
        events = [(e["Action"], e["id"], e["timeNano"] / 1e9) for e in docker_client.events(
            since=since, until=int(time.time()) + 1, filters={"type": "container"}, decode=True)]
    finally:
        local.down(settings)
    assert count(db) == 4 and count(aside) == 8
    assert after.id != before.id and after.status == "running"
    assert after.image.id == docker_client.images.get(stub_images.ref("0.99")).id
    (died,) = [t for action, cid, t in events if action == "die" and cid == before.id]
    (started,) = [t for action, cid, t in events if action == "start" and cid == after.id]
    assert died <= os.stat(aside).st_ctime  # stopped, then moved aside
    assert os.stat(db).st_ctime <= started  # the backup in place, then started
    assert [line.split()[0] for line in stub_starts(db.parent)] == ["v0.99", "v0.99"]


def test_a_stopped_job_is_left_stopped(settings, host_db, nomad, capsys):
    taken = backup.backup(settings)
    stop = requests.delete(nomad.address + "/v1/job/mlflow", timeout=5)  # someone's `nomad job stop mlflow`
    assert stop.status_code == 200, stop.text
    make_db(host_db, 1)
    backup.restore(settings, taken.path)
    assert count(host_db) == 10
    assert nomad.job()["Stop"] is True
    assert not [a for a in nomad.allocs.values() if a["ClientStatus"] in ("pending", "running")]
    assert stub_starts(host_db.parent) == ["v0.99 uid=1000"]  # MLflow was not started again
    assert "left stopped" in capsys.readouterr().err


def test_a_backup_from_another_version_is_pointed_out(settings, host_db, nomad, capsys):
    taken = backup.before_deploy(settings, "0.98", "0.99")
    backup.restore(settings, taken.path, dry_run=True)
    assert "taken under v0.98; v0.99 will run it" in capsys.readouterr().err


def test_a_job_that_fails_after_the_restore_keeps_the_old_database_aside(settings, host_db, nomad, capsys):
    taken = backup.backup(settings)
    make_db(host_db, 3)
    # The registry's v0.99 now holds an image that cannot start: the restore's start pulls it again.
    nomad.cluster.publish("0.99", behaviour="exit",
                          message="alembic.util.exc.CommandError: Can't locate revision identified by 'a1b2c3d4e5f6'")
    with pytest.raises(UserError, match="failed") as info:
        backup.restore(settings, taken.path)
    assert info.value.code == 11  # deploy's exit code for a failed deployment
    assert info.value.message.startswith("after the restore: ") and "before-restore-" in info.value.hint
    assert "Can't locate revision identified by 'a1b2c3d4e5f6'" in capsys.readouterr().err  # the task's stderr
    assert count(host_db) == 10
    aside = [n for n in os.listdir(host_db.parent) if n.startswith("mlflow.db.before-restore-")]
    assert len(aside) == 1 and count(host_db.parent / aside[0]) == 13
    assert nomad.running_allocs() == []


def _wait_until(check, what: str, timeout: float = 30.0):
    return wait_for(check, timeout, what, interval=0.1)


def test_a_job_without_deployments_is_waited_for_until_running(settings, host_db, nomad_cluster):
    """A job registered without any update strategy (Nomad makes no deployment; the CLI's parse gives a service
    job a job-level one, so this is a JSON job sent as it is): the restore waits for the restarted allocation
    to run."""
    from mlflow_self_host.steps.job import jobfile
    from mlflow_self_host.adapters import nomad_api

    # registered by hand, without deploy's Variable: the job of auth none (auth basic's template would wait for it)
    job = jobfile.parse(settings.with_overrides({"auth": "none"}), nomad_api.client(settings), "0.99")
    job["Update"] = job["TaskGroups"][0]["Update"] = None
    double = nomad_cluster.nomad
    double.register_out_of_band(job)
    (first,) = _wait_until(double.running_allocs, "a running allocation")
    taken = backup.backup(settings)
    make_db(host_db, 2)
    backup.restore(settings, taken.path)
    assert count(host_db) == 10
    (alloc,) = double.running_allocs()
    assert alloc["ID"] != first["ID"] and alloc["JobVersion"] == 2 and alloc["DeploymentID"] == ""
    _wait_until(lambda: stub_starts(host_db.parent) == ["v0.99 uid=1000"] * 2, "the second start of the task")
