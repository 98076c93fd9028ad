"""The takeover's decisions and its SQL, without sshd, Docker or Nomad: the host script runs on this
machine (adapters/local_shell.py's LocalShell), the plan is computed from facts."""
from __future__ import annotations

import os
import sqlite3

import pytest

from mlflow_self_host.core.errors import ExitCode

from mlflow_self_host.adapters.local_shell import LocalShell
from mlflow_self_host.core.errors import UserError
from mlflow_self_host.steps.migrate import host_store as store, schema
from mlflow_self_host.flows import takeover
from mlflow_self_host.core.settings import PROJECT_ROOT, Settings
from tests.services import ADMIN_PASSWORD  # auth: basic by default

CASES = [  # stored location -> after the rewrite (root /mnt/artifacts)
    ("/mnt/artifacts", "mlflow-artifacts:/"),
    ("/mnt/artifacts/", "mlflow-artifacts:/"),
    ("/mnt/artifacts/1", "mlflow-artifacts:/1"),
    ("/mnt/artifacts//5/r/artifacts", "mlflow-artifacts:/5/r/artifacts"),
    ("file:///mnt/artifacts/3", "mlflow-artifacts:/3"),
    ("file:/mnt/artifacts/3", "mlflow-artifacts:/3"),
    ("file://localhost/mnt/artifacts/4", "mlflow-artifacts:/4"),
    ("/mnt/artifacts2/x", "/mnt/artifacts2/x"),
    ("s3://bucket/mnt/artifacts/1", "s3://bucket/mnt/artifacts/1"),
    ("mlflow-artifacts:/7", "mlflow-artifacts:/7"),
    (None, None),
]


def _db(path, values) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, artifact_location TEXT)")
        con.execute("CREATE TABLE runs (run_uuid TEXT PRIMARY KEY, artifact_uri TEXT)")
        con.execute("CREATE TABLE alembic_version (version_num TEXT)")
        con.execute("INSERT INTO alembic_version VALUES ('97727af70f4d')")
        for i, value in enumerate(values):
            con.execute("INSERT INTO experiments VALUES (?, ?)", (i, value))
            con.execute("INSERT INTO runs VALUES (?, ?)", (f"r{i}", value))


