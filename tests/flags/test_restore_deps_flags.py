"""The two flags no other test ran through `inv`: `inv restore --backup NAME` (the backup named by the flag,
not by position) and `inv deps --upgrade` (the newest versions the inputs allow, where a plain `inv deps`
keeps the locked ones)."""
from __future__ import annotations

import sqlite3

import pytest

from mlflow_self_host.steps.image import deps
from tests.flags.conftest import errors, inv, make_project
from tests.services.mlflow_image import clean_env

BACKUP = "mlflow-20261130T120000Z-v0.99.db"


def _db(path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (x)")
        con.execute("INSERT INTO t VALUES (?)", (content,))


def test_restore_backup_flag_names_the_backup(tmp_path):
    project = make_project(tmp_path / "project", docker=None)
    db, backups = project / "data" / "backend" / "mlflow.db", project / "data" / "backups"
    _db(db, "now")
    _db(backups / BACKUP, "then")
    before = db.read_bytes()
    env = dict(clean_env(), DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")

    dry = inv("restore", "--backup", BACKUP, "--local", "--dry-run", cwd=project, env=env)
    assert f"restore {backups / BACKUP} (local data): would change (4)" in dry.stderr
    assert "dry run: nothing was changed" in dry.stderr
    assert db.read_bytes() == before and list(db.parent.iterdir()) == [db]

    missing = inv("restore", "--backup", "mlflow-nope.db", "--local", cwd=project, env=env, expect=1)
    assert errors(missing) == [f"error: no backup at {backups / 'mlflow-nope.db'} on this machine"]
    assert db.read_bytes() == before and list(db.parent.iterdir()) == [db]


OLD_SIX = "six==1.15.0 \\\n    --hash=sha256:8b74bedcbbbaca38ff6d7491d76f2b06b3592611af620f8426e82dddb04a5ced\n"


@pytest.mark.slow  # uv resolves one small package against the package index (PyPI)
def test_deps_upgrade_takes_the_newest_allowed_where_deps_keeps_the_locked_one(tmp_path):
    docker = tmp_path / "docker"  # a build context of one small requirement, locked at an old version
    docker.mkdir()
    (docker / "requirements.txt").write_text("six>=1.10\n")
    (docker / "requirements-nodeps.txt").write_text("")
    (docker / "requirements.lock").write_text(deps.HEADER + "\n# from requirements.txt\n" + OLD_SIX)
    project = make_project(tmp_path / "project", docker=docker)
    lock = project / "docker" / "requirements.lock"
    before = lock.read_bytes()

    dry = inv("deps", "--upgrade", "--dry-run", cwd=project)
    assert "(--upgrade)" in dry.stderr and "~ six 1.15.0 → " in dry.stderr
    assert "dry run: docker/requirements.lock not written" in dry.stderr and lock.read_bytes() == before

    upgraded = inv("deps", "--upgrade", cwd=project)
    assert "wrote docker/requirements.lock" in upgraded.stderr
    newest = deps.pins(lock.read_text())["six"]
    assert newest != "1.15.0" and tuple(map(int, newest.split("."))) > (1, 15, 0)
