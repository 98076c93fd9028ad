"""inv backup: online SQLite backups on the SSH host and from ./data, checked, named, pruned."""
from __future__ import annotations

import os
import re
import sqlite3
import threading
import time

import pytest

from mlflow_self_host.steps import backup
from mlflow_self_host.core.errors import UserError
from mlflow_self_host.adapters.local_shell import LocalShell
from tests.backup.conftest import PROJECT_ROOT, count, deploy, integrity, make_db, stub_starts
from tests.services import clean_env, mlflow_server

NAME = re.compile(r"^mlflow-\d{8}T\d{6}Z-v0\.99(-\d+)?\.db$")


class _Writer(threading.Thread):
    """Logs runs with metrics to a real MLflow server in a loop (bounded); records committed runs."""

    def __init__(self, url: str, limit: int = 400):
        super().__init__(daemon=True)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=url)
        self.experiment = self.client.create_experiment("backup-under-load")
        self.committed: list[str] = []
        self.stop_event = threading.Event()
        self.limit = limit
        self.error: BaseException | None = None

    def run(self):
        try:
            for i in range(self.limit):
                if self.stop_event.is_set():
                    return
                run = self.client.create_run(self.experiment)
                run_id = run.info.run_id
                for step in range(3):
                    self.client.log_metric(run_id, "loss", 1.0 / (i + step + 1), step=step)
                self.client.set_terminated(run_id)
                self.committed.append(run_id)  # every call above returned: committed by the server
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


@pytest.mark.slow
def test_backup_while_mlflow_writes_holds_every_committed_run(remote_settings, tmp_path):
    server = mlflow_server.start(tmp_path / "host")
    writer = None
    try:
        writer = _Writer(server.url)
        writer.start()
        deadline = time.monotonic() + 120
        while len(writer.committed) < 15 and time.monotonic() < deadline and writer.error is None:
            time.sleep(0.1)
        before = list(writer.committed)
        assert len(before) >= 15, writer.error
        settings = remote_settings(backend_path=str(server.db.parent))
        result = backup.backup(settings, version="0.99")
        time.sleep(1)
        assert writer.error is None, writer.error
        assert len(writer.committed) > len(before)  # the server kept taking writes around the backup
    finally:
        if writer:
            writer.stop_event.set()
            writer.join(30)
        mlflow_server.stop(server)

    copy = result.path
    assert os.path.dirname(copy) == settings.backups_path and NAME.match(os.path.basename(copy))
    assert result.size == os.path.getsize(copy) > 0
    assert integrity(copy) == "ok"
    con = sqlite3.connect(copy)
    runs = {row[0]: row[1] for row in con.execute("SELECT run_uuid, status FROM runs")}
    metrics = con.execute("SELECT count(*) FROM metrics WHERE run_uuid IN (%s)" % ",".join("?" * len(before)),
                          before).fetchone()[0]
    con.close()
    missing = [r for r in before if r not in runs]
    assert not missing, f"{len(missing)} committed runs missing from the backup"
    assert all(runs[r] == "FINISHED" for r in before)
    assert metrics == 3 * len(before)


def test_retention_keeps_exactly_n_newest(remote_settings, tmp_path):
    settings = remote_settings(backup_keep=3)
    make_db(tmp_path / "host" / "backend" / "mlflow.db", 50)
    os.makedirs(settings.backups_path)
    foreign = os.path.join(settings.backups_path, "keep-me.txt")
    open(foreign, "w").write("not a backup")
    results = [backup.backup(settings, version="0.99") for _ in range(5)]
    names = sorted(n for n in os.listdir(settings.backups_path) if n.endswith(".db"))
    assert len(names) == 3
    assert set(names) == {os.path.basename(r.path) for r in results[-3:]}
    assert os.path.exists(foreign)
    assert sorted(results[-1].removed + results[-2].removed) == sorted(os.path.basename(r.path) for r in results[:2])
    for name in names:
        assert count(os.path.join(settings.backups_path, name)) == 50