def _settings(tmp_path, **more) -> Settings:
    values = {"backend_path": str(tmp_path / "backend"), "artifacts_path": str(tmp_path / "artifacts"),
              "backups_path": str(tmp_path / "backups"), "image_user": f"{os.getuid()}:{os.getgid()}"}
    values.update(more)
    return Settings.load(root=PROJECT_ROOT, env={"MSH_MLFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD}, overrides=values)


@pytest.fixture
def store_dir(tmp_path):
    (tmp_path / "backend").mkdir()
    (tmp_path / "artifacts").mkdir()
    return tmp_path


def test_the_rewrite_takes_every_spelling_of_the_old_root_and_nothing_else(store_dir):
    db = store_dir / "backend" / "mlflow.db"
    _db(db, [before for before, _ in CASES])
    changed = store.rewrite(LocalShell(), str(db), "/mnt/artifacts")
    assert changed == {"experiments": 7, "runs": 7}
    with sqlite3.connect(db) as con:
        for table, col in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            got = [r[0] for r in con.execute(f"SELECT {col} FROM {table} ORDER BY rowid")]
            assert got == [after for _, after in CASES], table
    assert store.rewrite(LocalShell(), str(db), "/mnt/artifacts") == {"experiments": 0, "runs": 0}  # again: nothing


def test_a_root_below_the_mount_keeps_its_path_below_the_mount(store_dir):
    db = store_dir / "backend" / "mlflow.db"
    _db(db, ["/mnt/artifacts/mlruns/1", "/mnt/artifacts/other/2"])
    store.rewrite(LocalShell(), str(db), "/mnt/artifacts/mlruns")
    with sqlite3.connect(db) as con:
        got = [r[0] for r in con.execute("SELECT artifact_location FROM experiments ORDER BY rowid")]
    assert got == ["mlflow-artifacts:/mlruns/1", "/mnt/artifacts/other/2"]  # the files are at artifacts_path/mlruns/1


def test_a_root_outside_the_artifacts_volume_is_refused_unchanged(store_dir):
    db = store_dir / "backend" / "mlflow.db"
    _db(db, ["/srv/mlruns/1"])
    before = db.read_bytes()
    with pytest.raises(UserError, match="not under /mnt/artifacts"):
        store.rewrite(LocalShell(), str(db), "/srv/mlruns")
    assert db.read_bytes() == before


@pytest.mark.parametrize("setting", ["file:///mnt/artifacts", "/mnt/artifacts/", "file://localhost/mnt/artifacts"])
def test_the_root_setting_is_read_as_a_path(tmp_path, setting):
    assert store.legacy_root(_settings(tmp_path, legacy_artifact_root=setting)) == "/mnt/artifacts"


def _facts(tmp_path, **db) -> store.StoreFacts:
    base = {"path": str(tmp_path / "backend" / "mlflow.db"), "size": 100, "integrity": "ok",
            "revision": "97727af70f4d", "legacy": {"experiments": 0, "runs": 0}, "journals": []}
    base.update(db)
    return store.StoreFacts("this machine", base["path"], store.Owners(2, 0), store.Owners(9, 0),
                            store.Database(**base))


OURS = {"TaskGroups": [{"Tasks": [{"Config": {"image": "registry.lan:5000/mlflow:v0.99"}}]}]}
ORIGINAL = {"TaskGroups": [{"Tasks": [{"Config": {"image": "registry.lan:5000/mlflow:latest"}}]}]}


def test_plans(tmp_path):
    settings, chain = _settings(tmp_path), schema.chain()
    # the original job over a 1.29 database: stop, copy, upgrade
    p = takeover.make_plan(settings, _facts(tmp_path), ORIGINAL, chain, "copy.db")
    assert [c.action for c in p.plan] == ["stop", "create", "upgrade"]
    # our own job over an older schema: an ordinary upgrade, not a takeover
    assert not takeover.make_plan(settings, _facts(tmp_path), OURS, chain, "copy.db").needed
    # rows under the old root, the job already stopped by an earlier run that copied the original
    facts = _facts(tmp_path, legacy={"experiments": 2, "runs": 3})
    facts.backups = ["mlflow-before-migration-20261130T100000Z.db"]
    p = takeover.make_plan(settings, facts, dict(ORIGINAL, Stop=True), chain, "copy.db")
    assert [c.action for c in p.plan] == ["keep", "update", "upgrade"]
    assert p.backup_path.endswith("/mlflow-before-migration-20261130T100000Z.db")
    # the same copy under our own job (taken over long ago, rows found again): a new copy of today's file
    p = takeover.make_plan(settings, facts, OURS, chain, "copy.db")
    assert [c.action for c in p.plan] == ["stop", "create", "update", "upgrade"] and p.backup_path == ""
    # the recipe's job under another name mounts the volumes too: stopped as well
    other = dict(ORIGINAL, ID="mlflow-old")
    p = takeover.make_plan(settings, _facts(tmp_path), ORIGINAL, chain, "copy.db", others=[other])
    assert [(c.action, c.target) for c in p.plan][:2] == [("stop", "job mlflow"), ("stop", "job mlflow-old")]
    # all done: empty, with its reason
    done = takeover.make_plan(settings, _facts(tmp_path, revision=chain.head), OURS, chain, "copy.db")
    assert not done.needed and "schema current" in done.reason


def test_deploy_refuses_a_store_whose_database_has_another_name_under_a_job_not_ours(tmp_path):
    facts = _facts(tmp_path)
    facts.db, facts.other_files = None, ["tracking.db"]
    with pytest.raises(UserError, match=r"no MLflow database .*tracking\.db") as err:
        takeover.refuse_bad_store(_settings(tmp_path), facts, schema.chain(), require=False, job_is_ours=False)
    assert err.value.code == ExitCode.STORE_REFUSED
    takeover.refuse_bad_store(_settings(tmp_path), facts, schema.chain(), require=False, job_is_ours=True)
