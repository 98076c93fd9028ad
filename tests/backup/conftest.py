"""Fixtures for backup/restore: a project folder of its own, settings pointing at the SSH host, and the
same settings on a Nomad cluster whose client runs the job on this machine (the SSH test host is this
machine too, so the host's database is the one in the cluster's backend folder, mounted by the task)."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from mlflow_self_host.core.settings import Settings
from tests.services import ADMIN_PASSWORD  # auth: basic by default

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path) -> Path:
    """A project root of its own (invoke.yaml, version.txt, the job file), so ./backups and ./data land in tmp."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("invoke.yaml", "version.txt"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    shutil.copytree(PROJECT_ROOT / "nomad", root / "nomad")
    return root


@pytest.fixture
def remote_settings(project, ssh_server, tmp_path):
    """Settings for the SSH test host, every remote path in tmp_path."""

    def make(**overrides) -> Settings:
        values = dict(ssh_server.settings(), backend_path=str(tmp_path / "host" / "backend"),
                      backups_path=str(tmp_path / "host" / "backups"), nomad_addr="http://127.0.0.1:1")
        values.update(overrides)
        return Settings.load(root=project, env={"MSH_MLFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD}, overrides=values)

    return make


@pytest.fixture
def cluster_settings(nomad_cluster, remote_settings):
    """Settings for the SSH test host and the Nomad cluster: backend_path is the cluster's backend folder
    (the host volume the task mounts), nomad_addr and the image its double and stub images."""

    def make(**overrides) -> Settings:
        return remote_settings(**nomad_cluster.overrides(**overrides))

    return make


def deploy(settings, version: str, **kwargs):
    """`inv deploy --skip-host --skip-build` of a stub version the cluster's registry has."""
    from mlflow_self_host.flows import deploy as job_deploy

    return job_deploy.deploy(settings, version, skip_host=True, skip_build=True, **kwargs)


def stub_starts(backend: Path) -> list[str]:
    """The stub server's start log in the backend folder: one line per start of the task ("v0.99 uid=1000")."""
    log = backend / "stub-starts.log"
    return log.read_text().splitlines() if log.exists() else []


def make_db(path: Path, rows: int, table: str = "t") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} (x INTEGER)")
    con.executemany(f"INSERT INTO {table} VALUES (?)", [(i,) for i in range(rows)])
    con.commit()
    con.close()
    return path


def count(path, table: str = "t") -> int:
    con = sqlite3.connect(path)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def integrity(path) -> str:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()
