"""auth: basic keeps MLflow's users in basic_auth.db beside mlflow.db: a backup copies it beside itself
(auth-{backup's name}), retention removes both, a restore puts both back (issue 29)."""
from __future__ import annotations

import os
import subprocess

from mlflow_self_host.steps import backup
from mlflow_self_host.steps.backup import commands
from tests.backup.conftest import count, make_db


def test_a_backup_copies_the_users_beside_it_and_retention_removes_both(project):
    from mlflow_self_host.core.settings import Settings

    settings = Settings.load(root=project, env={}, overrides={"backup_keep": 1})
    make_db(project / "data" / "backend" / "mlflow.db", 7)
    make_db(project / "data" / "backend" / "basic_auth.db", 2, table="users")
    first = backup.backup(settings, local=True)
    folder = project / "data" / "backups"
    copy = folder / ("auth-" + os.path.basename(first.path))
    assert count(copy, table="users") == 2
    import time

    time.sleep(1.1)  # another second: another backup name
    second = backup.backup(settings, local=True)
    assert sorted(os.listdir(folder)) == sorted([os.path.basename(second.path), "auth-" + os.path.basename(second.path)])


def test_a_restore_puts_the_users_of_the_backup_back_and_keeps_the_ones_there_aside(tmp_path):
    backend, backups = tmp_path / "backend", tmp_path / "backups"
    backend.mkdir(), backups.mkdir()
    make_db(backups / "mlflow-20261207T100000Z-v0.99.db", 1)
    make_db(backups / "auth-mlflow-20261207T100000Z-v0.99.db", 3, table="users")
    make_db(backend / "basic_auth.db", 5, table="users")
    db, aside = str(backend / "mlflow.db"), str(backend / "mlflow.db.before-restore-20261207T110000Z")
    subprocess.run(["sh", "-c", commands.with_auth_copy(str(backups / "mlflow-20261207T100000Z-v0.99.db"), db, aside)],
                   check=True)
    assert count(backend / "basic_auth.db", table="users") == 3
    assert count(backend / "basic_auth.db.before-restore-20261207T110000Z", table="users") == 5
    # a backup without users (taken with auth none) leaves the users there as they are
    make_db(backups / "mlflow-20261207T120000Z-v0.99.db", 1)
    subprocess.run(["sh", "-c", commands.with_auth_copy(str(backups / "mlflow-20261207T120000Z-v0.99.db"), db, aside)],
                   check=True)
    assert count(backend / "basic_auth.db", table="users") == 3
