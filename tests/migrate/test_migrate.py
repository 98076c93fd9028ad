"""`inv migrate` on a Nomad client as the original recipe left it (tests/migrate/legacy.py), on the real
parts: the real sshd (the host), the real MLflow image built from docker/ and run by the Nomad double
on the test engine, and a store written by the real MLflow 1.29.0.
"""
from __future__ import annotations

import hashlib
import os
import re
import pwd
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.host.conftest import make_nomad_host, nomad_user  # noqa: F401 - the fixture
from tests.migrate import legacy
from tests.services.mlflow_image import clean_env
from tests.services.nomad_cluster import MLFLOW_TIMINGS
from tests.services import ADMIN_PASSWORD  # auth: basic by default

ROOT = Path(__file__).resolve().parents[2]
HEAD_OF_3_17_2 = "dc11669786a5"  # the last script in mlflow 3.17.2's db_migrations/versions


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def owners(folder: Path) -> set:
    out = {(os.lstat(folder).st_uid, os.lstat(folder).st_gid)}
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            st = os.lstat(os.path.join(top, name))
            out.add((st.st_uid, st.st_gid))
    return out


@pytest.fixture
def original(tmp_path, ssh_server, nomad_user, docker_engine_service, nomad_network, stub_images):
    """The host, its store, and the double running the recipe's job (its image: a stub, tagged latest)."""
    from tests.doubles.consul import ConsulDouble
    from tests.doubles.nomad import NomadDouble

    root = tmp_path / "host"
    consul = ConsulDouble()  # the client runs a Consul agent: the recipe's service is in its catalogue
    double = NomadDouble(engine=docker_engine_service.client(), network=nomad_network,
                         client_config=root / "nomad.d" / "client.hcl", consul=consul)
    try:
        host = make_nomad_host(root, ssh_server, double.address, job_file=str(ROOT / "nomad" / "mlflow.nomad.hcl"),
                               backups_path=str(root / "data" / "mlflow" / "backups"))
        (root / "restart-nomad.sh").write_text(
            f"#!/bin/sh\necho \"$(id -un)\" >> {root / 'restarts.log'}\n"
            f"exec curl -fsS -X POST -d '{{\"seconds\": 1}}' {double.address}/_double/agent/restart\n")
        host.client_config.write_text(legacy.client_hcl(str(host.backend), str(host.artifacts)))
        double.client.reload()
        nomad_uid = pwd.getpwnam("nomad").pw_uid
        legacy.lay_out_store(host.backend, host.artifacts, nomad_uid)
        host.job_dir.mkdir(parents=True)
        (host.job_dir / "mlflow_job.nomad").write_text(legacy.job_hcl(_latest(stub_images)))
        legacy.chown_tree(root / "data", nomad_uid, 0, 0o774)
        legacy.chown_tree(host.backend, 0, 0)  # the database was written by a container running as root
        legacy.chown_tree(host.artifacts, 0, 0)
        os.chown(host.backend, nomad_uid, 0)
        os.chown(host.artifacts, nomad_uid, 0)
        legacy.register(double.address, (host.job_dir / "mlflow_job.nomad").read_text())
        _wait_running(double)
        yield host, double
    finally:
        double.stop()
        consul.stop()


