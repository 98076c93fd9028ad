"""The nightly backup as a Nomad periodic job (issue 30): `inv deploy` registers {job_name}-backup beside the service
(a plan line, nothing the second time), Nomad's launcher forced as `nomad job periodic force` does runs the real
MLflow image's mlflow-backup.py, the backup is listed in both folders by `inv backup --list` and verified by `inv
restore --verify`; a backup taken while a client logs loses nothing the client had an acknowledgement for before it
started; a release stops the launcher (a forced launch of the stopped parent is refused, as Nomad refuses it) and
registers it again after.

The SSH test host is this machine: backups_path is the cluster's backups folder, the host volume mlflow-backups."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import requests

from mlflow_self_host.adapters import nomad_api
from mlflow_self_host.core.settings import Settings
from mlflow_self_host.steps.backup.names import is_backup_name
from mlflow_self_host.steps.job import periodic
from tests.flags.conftest import inv, make_project, set_version
from tests.services import ADMIN_PASSWORD, clean_env, wait_for
from tests.services.nomad_cluster import MLFLOW_TIMINGS

pytestmark = pytest.mark.slow
VERSION, NEXT = "1.1", "1.2"  # the real MLflow image, in the cluster's registry under two tags


@pytest.fixture
def nightly(tmp_path, ssh_server, nomad_cluster, mlflow_image, docker_client):
    """(project, env, settings): the real image published as v1.1 and v1.2, version.txt 1.1, the settings for the
    cluster and the SSH host, backups in the cluster's two backup folders."""
    image = docker_client.images.get(mlflow_image.ref())
    repo = f"{nomad_cluster.images.registry}/{nomad_cluster.images.repository}"
    for version in (VERSION, NEXT):
        image.tag(repo, f"v{version}")
        docker_client.images.push(repo, tag=f"v{version}")
    project = make_project(tmp_path / "project", version=VERSION, docker=None)
    values = dict(ssh_server.settings(), **nomad_cluster.overrides(
        backups_path=str(nomad_cluster.backups), backup_copy_path=str(nomad_cluster.backups_copy),
        **{**MLFLOW_TIMINGS, "healthy_deadline": "4m", "progress_deadline": "5m"}, deploy_timeout=400))
    env = clean_env()
    env.update({f"MSH_{k.upper()}": str(v) for k, v in values.items()}, MSH_MLFLOW_ADMIN_PASSWORD=ADMIN_PASSWORD)
    settings = Settings.load(root=project, env={"MSH_MLFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD}, overrides=values)
    yield project, env, settings
    for version in (VERSION, NEXT):
        docker_client.images.remove(f"{repo}:v{version}", noprune=True)


def mlflow_url(double) -> str:
    (registration,) = [r for r in double.services.values() if r["ServiceName"] == "mlflow"]
    return f"http://{registration['Address']}:{registration['Port']}"


class Logger(threading.Thread):
    """A client logging metrics in batches of 50 (MLflow's REST API, as the admin): each batch whose answer came
    back (200) is acknowledged, with when its answer came."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.stop, self.acked = url, threading.Event(), []  # (answered at, first step, last step)
        self.session = requests.Session()
        self.session.auth = ("admin", ADMIN_PASSWORD)
        eid = self.post("experiments/create", {"name": f"nightly-{time.time_ns()}"})["experiment_id"]
        self.run_id = self.post("runs/create", {"experiment_id": eid})["run"]["info"]["run_id"]

    def post(self, path: str, body: dict) -> dict:
        response = self.session.post(f"{self.url}/api/2.0/mlflow/{path}", json=body, timeout=30)
        assert response.status_code == 200, response.text[:300]
        return response.json()

    def run(self):
        step = 0
        while not self.stop.is_set():
            metrics = [{"key": "loss", "value": 1.0 / (i + 1), "timestamp": 0, "step": i} for i in range(step, step + 50)]
            self.post("runs/log-batch", {"run_id": self.run_id, "metrics": metrics})
            self.acked.append((time.time(), step, step + 49))
            step += 50


def steps_in(backup, run_id: str) -> set[int]:
    con = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        return {row[0] for row in con.execute("SELECT step FROM metrics WHERE run_uuid = ? AND key = 'loss'",
                                              (run_id,))}
    finally:
        con.close()


def test_deploy_registers_the_nightly_backup_which_runs_copies_lists_and_verifies_and_pauses_for_a_release(
        nightly, nomad_cluster):
    project, env, settings = nightly
    double = nomad_cluster.nomad
    first = inv("deploy", "--skip-host", "--skip-build", cwd=project, env=env, timeout=600)
    said = " ".join(first.stderr.split())
    assert "+ periodic job mlflow-backup nightly at 03:00 UTC, kept 7 deep, copied to " in said, first.stderr
    assert "registered periodic job mlflow-backup: nightly at 03:00 UTC" in said
    assert said.index("deployment") < said.index("registered periodic job")  # after the service is healthy
    parent = double.job("mlflow-backup")
    assert parent["Type"] == "batch" and parent["Periodic"]["Specs"] == ["0 3 * * *"]
    assert parent["Periodic"]["ProhibitOverlap"] is True and parent["Periodic"]["TimeZone"] == "UTC"
    again = inv("deploy", "--skip-host", "--skip-build", cwd=project, env=env)
    assert "already deployed" in again.stderr and "periodic jobs: no change" in again.stderr, again.stderr
    assert len(double.versions("mlflow-backup")) == 1  # nothing registered the second time

    # a backup forced while a client logs: nothing acknowledged before the launch is missing from it
    logger = Logger(mlflow_url(double))
    logger.start()
    wait_for(lambda: len(logger.acked) >= 3 or None, 60, "the client logging")
    n = nomad_api.client(settings)
    forced_at = time.time()
    n.job.periodic_job("mlflow-backup")
    (child,) = periodic.children(settings, n, "mlflow-backup")
    wait_for(lambda: n.job.get_job(child["ID"])["Status"] == "dead" or None, 120, "the backup's launch to end")
    logger.stop.set()
    logger.join(30)
    (alloc,) = n.job.get_allocations(child["ID"])
    assert alloc["ClientStatus"] == "complete", alloc["TaskStates"]
    names = sorted(p.name for p in nomad_cluster.backups.iterdir() if is_backup_name(p.name))
    (name,) = names
    assert name.endswith(f"-v{VERSION}.db")
    for folder in (nomad_cluster.backups, nomad_cluster.backups_copy):  # beside it as `inv backup` leaves them
        assert {p.name for p in folder.iterdir()} >= {name, f"auth-{name}", f"{name}.schema"}, folder
    acked_before = [(a, b) for at, a, b in logger.acked if at < forced_at]
    assert acked_before and logger.acked[-1][0] > forced_at  # the client logged before and during the backup
    held = steps_in(nomad_cluster.backups / name, logger.run_id)
    assert all(set(range(a, b + 1)) <= held for a, b in acked_before)
    assert steps_in(nomad_cluster.backups_copy / name, logger.run_id) == held

    listed = inv("backup", "--list", cwd=project, env=env)
    assert listed.stdout.count(name) == 2, listed.stdout  # the backups folder, then the second folder
    assert str(nomad_cluster.backups_copy) in listed.stderr
    verified = inv("restore", "--verify", cwd=project, env=env, timeout=300)
    assert name in verified.stderr + verified.stdout
    row = periodic.nightly_row(settings)
    assert row.ok and row.found.startswith("nightly at 03:00 UTC; last run ") and row.found.endswith(": complete")

    # a release: the launcher stopped first (a force refused meanwhile), registered again after, with the new image
    seen = {}

    def watch():
        while "stopped" not in seen:
            job = double.job("mlflow-backup")
            if job.get("Stop"):
                try:
                    n.job.periodic_job("mlflow-backup")
                    seen["stopped"] = "forced"
                except Exception as exc:  # noqa: BLE001 - the refusal is what is looked for
                    seen["stopped"] = nomad_api.status_and_text(exc)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    set_version(project, NEXT)
    release = inv("deploy", "--skip-host", "--skip-build", cwd=project, env=env, timeout=600)
    watcher.join(5)
    err = " ".join(release.stderr.split())
    assert "pause periodic job mlflow-backup" in err and "~ periodic job mlflow-backup" in err, release.stderr
    assert err.index("paused periodic job mlflow-backup") < err.index("register job mlflow") \
        < err.index("registered periodic job mlflow-backup")
    status, text = seen["stopped"]
    assert status == 500 and "can't force run non-tracked job" in text
    parent = double.job("mlflow-backup")
    assert not parent.get("Stop") and parent["TaskGroups"][0]["Tasks"][0]["Config"]["image"].endswith(f":v{NEXT}")
    assert len(periodic.children(settings, n, "mlflow-backup")) == 1  # nothing launched during the release


# --- store: postgres: pg_dump in an image with the server's client, the URL from the job's own Variable ------------
@pytest.fixture
def pg_dump_image(docker_client, base_image, nomad_cluster):
    """An image with Debian's postgresql-client (the suite's server is Debian's too: the same major), in the
    cluster's registry: no registry outside can be pulled from."""
    import io

    repo = f"{nomad_cluster.images.registry}/msh-pg-dump"
    recipe = (f"FROM {base_image}\nRUN apt-get update -qq && apt-get install -y -qq --no-install-recommends "
              "postgresql-client >/dev/null && rm -rf /var/lib/apt/lists/*\n")
    docker_client.images.build(fileobj=io.BytesIO(recipe.encode()), tag=f"{repo}:bookworm", rm=True,
                               network_mode="host")
    docker_client.images.push(repo, tag="bookworm")
    yield f"{repo}:bookworm"
    docker_client.images.remove(f"{repo}:bookworm", noprune=True)


def test_on_postgres_the_nightly_backup_is_a_checked_pg_dump_in_both_folders(
        tmp_path, ssh_server, nomad_cluster, postgres_server, pg_dump_image, docker_client, nomad_network):
    import ipaddress
    import json
    import subprocess

    from tests.backup.test_postgres_backup import make_store, secrets_of
    from tests.job.test_release_on_postgres import Relay

    ipam = docker_client.networks.get(nomad_network).attrs["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    relay = Relay(gateway, ("127.0.0.1", postgres_server.port))  # the tasks reach the database over the bridge
    try:
        name, url = make_store(postgres_server)
        url = url.replace("@127.0.0.1:", f"@{gateway}:").replace(f":{postgres_server.port}/", f":{relay.port}/")
        project = make_project(tmp_path / "project", version="1.0", docker=None)
        values = dict(ssh_server.settings(), **nomad_cluster.overrides(
            store="postgres", pg_dump_image=pg_dump_image, backups_path=str(nomad_cluster.backups),
            backup_copy_path=str(nomad_cluster.backups_copy)))
        secret_env = {"MSH_DATABASE_URL": url, "MSH_MLFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD}
        settings = Settings.load(root=project, env=secret_env, overrides=values)
        n = nomad_api.client(settings)
        facts = periodic.read(settings, n, nomad_cluster.images.ref("1.0"))  # as deploy's last step registers it
        plan = periodic.make_plan(settings, facts)
        assert [c.describe() for c in plan] == [f"+ periodic job mlflow-backup: nightly at 03:00 UTC, kept 7 deep, "
                                                f"copied to {nomad_cluster.backups_copy}"]
        applying = periodic.Apply(settings, n)
        for change in plan:
            applying.apply_one(change)
        job_text = json.dumps(nomad_cluster.nomad.job("mlflow-backup"))
        assert not any(secret in job_text for secret in secrets_of(postgres_server))  # the Variable has it

        n.job.periodic_job("mlflow-backup")
        (child,) = periodic.children(settings, n, "mlflow-backup")
        wait_for(lambda: n.job.get_job(child["ID"])["Status"] == "dead" or None, 120, "the dump's launch to end")
        (alloc,) = n.job.get_allocations(child["ID"])
        out = n.client.stream_logs.request(alloc["ID"], params={"task": "backup", "type": "stdout", "plain": True},
                                           method="get").content.decode()
        err = n.client.stream_logs.request(alloc["ID"], params={"task": "backup", "type": "stderr", "plain": True},
                                           method="get").content.decode()
        assert alloc["ClientStatus"] == "complete", (out, err)
        assert not any(secret in out + err for secret in secrets_of(postgres_server))
        (dump,) = [p.name for p in nomad_cluster.backups.iterdir() if is_backup_name(p.name)]
        assert dump.endswith("-v1.0.dump") and json.loads(out.splitlines()[-1])["table_data"] >= 3
        assert (nomad_cluster.backups / f"{dump}.schema").read_text().strip() == "b7e2c1a4d9f3"
        assert (nomad_cluster.backups_copy / dump).read_bytes() == (nomad_cluster.backups / dump).read_bytes()
        listing = subprocess.run([str(postgres_server.bin_dir / "pg_restore"), "--list",
                                  str(nomad_cluster.backups / dump)], capture_output=True, text=True, check=True)
        assert " TABLE DATA public runs " in listing.stdout

        env = clean_env()
        env.update({f"MSH_{k.upper()}": str(v) for k, v in values.items()}, **secret_env)
        listed = inv("backup", "--list", cwd=project, env=env)
        assert listed.stdout.count(dump) == 2 and "postgres" in listed.stdout, listed.stdout
    finally:
        relay.stop()
