"""backup, restore and deploy's backup through `inv`, on the Nomad client (the real sshd is the host, the Nomad
double's client runs the stub image with the host's backend folder mounted): backup --download/--dry-run,
restore --dry-run, restore's exit codes 10 and 12 by number, deploy --no-backup, --accept-host-key on backup and
on deploy --skip-host (whose backup is its only SSH step). Local mode's --local is in test_local_flags.py, with a
real MLflow."""
from __future__ import annotations

import os
from pathlib import Path

from mlflow_self_host.steps import backup
from mlflow_self_host.flows import deploy as job_deploy
from mlflow_self_host.core.settings import Settings
from tests.backup.conftest import count, make_db, stub_starts
from tests.flags.conftest import (errors, inv, make_project, recorded, refused_as_unknown, set_version, unknown_key,
                                  without_host_volumes)
from tests.services import ADMIN_PASSWORD, wait_for
from tests.services.mlflow_image import clean_env

IMAGE_UID = 1000


def on_the_host(tmp_path, ssh_server, nomad_cluster):
    """(project, settings, env): a project of its own (./backups lands there), the SSH host and the cluster;
    the host's database is the one in the cluster's backend folder, 10 rows, owned by the image's user."""
    project = make_project(tmp_path / "project", docker=None)
    values = dict(ssh_server.settings(), **nomad_cluster.overrides(backups_path=str(tmp_path / "host-backups")))
    settings = Settings.load(root=project, env={"MSH_MLFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD}, overrides=values)
    env = clean_env()
    env.update({f"MSH_{k.upper()}": str(v) for k, v in values.items()})
    db = make_db(nomad_cluster.backend / "mlflow.db", 10)
    os.chown(db, IMAGE_UID, IMAGE_UID)
    return project, settings, env


def deploy(settings, version: str) -> None:
    job_deploy.deploy(settings, version, skip_host=True, skip_build=True, backup=False)


def test_backup_download_and_dry_runs_then_a_restore_nomad_cannot_place_exits_10(tmp_path, ssh_server,
                                                                                nomad_cluster):
    project, settings, env = on_the_host(tmp_path, ssh_server, nomad_cluster)
    db, backups = nomad_cluster.backend / "mlflow.db", Path(settings.backups_path)
    deploy(settings, "0.99")

    dry = inv("backup", "--dry-run", cwd=project, env=env)
    assert "dry run: nothing was changed" in dry.stderr and not backups.exists()

    done = inv("backup", "--download", cwd=project, env=env)
    downloaded = Path(done.stdout.strip())  # the result line: where the copy is on this machine
    name = downloaded.name
    assert downloaded == project / "backups" / name and name.endswith("-v0.99.db")
    assert count(downloaded) == count(backups / name) == 10
    assert f"backup {backups / name}" in done.stderr

    make_db(db, 5)  # work after the backup: 15 rows
    versions = len(nomad_cluster.nomad.versions())
    dry = inv("restore", name, "--dry-run", cwd=project, env=env)
    assert "dry run: nothing was changed" in dry.stderr and f"job {settings.job_name}" in dry.stderr
    assert count(db) == 15 and sorted(p.name for p in db.parent.glob("mlflow.db*")) == ["mlflow.db"]
    assert len(nomad_cluster.nomad.versions()) == versions and len(nomad_cluster.nomad.running_allocs()) == 1
    assert stub_starts(db.parent) == ["v0.99 uid=1000"]  # never stopped

    without_host_volumes(nomad_cluster)
    refused = inv("restore", name, cwd=project, env=env, expect=10)
    assert "after the restore: Nomad cannot place the job" in refused.stderr
    assert "lacks host volumes" in refused.stderr
    (aside,) = db.parent.glob("mlflow.db.before-restore-*")
    assert f"the previous database is kept as {aside}" in refused.stderr
    assert count(db) == 10 and count(aside) == 15  # the backup is in place, the newer database kept
    assert nomad_cluster.nomad.running_allocs() == []


def test_deploy_no_backup_takes_none_where_a_deploy_without_it_takes_one(tmp_path, ssh_server, nomad_cluster):
    project, settings, env = on_the_host(tmp_path, ssh_server, nomad_cluster)
    backups = Path(settings.backups_path)
    inv("deploy", "--skip-host", "--skip-build", cwd=project, env=env)  # nothing ran before: nothing to back up
    assert not backups.exists()

    set_version(project, "0.100")
    skipped = inv("deploy", "--skip-host", "--skip-build", "--no-backup", cwd=project, env=env)
    assert "backing up" not in skipped.stderr and not backups.exists()
    (alloc,) = nomad_cluster.nomad.running_allocs()
    assert nomad_cluster.nomad.container_of(alloc["ID"]).attrs["Config"]["Image"] == nomad_cluster.images.ref("0.100")

    set_version(project, "1.0")
    backed = inv("deploy", "--skip-host", "--skip-build", cwd=project, env=env)
    assert "backing up the database before v0.100 → v1.0" in backed.stderr
    (copy,) = backups.iterdir()
    assert copy.name.startswith("mlflow-") and copy.name.endswith("-v0.100.db") and count(copy) == 10


def test_a_restore_whose_job_fails_and_is_rolled_back_exits_12(tmp_path, ssh_server, nomad_cluster):
    """A restore while someone's new version is still rolling out (not yet stable): the restarted job runs that
    version, which fails now, and Nomad goes back to the last stable one."""
    project, settings, env = on_the_host(tmp_path, ssh_server, nomad_cluster)
    db, double = nomad_cluster.backend / "mlflow.db", nomad_cluster.nomad
    deploy(settings, "0.99")
    taken = backup.backup(settings)
    make_db(db, 3)

    theirs = double.job()  # someone's `nomad job run` of v0.100, whose allocation must stay healthy 30s
    theirs["TaskGroups"][0]["Tasks"][0]["Config"]["image"] = nomad_cluster.images.ref("0.100")
    theirs["TaskGroups"][0]["Update"].update(MinHealthyTime=30 * 10**9, HealthyDeadline=35 * 10**9)
    double.register_out_of_band(theirs)
    wait_for(lambda: [a["JobVersion"] for a in double.running_allocs()] == [1], 30, "v0.100 running")
    assert not double.job()["Stable"]  # its deployment waits for min_healthy_time
    nomad_cluster.publish("0.100", behaviour="exit", message="alembic: Can't locate revision 'f00d'")

    done = inv("restore", os.path.basename(taken.path), cwd=project, env=env, expect=12)
    (line,) = errors(done)
    assert line.startswith("error: after the restore: job mlflow failed its health checks and was rolled back")
    assert line.endswith(f"({nomad_cluster.images.ref('0.99')}) is healthy")
    assert "alembic: Can't locate revision 'f00d'" in done.stderr  # why the restarted job failed
    (alloc,) = double.running_allocs()
    assert double.container_of(alloc["ID"]).attrs["Config"]["Image"] == nomad_cluster.images.ref("0.99")
    (aside,) = db.parent.glob("mlflow.db.before-restore-*")
    assert count(db) == 10 and count(aside) == 13


def test_backup_accept_host_key(tmp_path, ssh_server, nomad_cluster):
    """An unknown host key: refused with exit 1, the hint naming the flag, nothing taken; with the flag the key
    is recorded in known_hosts and the backup taken."""
    project, settings, env = on_the_host(tmp_path, ssh_server, nomad_cluster)
    backups, known_hosts = Path(settings.backups_path), unknown_key(tmp_path)
    env["MSH_KNOWN_HOSTS"] = str(known_hosts)
    deploy(settings, "0.99")

    refused = inv("backup", cwd=project, env=env, expect=1)
    refused_as_unknown(refused, ssh_server)
    assert not known_hosts.exists() and not backups.exists()

    done = inv("backup", "--accept-host-key", cwd=project, env=env)
    assert recorded(known_hosts, ssh_server)
    taken = Path(done.stdout.strip())
    assert taken.parent == backups and taken.name.endswith("-v0.99.db") and count(taken) == 10


def test_deploy_skip_host_accept_host_key_takes_its_backup(tmp_path, ssh_server, nomad_cluster):
    """deploy --skip-host to a host whose key is unknown, the running version another: the backup before the
    register is the one SSH step, and --accept-host-key reaches it (it used to be dropped there)."""
    project, settings, env = on_the_host(tmp_path, ssh_server, nomad_cluster)
    backups, known_hosts = Path(settings.backups_path), unknown_key(tmp_path)
    env["MSH_KNOWN_HOSTS"] = str(known_hosts)
    deploy(settings, "0.99")
    versions = len(nomad_cluster.nomad.versions())
    set_version(project, "0.100")

    refused = inv("deploy", "--skip-host", "--skip-build", cwd=project, env=env, expect=1)
    refused_as_unknown(refused, ssh_server)
    assert not known_hosts.exists() and not backups.exists()
    assert len(nomad_cluster.nomad.versions()) == versions  # nothing registered

    done = inv("deploy", "--skip-host", "--skip-build", "--accept-host-key", cwd=project, env=env)
    assert "backing up the database before v0.99 → v0.100" in done.stderr
    assert recorded(known_hosts, ssh_server)
    (copy,) = backups.iterdir()
    assert copy.name.endswith("-v0.99.db") and count(copy) == 10
    (alloc,) = nomad_cluster.nomad.running_allocs()
    assert nomad_cluster.nomad.container_of(alloc["ID"]).attrs["Config"]["Image"] == nomad_cluster.images.ref("0.100")


def test_restore_takes_the_backup_as_a_flag_too(tmp_path):
    """`inv restore --backup NAME` (the positional's flag form, short -o for --local, -d for the dry run) plans
    the same restore as `inv restore NAME`; a name with no backup is one red line, nothing changed."""
    import sqlite3

    project = make_project(tmp_path / "project", docker=None)
    db = project / "data" / "backend" / "mlflow.db"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE runs (run_uuid TEXT)")
    env = clean_env()
    name = os.path.basename(inv("backup", "--local", cwd=project, env=env).stdout.strip())
    before = db.read_bytes()

    flag = inv("restore", "--backup", name, "-o", "-d", cwd=project, env=env)
    positional = inv("restore", name, "--local", "--dry-run", cwd=project, env=env)
    assert f"copy of {name}" in flag.stderr and "dry run: nothing was changed" in flag.stderr
    plan = [line.split(" as mlflow.db.before-restore-")[0] for line in flag.stderr.splitlines()]
    assert plan == [line.split(" as mlflow.db.before-restore-")[0] for line in positional.stderr.splitlines()]
    missing = inv("restore", "--backup", "nope.db", "--local", cwd=project, env=env, expect=1)
    assert errors(missing)[0].startswith("error: no backup at ") and db.read_bytes() == before
