"""auth: basic for real (issue 29): the project's MLflow image on the Nomad double behind the proxy (nginx routed
from Nomad's catalogue, as Traefik's nomad provider does), deployed and managed through `inv` as a user types it.

The MLflow client with a user's credentials logs runs and artifacts through the name; no credentials get 401,
a reader's write 403; `inv users` adds, refuses a duplicate (2), an unknown user (2) and a wrong admin password
(9); a release and Nomad's revert keep the users and their permissions; the admin's password is in no output,
job text, image layer or process list.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
import requests

from mlflow_self_host.core.settings import PROJECT_ROOT
from tests.job.test_service_provider import DOMAIN, name, start_proxy  # noqa: F401 - the name fixture
from tests.services import ADMIN_PASSWORD, clean_env, resolver
from tests.services import proxy as proxy_service
from tests.services.nomad_cluster import MLFLOW_TIMINGS

pytestmark = pytest.mark.slow
ALICE, BOB = "alice", "bob"
ALICE_PW, BOB_PW = "alice-pw-" + uuid.uuid4().hex[:8], "bob-pw-" + uuid.uuid4().hex[:8]

CLIENT = r'''
import os, sys, tempfile, mlflow
from mlflow.tracking import MlflowClient
action, experiment = sys.argv[1], sys.argv[2]
client = MlflowClient()
if action == "log":
    found = client.get_experiment_by_name(experiment)
    eid = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(eid)
    client.log_metric(run.info.run_id, "loss", 0.25)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "note.txt")
        open(path, "w").write("hello")
        client.log_artifact(run.info.run_id, path)
        back = open(client.download_artifacts(run.info.run_id, "note.txt", tmp + "/d")).read()
    print(eid, run.info.run_id, client.get_run(run.info.run_id).data.metrics["loss"], back, run.info.artifact_uri)
elif action == "write":
    eid = client.get_experiment_by_name(experiment).experiment_id
    try:
        client.create_run(eid)
        print("written")
    except Exception as exc:
        print("refused", getattr(exc, "error_code", ""), str(exc)[:200])
'''


COMMAND_LINES = """
import os
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            print(open("/proc/%s/cmdline" % p, "rb").read().replace(b"\\0", b" ").decode())
        except OSError:
            pass
"""


@pytest.fixture
def auth_cluster(nomad_double, mlflow_image, docker_engine_service, tmp_path):
    """The job tests' cluster running the real MLflow image (v0.99, and the same as v0.100 for a release)."""
    client = docker_engine_service.client()
    ref = mlflow_image.ref()
    repo, _ = ref.rsplit(":", 1)
    client.images.get(ref).tag(repo, "v0.100")
    for tag in ("v0.99", "v0.100"):
        client.images.push(repo, tag=tag)
    proxy = start_proxy(tmp_path, nomad_double.address, "nomad")
    try:
        yield nomad_double, proxy, repo
    finally:
        proxy_service.stop(proxy)
        client.images.remove(f"{repo}:v0.100", noprune=True)


def inv(cluster_double, proxy, dns, *args, expect=0, extra=None, **settings):
    env = clean_env()
    timings = {**MLFLOW_TIMINGS, "healthy_deadline": "6m", "progress_deadline": "10m"}  # a busy test machine
    values = cluster_double.cluster.overrides(**{"domain": DOMAIN, **timings, "deploy_timeout": 900,
                                                 "deploy_check": "true", "deploy_url": f"http://{DOMAIN}:{proxy.port}/",
                                                 "deploy_check_timeout": 60, **settings})  # settings win
    env.update({f"MSH_{k.upper()}": str(v) for k, v in values.items()})
    env.update(resolver.env_for_subprocess(dns.port))
    env.update(extra or {})
    done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == expect, f"inv {' '.join(args)} → {done.returncode}\n{done.stderr[-4000:]}"
    assert "Traceback" not in done.stderr
    for secret in (ADMIN_PASSWORD, ADMIN_PASSWORD.encode().hex(), ALICE_PW, BOB_PW):
        assert secret not in done.stdout + done.stderr
    return done