def test_to_remove_orders_by_time_not_version():
    names = ["mlflow-20260101T000000Z-v1.10.db", "mlflow-20260102T000000Z-v1.9.db",
             "mlflow-20260102T000000Z-v1.9-1.db", "notes.txt", "mlflow-20251231T235959Z-v2.0.db"]
    assert backup.to_remove(names, 2) == ["mlflow-20260101T000000Z-v1.10.db", "mlflow-20251231T235959Z-v2.0.db"]
    assert backup.to_remove(names, 10) == []


def test_backup_prints_size_and_path_and_downloads(remote_settings, tmp_path, project, capsys):
    settings = remote_settings()
    make_db(tmp_path / "host" / "backend" / "mlflow.db", 10)
    result = backup.backup(settings, download=True, version="0.99")
    out, err = capsys.readouterr()
    assert result.path in err and "KB" in err
    local = project / "backups" / os.path.basename(result.path)
    assert out.strip() == str(local)
    assert local.read_bytes() == open(result.path, "rb").read()
    assert integrity(local) == "ok"


def test_dry_run_changes_nothing(remote_settings, tmp_path, capsys):
    settings = remote_settings()
    make_db(tmp_path / "host" / "backend" / "mlflow.db", 10)
    plan = backup.backup(settings, dry_run=True, version="0.99")
    assert not os.path.exists(settings.backups_path)
    assert [c.action for c in plan] == ["create", "run", "delete"]
    assert "dry run: nothing was changed" in capsys.readouterr().err


def test_missing_database_is_one_clear_error(remote_settings):
    settings = remote_settings()
    with pytest.raises(UserError, match="no MLflow database at .*backend/mlflow.db"):
        backup.backup(settings, version="0.99")


def test_local_mode_backs_up_data_folder(project):
    from mlflow_self_host.core.settings import Settings

    settings = Settings.load(root=project, env={})
    make_db(project / "data" / "backend" / "mlflow.db", 7)
    result = backup.backup(settings, local=True)
    assert os.path.dirname(result.path) == str(project / "data" / "backups")
    assert NAME.match(os.path.basename(result.path)) and count(result.path) == 7


def test_before_deploy_labels_the_running_version(remote_settings, tmp_path):
    settings = remote_settings()
    make_db(tmp_path / "host" / "backend" / "mlflow.db", 3)
    result = backup.before_deploy(settings, "0.98", "0.99")
    assert re.match(r"^mlflow-\d{8}T\d{6}Z-v0\.98\.db$", os.path.basename(result.path))
    assert result.version == "0.98"


def test_restore_now_puts_the_backup_back_without_the_job_or_the_lock(remote_settings, tmp_path):
    """Deploy's interface (its apply holds the lock and has stopped the job): the database kept aside, the backup
    in place; a corrupt backup is refused with nothing changed."""
    settings = remote_settings()
    db = make_db(tmp_path / "host" / "backend" / "mlflow.db", 10)
    taken = backup.before_deploy(settings, "0.98", "0.99")
    make_db(db, 15)
    aside = backup.restore_now(settings, taken.name)
    assert count(db) == 10 and count(aside) == 25 and integrity(db) == "ok"
    open(os.path.join(settings.backups_path, "cut.db"), "wb").write(open(taken.path, "rb").read()[:2000])
    with pytest.raises(UserError, match="fails the SQLite integrity check"):
        backup.restore_now(settings, "cut.db")
    assert count(db) == 10 and sorted(n for n in os.listdir(db.parent) if n.startswith("mlflow.db")) == \
        ["mlflow.db", os.path.basename(aside)]


def test_host_without_python3_or_sqlite3_is_named(tmp_path):
    class BareHost(LocalShell):
        def run(self, cmd, sudo=False, check=True):
            return super().run("PATH=/nonexistent; " + cmd, sudo=sudo, check=check)

    target = backup.Target(BareHost(), str(make_db(tmp_path / "mlflow.db", 1)), str(tmp_path / "b"), "test")
    with pytest.raises(UserError, match="neither python3 nor the sqlite3 CLI") as info:
        backup.take(None, target, "0.99")
    assert "apt-get install sqlite3" in info.value.hint