def _wait_running(double, timeout=60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not double.running_allocs():
        assert time.monotonic() < deadline, f"the recipe's job never ran: {double.allocs}"
        time.sleep(0.2)


def _latest(stub_images) -> str:
    """The stub that serves, pushed as …/mlflow-stub:latest, as `make push` left the original image."""
    ref = stub_images.publish("0.1")
    repo = ref.rsplit(":", 1)[0]
    stub_images.client.api.tag(ref, repo, "latest", force=True)
    for event in stub_images.client.api.push(repo, tag="latest", stream=True, decode=True):
        assert not event.get("error"), event
    return f"{repo}:latest"


def _env(host, double, registry, mlflow_image, docker_engine_service) -> dict:
    env = clean_env()
    env.update({f"MSH_{key.upper()}": str(value) for key, value in host.settings._values.items()
                if key in ("host", "ssh_port", "ssh_user", "ssh_key", "known_hosts", "nomad_client_config",
                           "backend_path", "artifacts_path", "job_dir", "folder_owner", "folder_group",
                           "nomad_restart_command", "nomad_health_timeout", "backups_path")})
    env.update({f"MSH_{k.upper()}": str(v) for k, v in MLFLOW_TIMINGS.items()})
    env.update(DOCKER_HOST=docker_engine_service.base_url, NOMAD_ADDR=double.address,
               MSH_REGISTRY=registry.address, MSH_IMAGE=mlflow_image.settings_overrides["image"],
               MSH_BASE_IMAGE=mlflow_image.settings_overrides["base_image"], MSH_DEPLOY_CHECK="false",
               MSH_DEPLOY_POLL="0.2", MSH_DEPLOY_TIMEOUT="300")
    return env


def _inv(env, *args, expect=0):
    done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == expect, f"inv {' '.join(args)} → {done.returncode}\n{done.stderr[-4000:]}"
    assert "Traceback" not in done.stderr
    return done


@pytest.mark.slow
def test_migrate_takes_over_the_original_setup_losing_nothing(tmp_path, original, registry, mlflow_image,
                                                               docker_engine_service, monkeypatch):
    host, double = original
    env = _env(host, double, registry, mlflow_image, docker_engine_service)
    db = host.backend / "mlflow.db"
    before = {"db": sha(db), "hcl": host.client_config.read_bytes(), "registrations": len(double.registrations())}
    outside = host.root / "data" / "elsewhere.txt"  # a link inside the artifacts points out of them
    outside.write_text("not ours\n")
    os.symlink(outside, host.artifacts / "link-out")
    os.lchown(host.artifacts / "link-out", 0, 0)

    tree, jobs = _tree(host.root / "data"), _tree(host.job_dir)

    # deploy finds the setup and would take it over first
    deploy_dry = _inv(env, "deploy", "--dry-run")
    assert "take over the MLflow store on 127.0.0.1: would change (6)" in deploy_dry.stderr

    # --dry-run lists every change and changes nothing
    dry = _inv(env, "migrate", "--dry-run")
    for expected in ("job mlflow", "byte-for-byte copy", "of 2 entries to 1000:1000",
                     "3 experiments, 5 runs, 1 model versions: /mnt/artifacts/… → mlflow-artifacts:/…",
                     f"schema 97727af70f4d → {HEAD_OF_3_17_2}", "dry run: nothing was registered"):
        assert expected in dry.stderr, expected
    assert _tree(host.root / "data") == tree and _tree(host.job_dir) == jobs
    assert host.client_config.read_bytes() == before["hcl"] and sha(db) == before["db"]
    assert not Path(env["MSH_BACKUPS_PATH"]).exists() and len(double.registrations()) == before["registrations"]

    # the takeover
    done = _inv(env, "migrate")
    # client.hcl's block: the two volumes of before, at their paths, and the nightly backup's folder (a host volume
    # since issue 30): one rewrite of the block, one restart of Nomad
    hcl = host.client_config.read_text()
    assert re.findall(r'host_volume "([^"]+)"', hcl) == ["mlflow-backend-store", "mlflow-artifacts", "mlflow-backups"]
    assert str(host.backend) in hcl and str(host.artifacts) in hcl and host.restarts() == 1
    (copy,) = Path(env["MSH_BACKUPS_PATH"]).glob("mlflow-before-migration-*.db")
    assert sha(copy) == before["db"]  # byte for byte
    for folder in (host.backend, host.artifacts):
        assert owners(folder) == {(1000, 1000)}, folder
    assert (outside.stat().st_uid, outside.stat().st_gid) == (0, 0)  # nothing outside the two folders
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD_OF_3_17_2
        locations = [r[0] for r in con.execute("SELECT artifact_location FROM experiments ORDER BY experiment_id")]
        uris = {r[0]: r[1] for r in con.execute("SELECT run_uuid, artifact_uri FROM runs")}
        (source,) = con.execute("SELECT source FROM model_versions").fetchone()
    assert locations[:3] == ["mlflow-artifacts:/0", "mlflow-artifacts:/1", "mlflow-artifacts:/2"]
    for exp in legacy.EXPECTED["experiments"]:
        for run in exp["runs"]:
            assert uris[run["run_id"]] == f"mlflow-artifacts:/{exp['id']}/{run['run_id']}/artifacts"
    assert source == "mlflow-artifacts:/" + legacy.EXPECTED["model_version_source"]
    assert (host.job_dir / "mlflow_job.nomad").exists()  # the old job file stays
    assert f"schema {HEAD_OF_3_17_2}" in done.stderr
    (alloc,) = double.running_allocs()
    assert double.container_of(alloc["ID"]).attrs["Config"]["Image"] == mlflow_image.ref()
    url = f"http://127.0.0.1:{alloc['AllocatedResources']['Shared']['Ports'][0]['Value']}"

    # every run, param, metric step, tag and artifact reads back through the server
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")  # auth: basic, the default
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    for exp in legacy.EXPECTED["experiments"]:
        assert client.get_experiment(exp["id"]).name == exp["name"]
        assert client.get_experiment(exp["id"]).artifact_location == f"mlflow-artifacts:/{exp['id']}"
        for expected in exp["runs"]:
            run = client.get_run(expected["run_id"])
            assert run.data.params == expected["params"]
            assert {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")} == expected["tags"]
            for key, history in expected["metrics"].items():
                assert [[m.step, m.value] for m in client.get_metric_history(run.info.run_id, key)] == history
            for path, text in expected["artifacts"].items():
                local = client.download_artifacts(run.info.run_id, path, str(tmp_path / "dl" / run.info.run_id))
                assert Path(local).read_text() == text
    # a new artifact in an old experiment lands in the server's folder, not in this client's /mnt/artifacts
    old_experiment = legacy.EXPECTED["experiments"][1]["id"]
    run_id = client.create_run(old_experiment).info.run_id
    new = tmp_path / "after.txt"
    new.write_text("logged after the migration\n")
    client.log_artifact(run_id, str(new))
    landed = host.artifacts / old_experiment / run_id / "artifacts" / "after.txt"
    assert landed.read_text() == new.read_text() and landed.stat().st_uid == 1000
    assert not Path("/mnt/artifacts", old_experiment, run_id).exists()

    # a second run changes nothing
    registrations = len(double.registrations())
    again = _inv(env, "migrate")
    assert "nothing to migrate" in again.stderr and "already deployed" in again.stderr
    assert len(double.registrations()) == registrations
    assert len(list(Path(env["MSH_BACKUPS_PATH"]).glob("mlflow-before-migration-*.db"))) == 1

    # the model version registered under 1.29 downloads through the server
    model = client.download_artifacts(legacy.EXPECTED["experiments"][1]["runs"][0]["run_id"], "model",
                                      str(tmp_path / "model"))
    assert (Path(model) / "model.txt").read_text().startswith("weights of run-1-0")

    # the kept copy restored gives back the original database byte for byte (the job stopped first, as
    # to go back to the original job; restore leaves a stopped job stopped)
    import requests

    requests.delete(f"{double.address}/v1/job/mlflow", timeout=10).raise_for_status()
    restored = _inv(env, "restore", copy.name)
    assert "left stopped" in restored.stderr
    assert sha(db) == before["db"]
    (aside,) = host.backend.glob("mlflow.db.before-restore-*")
    with sqlite3.connect(aside) as con:  # the migrated one, with the run logged after the migration
        assert con.execute("SELECT count(*) FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()[0] == 1


def _tree(folder: Path) -> dict:
    out = {}
    for path in sorted([folder, *folder.rglob("*")]):
        st = os.lstat(path)
        out[str(path)] = (st.st_uid, st.st_gid, st.st_mode, sha(path) if path.is_file() and not path.is_symlink()
                          else None)
    return out
