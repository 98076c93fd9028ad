"""The job file with each store: sqlite renders exactly the job of before PostgreSQL (the same JSON, byte for
byte), postgres renders `count` allocations and the database's URL through a template from a Nomad Variable.

The saved rendering is Nomad's own parser's (the double's engine: HashiCorp's HCL and the api package's
Canonicalize), made again when that engine replaced a home-made one (issue 26). Against the rendering of
before, the only change of meaning is the group's ShutdownDelay, 0 instead of unset: Nomad refuses a null
duration, so sqlite's is "0s" (Nomad's own default); every other difference was the old parser's shape
(fields it left null that Canonicalize fills: OnUpdate, Cluster, a job-level Update...)."""
from __future__ import annotations

import json

import pytest

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.steps.job import jobfile
from mlflow_self_host.core.settings import PROJECT_ROOT
from tests.doubles.nomad import engine
from tests.job.conftest import job_settings

HCL = (PROJECT_ROOT / "nomad" / "mlflow.nomad.hcl").read_text()
BEFORE = PROJECT_ROOT / "tests" / "job" / "sqlite_job_before_postgres.json"
# The settings each rendering of BEFORE was made with (from the job file as it was before the store setting);
# check_interval was 10s by default then (2s since issue 28's P7).
CASES = {"defaults": ({"check_interval": "10s"}, "nomad"),
         "consul_and_entrypoints": ({"traefik_entrypoints": "web,websecure", "check_interval": "10s"}, "consul"),
         "other_sizes_and_timings": ({"memory": 300, "cpu": 500, "workers": 2, "datacenter": "DC0,DC1",
                                      "min_healthy_time": "2s", "check_interval": "10s"}, "nomad")}
URL = "postgresql://mlflow:s3cret-pw@db.lan:5432/mlflow"


def render(provider="nomad", database_revision=None, **settings) -> dict:
    s = job_settings("http://127.0.0.1:1", **settings)
    values = jobfile.variables(s, "0.99", "amd64,arm64", provider, database_revision)
    return engine.parse(HCL, jobfile.var_file(values), canonicalize=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_sqlite_renders_the_job_of_before_byte_for_byte(case):
    overrides, provider = CASES[case]
    overrides = {**overrides, "auth": "none"}  # the job of before had no logins (auth: basic adds its template)
    before = json.loads(BEFORE.read_text())[case]
    # metrics: false is the job of before but for the entrypoint told so (the metrics setting came after it, issue 30)
    for job in (render(provider, metrics=False, **overrides),
                render(provider, store="sqlite", count=1, metrics=False, **overrides)):
        assert job["TaskGroups"][0]["Tasks"][0]["Env"].pop("MLFLOW_EXPOSE_PROMETHEUS") == "false"
        assert json.dumps(job, sort_keys=True) == json.dumps(before, sort_keys=True)
    assert before["TaskGroups"][0]["ShutdownDelay"] == 0
    # metrics on (the default): the same job with the two Prometheus tags, and the entrypoint told to serve /metrics
    now = render(provider, **overrides)
    service, task = now["TaskGroups"][0]["Services"][0], now["TaskGroups"][0]["Tasks"][0]
    assert service["Tags"][-2:] == ["prometheus.io/scrape=true", "prometheus.io/path=/metrics"]
    assert task["Env"].pop("MLFLOW_EXPOSE_PROMETHEUS") == "true"
    del service["Tags"][-2:]
    assert json.dumps(now, sort_keys=True) == json.dumps(before, sort_keys=True)


def test_postgres_renders_count_allocations_and_the_url_from_the_variable():
    job = render(store="postgres", database_url=URL, job_name="tracking", database_revision="20261201T030000000000Z")
    group = job["TaskGroups"][0]
    task = group["Tasks"][0]
    assert group["Count"] == 2
    assert group["ShutdownDelay"] == 20 * 10**9  # a stopped allocation serves until the proxy dropped it
    assert group["Update"]["MaxParallel"] == 1 and group["Update"]["AutoRevert"] is True
    template, auth_template = task["Templates"]
    assert auth_template["DestPath"] == "secrets/auth.env"  # auth: basic (the default): test_auth.py
    # a new URL comes at a new revision, whose item the template reads: the job changes, a rolling update, not
    # every task restarted; an older job version reads its own revision's item
    assert template["Envvars"] is True and template["ChangeMode"] == "noop"
    assert template["EmbeddedTmpl"] == ('{{ with nomadVar "nomad/jobs/tracking" }}'
                                        "MLFLOW_BACKEND_STORE_URI={{ .database_url_20261201T030000000000Z }}{{ end }}\n")
    assert task["Env"]["MLFLOW_BACKEND_STORE_URI"] == "from-the-template:nomad/jobs/tracking"
    text = json.dumps(job)
    assert "s3cret-pw" not in text and "db.lan" not in text  # nothing of the URL is in the job
    # the artifacts stay a host volume every allocation mounts (shared storage across clients)
    assert {m["Destination"] for m in task["VolumeMounts"]} == {"/mnt/backend_store", "/mnt/artifacts"}
    assert render(store="postgres", count=3)["TaskGroups"][0]["Count"] == 3


@pytest.mark.parametrize("count", [2, 3])
def test_sqlite_refuses_more_than_one_allocation(count):
    with pytest.raises(UserError, match="SQLite has one writer") as caught:
        render(store="sqlite", count=count)
    assert caught.value.code == 2


def test_a_negative_count_is_refused():
    with pytest.raises(UserError, match="count must be 0"):
        render(store="postgres", count=-1)
