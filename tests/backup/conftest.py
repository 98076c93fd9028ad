"""Fixtures for backup/restore: a project folder of its own, and settings pointing at the SSH host."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from mlflow_self_host.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path) -> Path:
    """A project root of its own (invoke.yaml, version.txt), so ./backups and ./data land in tmp."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("invoke.yaml", "version.txt"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    return root


@pytest.fixture
def remote_settings(project, ssh_server, tmp_path):
    """Settings for the SSH test host, every remote path in tmp_path."""

    def make(**overrides) -> Settings:
        values = dict(ssh_server.settings(), backend_path=str(tmp_path / "host" / "backend"),
                      backups_path=str(tmp_path / "host" / "backups"), nomad_addr="http://127.0.0.1:1")
        values.update(overrides)
        return Settings.load(root=project, env={}, overrides=values)

    return make


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