def as_user(proxy, dns, user, password, action, experiment):
    env = {**clean_env(), **resolver.env_for_subprocess(dns.port),
           "MLFLOW_TRACKING_URI": f"http://{DOMAIN}:{proxy.port}/",
           "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password,
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    done = subprocess.run([sys.executable, "-c", CLIENT, action, experiment], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def api(proxy, path, auth=None, **kwargs):
    return requests.get(f"http://127.0.0.1:{proxy.port}/{path}", headers={"Host": DOMAIN}, auth=auth, timeout=10,
                        **kwargs)


def test_users_log_in_readers_cannot_write_and_a_release_and_a_revert_keep_them(auth_cluster, name, mlflow_image,
                                                                                 docker_engine_service):
    double, proxy, repo = auth_cluster
    cluster = dict(image=repo.split("/", 1)[1])
    done = inv(double, proxy, name, "deploy", "--skip-host", "--skip-build", **cluster)
    assert f"deployed v0.99: job version 0, http://{DOMAIN}:{proxy.port}/" in done.stderr
    assert "admin_password = ****" in done.stderr  # the plan's Variable line
    proxy.wait_for_route(DOMAIN)

    # no credentials: 401; the admin: 200
    assert api(proxy, "api/2.0/mlflow/experiments/search?max_results=1").status_code == 401
    assert api(proxy, "api/2.0/mlflow/experiments/search?max_results=1", ("admin", ADMIN_PASSWORD)).status_code == 200

    # inv users: add (password from the environment), a duplicate and an unknown user refused with 2
    inv(double, proxy, name, "users", "--add", ALICE, extra={"MSH_USER_PASSWORD": ALICE_PW}, **cluster)
    inv(double, proxy, name, "users", "--add", BOB, extra={"MSH_USER_PASSWORD": BOB_PW}, **cluster)
    dup = inv(double, proxy, name, "users", "--add", ALICE, expect=2, extra={"MSH_USER_PASSWORD": ALICE_PW}, **cluster)
    assert f"user {ALICE} exists already" in dup.stderr
    unknown = inv(double, proxy, name, "users", "--remove", "nobody", expect=2, **cluster)
    assert "no user nobody in MLflow" in unknown.stderr
    wrong = inv(double, proxy, name, "users", expect=9, extra={"MSH_MLFLOW_ADMIN_PASSWORD": "not-the-admins-pw"},
                **cluster)
    assert "MLflow refused the admin admin's credentials (HTTP 401)" in wrong.stderr
    listed = inv(double, proxy, name, "users", **cluster).stdout.split("\n")
    assert {"admin  (admin)", ALICE, BOB} <= set(listed)

    # alice logs a run, a metric and an artifact through the name; bob (READ by default) may not write there
    eid, run_id, loss, back, uri = as_user(proxy, name, ALICE, ALICE_PW, "log", "alice-exp")
    assert (loss, back) == ("0.25", "hello") and uri.startswith("mlflow-artifacts:")
    assert as_user(proxy, name, BOB, BOB_PW, "write", "alice-exp")[:2] == ["refused", "PERMISSION_DENIED"]
    assert api(proxy, f"api/2.0/mlflow/runs/get?run_id={run_id}", (BOB, BOB_PW)).status_code == 200  # reads
    assert api(proxy, "api/2.0/mlflow/experiments/search?max_results=1", (BOB, "wrong-password-1")).status_code == 401
    inv(double, proxy, name, "users", "--grant", BOB, "--experiment", "alice-exp", "--permission", "EDIT", **cluster)
    assert as_user(proxy, name, BOB, BOB_PW, "write", "alice-exp") == ["written"]
    assert (double.cluster.backend / "basic_auth.db").exists()  # beside mlflow.db

    # the secrets are in no job text, no image layer, no process's command line
    texts = json.dumps(double.job()) + json.dumps(double.versions())
    history = json.dumps(docker_engine_service.client().api.history(mlflow_image.ref()))
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout + "".join(
        c.exec_run(["python", "-c", COMMAND_LINES]).output.decode(errors="replace")  # the engine's containers' too
        for c in docker_engine_service.client().containers.list()
        if c.attrs["Config"]["Image"].startswith(repo + ":"))  # the job's (by name: another test may rebuild the tag)
    for secret in (ADMIN_PASSWORD, ADMIN_PASSWORD.encode().hex()):
        assert secret not in texts and secret not in history and secret not in processes
    assert "mlflow.server.auth:create_app" in processes  # the auth app runs

    # a new job version (a new secret key: a new revision of the Variable, the allocation replaced), then
    # `inv rollback` to the first one (its own revision's items): users and permissions kept through both
    changed = inv(double, proxy, name, "deploy", "--skip-host", "--skip-build",
                  extra={"MSH_MLFLOW_SECRET_KEY": "another-secret-key-" + uuid.uuid4().hex}, **cluster)
    assert "job version 1" in changed.stderr and "secret_key = ****" in changed.stderr
    assert as_user(proxy, name, BOB, BOB_PW, "write", "alice-exp") == ["written"]
    inv(double, proxy, name, "rollback", "--to", "0", **cluster)
    assert double.job()["Version"] == 2
    assert api(proxy, "api/2.0/mlflow/experiments/search?max_results=1").status_code == 401
    assert as_user(proxy, name, BOB, BOB_PW, "write", "alice-exp") == ["written"]
    assert as_user(proxy, name, ALICE, ALICE_PW, "log", "alice-exp")[0] == eid

    # each server process keeps a checked password for auth_cache_seconds (30 by default: the hash check is slow by
    # design); a new password or a removal through `inv users` holds at once on the one allocation
    read_back = ("import glob, os\n"
                 "os.environ['MLFLOW_AUTH_CONFIG_PATH'] = glob.glob('/tmp/mlflow-auth.*/basic_auth.ini')[0]\n"
                 "from mlflow.server.auth.config import read_auth_config\n"
                 "print(read_auth_config().auth_cache_ttl_seconds)")
    kept = [c.exec_run(["python", "-c", read_back], stderr=False).output.decode(errors="replace").strip()
            for c in docker_engine_service.client().containers.list()
            if c.attrs["Config"]["Image"].startswith(repo + ":")]
    assert kept and all(k == "30" for k in kept), kept  # MLflow's own reading of the ini the entrypoint wrote
    search = "api/2.0/mlflow/experiments/search?max_results=1"
    new_pw = "bob-new-" + uuid.uuid4().hex[:8]
    assert api(proxy, search, (BOB, BOB_PW)).status_code == 200  # checked now: in the cache
    changed = inv(double, proxy, name, "users", "--set-password", BOB, extra={"MSH_USER_PASSWORD": new_pw}, **cluster)
    assert "may accept" not in changed.stderr  # one allocation, one worker: no other process to wait for
    assert new_pw not in changed.stdout + changed.stderr
    assert api(proxy, search, (BOB, BOB_PW)).status_code == 401
    assert api(proxy, search, (BOB, new_pw)).status_code == 200
    assert api(proxy, search, (ALICE, ALICE_PW)).status_code == 200  # checked now: in the cache
    inv(double, proxy, name, "users", "--remove", ALICE, **cluster)
    assert api(proxy, search, (ALICE, ALICE_PW)).status_code == 401
