"""MLflow's gc as a Nomad periodic job, on the real parts (issue 30, item 2): the project's MLflow image on the Nomad
double (auth basic, the default), runs logged with an artifact through the MLflow client, one deleted; the gc job
(nomad/mlflow-gc.nomad.hcl) registered, its launcher forced as `nomad job periodic force` does, the launch followed
to its end: the deleted run is gone from the database and its artifacts from the artifacts volume (its URI is
mlflow-artifacts:/..., what plain `mlflow gc` cannot delete without a server: mlflow/mlflow#7558), the kept run keeps
its own. Then a deleted run whose folder gc cannot remove: the launch fails, says what is left, and doctor's `gc`
row is red with it."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
import requests

from mlflow_self_host.core.settings import PROJECT_ROOT, Settings
from mlflow_self_host.flows import deploy as job_deploy
from mlflow_self_host.flows import doctor
from mlflow_self_host.steps.job import gc
from tests.services import ADMIN_PASSWORD, clean_env, wait_for
from tests.services.nomad_cluster import MLFLOW_TIMINGS, layout

pytestmark = pytest.mark.slow
OLDER_THAN = "2s"

CLIENT = r'''
import os, sys, tempfile
from mlflow.tracking import MlflowClient
client = MlflowClient()
action = sys.argv[1]
if action == "log":
    found = client.get_experiment_by_name("gc-test")
    eid = found.experiment_id if found else client.create_experiment("gc-test")
    run = client.create_run(eid)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.txt")
        open(path, "w").write("weights " * 100)
        client.log_artifact(run.info.run_id, path)
    client.set_terminated(run.info.run_id)
    print("logged", run.info.run_id, run.info.artifact_uri)
elif action == "delete":
    client.delete_run(sys.argv[2])
'''


@pytest.fixture
def cluster(tmp_path, mlflow_image, docker_engine_service, nomad_network):
    from tests.doubles.nomad import NomadDouble

    repo, tag = mlflow_image.ref().rsplit(":", 1)
    docker_engine_service.client().images.push(repo, tag=tag)  # built once per session; the jobs pull it
    root = tmp_path / "host"
    layout(root)
    double = NomadDouble(engine=docker_engine_service.client(), network=nomad_network,
                         client_config=root / "nomad.d" / "client.hcl")

    def settings(**more) -> Settings:
        return Settings.load(root=PROJECT_ROOT, env={"MSH_MLFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD}, overrides={
            **mlflow_image.settings_overrides, "nomad_addr": double.address, "service_provider": "nomad",
            "deploy_check": False, "deploy_poll": "0.2", "deploy_timeout": 900,
            "backend_path": str(root / "data" / "mlflow" / "backend"),
            "artifacts_path": str(root / "data" / "mlflow" / "artifacts"), "gc_older_than": OLDER_THAN,
            **MLFLOW_TIMINGS, "healthy_deadline": "6m", "progress_deadline": "10m", **more})  # a busy test machine

    try:
        yield settings, double, root / "data" / "mlflow"
    finally:
        double.stop()


def mlflow_client(double, *args) -> list[str]:
    (registration,) = requests.get(double.address + "/v1/service/mlflow", timeout=5).json()
    env = {**clean_env(), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{registration['Port']}",
           "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
    done = subprocess.run([sys.executable, "-c", CLIENT, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    said = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("logged ")]
    return said[-1] if said else []


def runs_in_store(data) -> dict:
    with sqlite3.connect(data / "backend" / "mlflow.db") as db:
        return dict(db.execute("SELECT run_uuid, lifecycle_stage FROM runs"))


def folder(data, artifact_uri: str):
    assert artifact_uri.startswith("mlflow-artifacts:/")
    return data / "artifacts" / artifact_uri.split(":/", 1)[1]


def force_and_follow(settings, double) -> gc.Launch:
    """`nomad job periodic force {job_name}-gc`, then its launch followed to its end."""
    from mlflow_self_host.adapters import nomad_api
    from mlflow_self_host.steps.job import periodic

    n = nomad_api.client(settings)
    name = gc.gc_id(settings)
    before = {j["ID"] for j in periodic.children(settings, n, name)}
    n.job.periodic_job(name)
    child = wait_for(lambda: next((j["ID"] for j in periodic.children(settings, n, name) if j["ID"] not in before),
                                  None), 30, "the forced launch")
    return wait_for(lambda: (launch := gc.read_launch(settings, n, child)).status in ("complete", "failed")
                    and launch, 240, f"the launch {child} to end", interval=0.5)


def test_gc_removes_a_deleted_runs_artifacts_keeps_the_others_and_says_what_it_could_not(cluster):
    settings, double, data = cluster
    job_deploy.deploy(settings(), "0.99", skip_host=True, skip_build=True, backup=False)  # registers mlflow-gc too
    parent = double.job(gc.gc_id(settings()))
    assert parent["Type"] == "batch" and parent["Periodic"]["ProhibitOverlap"] is True
    assert parent["Periodic"]["Specs"] == ["0 4 * * *"] and parent["Status"] == "running"
    (row,) = list(doctor.check_gc(settings(), 10))
    assert row.ok and row.found.startswith("daily at 04:00 UTC, runs deleted more than 2s ago; no run yet"), row

    kept, kept_uri = mlflow_client(double, "log")
    gone, gone_uri = mlflow_client(double, "log")
    assert folder(data, kept_uri).joinpath("model.txt").is_file() and folder(data, gone_uri).is_dir()
    mlflow_client(double, "delete", gone)
    time.sleep(2.5)  # deleted more than gc_older_than ago

    launch = force_and_follow(settings(), double)
    assert (launch.status, launch.exit_code) == ("complete", 0), launch
    assert launch.said["runs"] == 1 and launch.said["removed"] == 1 and launch.said["left"] == []
    assert launch.lines[-1].startswith("removed 1 run") and launch.lines[-1].endswith(
        f"nothing left in {data / 'artifacts'}"), launch.lines
    assert runs_in_store(data) == {kept: "active"}  # gone from the database
    assert not folder(data, gone_uri).exists() and not folder(data, gone_uri).parent.exists()  # and from the volume
    assert folder(data, kept_uri).joinpath("model.txt").read_text().startswith("weights")  # not deleted: kept
    (row,) = list(doctor.check_gc(settings(), 10))
    assert row.ok and "removed 1 run" in row.found and "nothing left" in row.found, row

    # a deleted run whose folder gc cannot remove (a subfolder another user owns, as a copy made by hand as root
    # leaves it): the launch fails and says what is left, in the store and on the volume; doctor is red with it
    stuck, stuck_uri = mlflow_client(double, "log")
    locked = folder(data, stuck_uri) / "copied-by-root"
    locked.mkdir()
    (locked / "weights.bin").write_bytes(b"\0" * 2048)
    os.chmod(locked, 0o755)  # root's: the task's user (1000) cannot remove what is in it
    mlflow_client(double, "delete", stuck)
    time.sleep(2.5)
    launch = force_and_follow(settings(), double)
    assert (launch.status, launch.exit_code) == ("failed", 1), launch
    assert "PermissionError" in launch.said["error"] and launch.said["still_in_store"] == [stuck]
    (left,) = launch.said["left"]
    assert (left["kind"], left["id"], left["uri"]) == ("run", stuck, stuck_uri)
    assert left["path"] == str(folder(data, stuck_uri)) and left["files"] >= 1
    assert any(line.startswith(f"left: run {stuck} (experiment ") and str(folder(data, stuck_uri)) in line
               for line in launch.lines), launch.lines
    assert runs_in_store(data)[stuck] == "deleted" and (locked / "weights.bin").exists()
    assert kept in runs_in_store(data) and folder(data, kept_uri).joinpath("model.txt").is_file()
    (row,) = list(doctor.check_gc(settings(), 10))
    assert not row.ok and "failed (exit 1): mlflow gc failed: PermissionError" in row.found, row
    assert f"; left run {stuck} (experiment " in row.found and str(folder(data, stuck_uri)) in row.found, row
    assert f"`nomad alloc logs {launch.alloc_id[:8]}` has its whole output" in row.fix
    assert json.dumps(double.job(gc.gc_id(settings()))).count(ADMIN_PASSWORD) == 0


def test_on_postgres_a_launch_reads_the_url_from_the_jobs_own_variable(tmp_path, nomad_cluster, postgres_server,
                                                                          mlflow_image, docker_client, nomad_network):
    """store postgres: deploy's periodic step writes the URL into nomad/jobs/mlflow-gc (never the job's text), the
    launch reads it through its parent's identity and runs gc on the database (empty here: nothing to remove)."""
    import ipaddress

    from mlflow_self_host.adapters import nomad_api
    from mlflow_self_host.steps.job import database_variable, periodic
    from tests.backup.test_postgres_backup import secrets_of
    from tests.job.test_release_on_postgres import Relay

    repo, tag = mlflow_image.ref().rsplit(":", 1)
    docker_client.images.push(repo, tag=tag)
    ipam = docker_client.networks.get(nomad_network).attrs["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    relay = Relay(gateway, ("127.0.0.1", postgres_server.port))  # the tasks reach the database over the bridge
    try:
        name = f"gc_{os.getpid()}_{int(time.time())}"
        url = postgres_server.database(name)
        url = url.replace("@127.0.0.1:", f"@{gateway}:").replace(f":{postgres_server.port}/", f":{relay.port}/")
        settings = Settings.load(root=PROJECT_ROOT, env={"MSH_DATABASE_URL": url,
                                                         "MSH_MLFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD},
                                 overrides=nomad_cluster.overrides(store="postgres", gc_older_than="30d",
                                                                   backup_schedule="", image=repo.split("/", 1)[1]))
        n = nomad_api.client(settings)
        plan = periodic.make_plan(settings, periodic.read(settings, n, mlflow_image.ref()))  # deploy's last step
        assert [c.describe() for c in plan] == ["+ periodic job mlflow-gc: daily at 04:00 UTC, runs deleted more "
                                                "than 30d ago"]
        applying = periodic.Apply(settings, n)
        for change in plan:
            applying.apply_one(change)
        variable = n.variable.get_variable("nomad/jobs/mlflow-gc")
        assert variable["Items"] == {"database_url": database_variable.wanted(settings)}  # psycopg2, encoded
        job_text = json.dumps(nomad_cluster.nomad.job("mlflow-gc"))
        assert not any(secret in job_text for secret in secrets_of(postgres_server))

        launch = force_and_follow(settings, nomad_cluster.nomad)
        assert (launch.status, launch.exit_code) == ("complete", 0), launch
        assert launch.said == {"older_than": "30d", "runs": 0, "removed": 0, "models": 0, "experiments": 0,
                               "left": [], "still_in_store": [], "error": ""}
        assert not any(secret in json.dumps(launch.lines) for secret in secrets_of(postgres_server))
        assert postgres_server.psql("SELECT count(*) FROM runs", database=name) == "0"  # MLflow's tables, there

        # gc turned off again: deploy's periodic step stops the job and removes its copy of the URL
        off = settings.with_overrides({"gc_older_than": ""})
        plan = periodic.make_plan(off, periodic.read(off, n, mlflow_image.ref()))
        (retire,) = plan.changes
        assert retire.describe().startswith("- periodic job mlflow-gc") and "turned off" in retire.describe()
        for change in plan:
            periodic.Apply(off, n).apply_one(change)
        assert nomad_cluster.nomad.job("mlflow-gc")["Stop"] is True
        assert ("default", "nomad/jobs/mlflow-gc") not in nomad_cluster.nomad.variables
    finally:
        relay.stop()
