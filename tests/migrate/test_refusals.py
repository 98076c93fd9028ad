"""`inv migrate` refuses a store it cannot take over, before anything changes anywhere (exit 15):
a database a newer MLflow wrote, one failing PRAGMA integrity_check, a backend folder with no database.
The store is on the real sshd's host; the Nomad double only holds the deploy lock."""
from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.host.conftest import make_nomad_host, nomad_user  # noqa: F401 - the fixture
from tests.migrate import legacy
from tests.services.mlflow_image import clean_env

ROOT = Path(__file__).resolve().parents[2]


def _tree(folder: Path) -> dict:
    """Every entry's bytes (files), owner and mode: what 'nothing changed' compares."""
    out = {}
    for path in sorted([folder, *folder.rglob("*")]):
        st = os.lstat(path)
        out[str(path)] = (st.st_uid, st.st_gid, st.st_mode,
                          hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None)
    return out


def _newer(db: Path) -> str:
    with sqlite3.connect(db) as con:
        con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    return "is at schema revision ffffffffffff, which MLflow 3.17.2 (the image's) does not know"


def _corrupt(db: Path) -> str:
    data = bytearray(db.read_bytes())
    data[4096 * 3:4096 * 3 + 2048] = os.urandom(2048)  # a b-tree page of the middle of the file
    db.write_bytes(bytes(data))
    return "fails SQLite's PRAGMA integrity_check"


def _missing(db: Path) -> str:
    db.rename(db.with_name("tracking.db"))
    return "no MLflow database at"


@pytest.mark.parametrize("spoil", [_newer, _corrupt, _missing], ids=["newer", "corrupt", "missing"])
def test_a_store_that_cannot_be_taken_over_is_refused_with_nothing_changed(tmp_path, ssh_server, nomad_user, spoil):
    from tests.doubles.nomad import NomadDouble

    double = NomadDouble()
    try:
        root = tmp_path / "host"
        host = make_nomad_host(root, ssh_server, double.address)
        host.client_config.write_text(legacy.client_hcl(str(host.backend), str(host.artifacts)))
        legacy.lay_out_store(host.backend, host.artifacts, 0)
        expected = spoil(host.backend / "mlflow.db")
        before = {**_tree(root / "data"), "hcl": host.client_config.read_bytes()}
        env = clean_env()
        env.update({f"MSH_{k.upper()}": str(v) for k, v in host.settings._values.items()
                    if k in ("host", "ssh_port", "ssh_user", "ssh_key", "known_hosts", "nomad_client_config",
                             "backend_path", "artifacts_path", "job_dir", "nomad_restart_command")})
        env.update(NOMAD_ADDR=double.address, MSH_BACKUPS_PATH=str(root / "data" / "backups"),
                   MSH_REGISTRY="127.0.0.1:9", MSH_DEPLOY_CHECK="false")
        for args in (["migrate", "--dry-run"], ["migrate"]):
            done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 15, done.stderr
            assert expected in done.stderr and "nothing was changed" in done.stderr
            assert "Traceback" not in done.stderr
            # one red line: the refusal is said once (a dry run names its step, "would stop here", without it)
            assert [line for line in done.stderr.splitlines() if expected in line] == \
                [line for line in done.stderr.splitlines() if line.startswith("error")]
        assert {**_tree(root / "data"), "hcl": host.client_config.read_bytes()} == before
        assert host.restarts() == 0 and double.registrations() == []
    finally:
        double.stop()


def test_the_image_and_this_package_know_the_same_migrations():
    """The laptop reads the schema chain from its mlflow-skinny; the image runs its own mlflow: one version."""
    import re

    from mlflow_self_host.steps.migrate import schema

    lock = (ROOT / "docker" / "requirements.lock").read_text()
    pinned = re.search(r"(?m)^mlflow==([0-9.]+)", lock).group(1)
    pyproject = re.search(r'"mlflow-skinny==([0-9.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    chain = schema.chain()
    assert pinned == pyproject == chain.mlflow_version
    assert chain.knows("97727af70f4d") and chain.behind("97727af70f4d") > 0 and chain.behind(chain.head) == 0
    assert not chain.knows("ffffffffffff")


def test_migrate_skip_build_needs_the_tag_in_the_registry_and_changes_nothing_without_it(tmp_path, ssh_server,
                                                                                         nomad_user, registry):
    """--skip-build: nothing is built or pushed; with the tag missing, exit 2 before the store is touched."""
    from tests.doubles.nomad import NomadDouble

    double = NomadDouble()
    try:
        root = tmp_path / "host"
        host = make_nomad_host(root, ssh_server, double.address)
        host.client_config.write_text(legacy.client_hcl(str(host.backend), str(host.artifacts)))
        legacy.lay_out_store(host.backend, host.artifacts, 0)
        before = _tree(root / "data")
        env = clean_env()
        env.update({f"MSH_{k.upper()}": str(v) for k, v in host.settings._values.items()
                    if k in ("host", "ssh_port", "ssh_user", "ssh_key", "known_hosts", "nomad_client_config",
                             "backend_path", "artifacts_path", "job_dir", "nomad_restart_command")})
        env.update(NOMAD_ADDR=double.address, MSH_BACKUPS_PATH=str(root / "data" / "backups"),
                   MSH_REGISTRY=registry.address, MSH_IMAGE="mlflow-never-pushed", MSH_DEPLOY_CHECK="false",
                   DOCKER_HOST="unix:///nonexistent/docker.sock")  # a build would need an engine
        done = subprocess.run([sys.executable, "-m", "invoke", "migrate", "--skip-build"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert "take over the MLflow store" in done.stderr and "building" not in done.stderr
        assert "Traceback" not in done.stderr
        assert _tree(root / "data") == before and double.registrations() == []
        assert registry.tags("mlflow-never-pushed") == []
    finally:
        double.stop()