def test_sqlite3_cli_fallback_takes_the_same_backup(tmp_path):
    """A host with the sqlite3 CLI but no python3: same checked, named copy."""
    from mlflow_self_host.core.settings import Settings

    class CliOnly(LocalShell):
        def run(self, cmd, sudo=False, check=True):
            return super().run(cmd.replace("command -v python3", "false"), sudo=sudo, check=check)

    settings = Settings.load(env={}, overrides={"backup_keep": 2})
    target = backup.Target(CliOnly(), str(make_db(tmp_path / "mlflow.db", 9)), str(tmp_path / "b"), "test")
    results = [backup.take(settings, target, "0.99") for _ in range(3)]
    assert len(os.listdir(tmp_path / "b")) == 2
    assert count(results[-1].path) == 9 and integrity(results[-1].path) == "ok"


def test_before_deploy_without_a_database_takes_none(remote_settings, capsys):
    assert backup.before_deploy(remote_settings(), "0.98", "0.99") is None
    assert "nothing to back up" in capsys.readouterr().err


def test_inv_backup_and_restore_from_the_command_line(ssh_server, nomad_cluster, cluster_settings):
    """Through invoke: exit 0 and the path on stdout; a corrupt backup is one red line and exit 1, and the
    job keeps running (v0.99, deployed on the Nomad cluster, labels the backup)."""
    import subprocess
    import sys

    deploy(cluster_settings(), "0.99", backup=False)
    (running,) = nomad_cluster.nomad.running_allocs()
    make_db(nomad_cluster.backend / "mlflow.db", 5)
    backups = nomad_cluster.root / "backups"
    env = clean_env()
    env.update(ssh_server.env(), **nomad_cluster.env(backups_path=backups))
    inv = [sys.executable, "-m", "invoke", "-r", str(PROJECT_ROOT)]
    done = subprocess.run(inv + ["backup"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    path = done.stdout.strip()
    assert os.path.dirname(path) == str(backups) and NAME.match(os.path.basename(path)) and count(path) == 5
    open(backups / "bad.db", "wb").write(b"SQLite format 3\0" + os.urandom(4000))
    refused = subprocess.run(inv + ["restore", "bad.db"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ") and "integrity check" in refused.stderr.splitlines()[0]
    assert "Traceback" not in refused.stderr
    assert count(nomad_cluster.backend / "mlflow.db") == 5
    assert [a["ID"] for a in nomad_cluster.nomad.running_allocs()] == [running["ID"]]  # never stopped


def test_deploy_of_a_new_version_backs_up_first_labelled_with_the_running_one(nomad_cluster, cluster_settings,
                                                                              capsys):
    """inv deploy's hook, end to end: the cluster runs v0.99, deploy v0.100 -> a v0.99 backup on the host,
    taken over SSH before the new version is registered; `--no-backup` (backup=False) takes none."""
    make_db(nomad_cluster.backend / "mlflow.db", 6)
    settings = cluster_settings()
    deploy(settings, "0.99")
    assert not os.path.exists(settings.backups_path)  # first deploy: nothing ran before, no backup
    deploy(settings, "0.100")
    nomad_cluster.publish("0.101")
    deploy(settings, "0.101", backup=False)
    steps = [line for line in capsys.readouterr().err.splitlines() if "backing up the database" in line]
    assert len(steps) == 1 and "before v0.99 → v0.100" in steps[0], steps
    names = os.listdir(settings.backups_path)
    assert len(names) == 1 and re.match(r"^mlflow-\d{8}T\d{6}Z-v0\.99\.db$", names[0])
    assert count(os.path.join(settings.backups_path, names[0])) == 6
    (alloc,) = nomad_cluster.nomad.running_allocs()
    assert nomad_cluster.nomad.container_of(alloc["ID"]).attrs["Config"]["Image"] == nomad_cluster.images.ref("0.101")
    assert stub_starts(nomad_cluster.backend) == ["v0.99 uid=1000", "v0.100 uid=1000", "v0.101 uid=1000"]
