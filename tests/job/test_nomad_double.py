"""The Nomad double answers as ../shared/reference/nomad/ says (paths, codes, text/plain errors, headers)."""
from __future__ import annotations

import base64
import json

import pytest
import requests

from mlflow_self_host.settings import PROJECT_ROOT

HCL = (PROJECT_ROOT / "nomad" / "mlflow.nomad.hcl").read_text()
VARS = 'image = "reg.lan:5000/mlflow:v1.0"\n'


def parse(double, variables=VARS):
    return requests.post(double.address + "/v1/jobs/parse",
                         json={"JobHCL": HCL, "Variables": variables, "Canonicalize": True}, timeout=5)


def register(double, job, **extra):
    return requests.post(double.address + "/v1/jobs", json={"Job": job, **extra}, timeout=5)


def test_parse_gives_the_json_job_with_the_variables(nomad_double):
    job = parse(nomad_double).json()
    assert (job["ID"], job["Type"], job["Namespace"], job["Region"]) == ("mlflow", "service", "default", "global")
    group = job["TaskGroups"][0]
    assert (group["Name"], group["Count"], group["Tasks"][0]["Name"]) == ("svc", 1, "mlflow_app")
    assert group["Update"]["AutoRevert"] is True and group["Update"]["HealthCheck"] == "checks"
    assert group["Networks"][0]["DynamicPorts"][0] == {"Label": "mlflow_http", "Value": 0, "To": 5000,
                                                       "HostNetwork": "default"}
    assert group["Services"][0]["Checks"][0]["Path"] == "/health"
    assert group["RestartPolicy"]["Attempts"] == 5 and group["RestartPolicy"]["Delay"] == 30 * 10**9
    assert {m["Destination"] for m in group["Tasks"][0]["VolumeMounts"]} == {"/mnt/backend_store", "/mnt/artifacts"}
    assert group["Tasks"][0]["Config"]["image"] == "reg.lan:5000/mlflow:v1.0"


@pytest.mark.parametrize("image", ["reg.lan:5000/mlflow:latest", "reg.lan:5000/mlflow", "mlflow:v1"])
def test_the_job_file_refuses_an_unpinned_image(nomad_double, image):
    response = parse(nomad_double, f'image = "{image}"\n')
    assert response.status_code == 400 and response.headers["Content-Type"] == "text/plain"
    assert "Invalid value for variable" in response.text and "never latest" in response.text


def test_parse_errors_are_400_text(nomad_double):
    response = parse(nomad_double, "")
    assert (response.status_code, response.headers["Content-Type"]) == (400, "text/plain")
    assert 'Unset variable "image"' in response.text
    assert "Undefined -var-file variable" in parse(nomad_double, VARS + 'colour = "red"\n').text
    bad = requests.post(nomad_double.address + "/v1/jobs/parse",
                        json={"JobHCL": 'job "x" { bogus { } }'}, timeout=5)
    assert bad.status_code == 400 and 'Blocks of type "bogus" are not expected here' in bad.text


def test_enforce_index_failures_are_500_with_nomads_text(nomad_double):
    job = parse(nomad_double).json()
    assert register(nomad_double, job, EnforceIndex=True, JobModifyIndex=5).text == \
        "Enforcing job modify index 5: job does not exist"
    created = register(nomad_double, job, EnforceIndex=True, JobModifyIndex=0).json()
    again = register(nomad_double, job, EnforceIndex=True, JobModifyIndex=0)
    assert (again.status_code, again.text) == (500, "Enforcing job modify index 0: job already exists")
    stale = register(nomad_double, job, EnforceIndex=True, JobModifyIndex=created["JobModifyIndex"] - 1)
    assert stale.status_code == 500 and stale.text == (
        f"Enforcing job modify index {created['JobModifyIndex'] - 1}: job exists with conflicting job modify "
        f"index: {created['JobModifyIndex']}")


def test_reads_carry_x_nomad_index_and_404s_are_text(nomad_double):
    missing = requests.get(nomad_double.address + "/v1/job/mlflow", timeout=5)
    assert (missing.status_code, missing.text) == (404, "job not found")
    assert requests.get(nomad_double.address + "/v1/job/mlflow/versions", timeout=5).text == "job versions not found"
    register(nomad_double, parse(nomad_double).json())
    read = requests.get(nomad_double.address + "/v1/job/mlflow", timeout=5)
    assert int(read.headers["X-Nomad-Index"]) >= read.json()["JobModifyIndex"]
    assert requests.get(nomad_double.address + "/v1/deployment/nope", timeout=5).text == "resource not found"


def test_no_update_block_no_deployment_and_the_latest_is_null(nomad_double):
    job = parse(nomad_double).json()
    job["TaskGroups"][0]["Update"] = None
    register(nomad_double, job)
    latest = requests.get(nomad_double.address + "/v1/job/mlflow/deployment", timeout=5)
    assert (latest.status_code, latest.text) == (200, "null")
    nomad_double.wait_idle()
    alloc = requests.get(nomad_double.address + "/v1/job/mlflow/allocations", timeout=5).json()[0]
    assert (alloc["ClientStatus"], alloc["DeploymentID"]) == ("running", "")


def test_logs_endpoint_validates_like_nomad_and_frames_base64(nomad_double):
    register(nomad_double, parse(nomad_double).json())
    nomad_double.wait_idle()
    alloc = requests.get(nomad_double.address + "/v1/job/mlflow/allocations", timeout=5).json()[0]
    url = nomad_double.address + "/v1/client/fs/logs/" + alloc["ID"]
    assert requests.get(url, params={"type": "stderr"}, timeout=5).text == "must provide task name"
    assert requests.get(url, params={"task": "mlflow_app", "type": "x"}, timeout=5).text == \
        "must provide log type (stdout/stderr)"
    plain = requests.get(url, params={"task": "mlflow_app", "type": "stderr", "plain": "true"}, timeout=5)
    framed = requests.get(url, params={"task": "mlflow_app", "type": "stderr"}, timeout=5)
    assert plain.headers["Content-Type"] == "text/plain" and "Uvicorn running" in plain.text
    assert base64.b64decode(json.loads(framed.text)["Data"]).decode() == plain.text


def test_revert_checks_the_prior_version(nomad_double):
    job = parse(nomad_double).json()
    register(nomad_double, job)
    job["TaskGroups"][0]["Tasks"][0]["Config"]["image"] = "reg.lan:5000/mlflow:v1.1"
    register(nomad_double, job)
    nomad_double.wait_idle()
    url = nomad_double.address + "/v1/job/mlflow/revert"
    wrong = requests.post(url, json={"JobID": "mlflow", "JobVersion": 0, "EnforcePriorVersion": 0}, timeout=5)
    assert (wrong.status_code, wrong.text) == (500, "Current job has version 1; enforcing version 0")
    ok = requests.post(url, json={"JobID": "mlflow", "JobVersion": 0, "EnforcePriorVersion": 1}, timeout=5)
    assert ok.status_code == 200 and set(ok.json()) >= {"EvalID", "EvalCreateIndex", "JobModifyIndex"}


def test_acl_tokens_by_header_or_bearer(nomad_double):
    nomad_double.acl_tokens = {"s": "management"}
    url = nomad_double.address + "/v1/jobs"
    assert (requests.get(url, timeout=5).status_code, requests.get(url, timeout=5).text) == (403, "Permission denied")
    assert requests.get(url, headers={"X-Nomad-Token": "x"}, timeout=5).text == "ACL token not found"
    assert requests.get(url, headers={"Authorization": "Bearer s"}, timeout=5).status_code == 200
    assert requests.get(nomad_double.address + "/v1/status/leader", timeout=5).json() == "127.0.0.1:4647"


def test_blocking_query_waits_for_a_change(nomad_double):
    import time

    response = register(nomad_double, parse(nomad_double).json())
    dep = requests.get(nomad_double.address + "/v1/job/mlflow/deployment", timeout=5)
    index = int(dep.headers["X-Nomad-Index"])
    started = time.monotonic()
    later = requests.get(nomad_double.address + "/v1/deployment/" + dep.json()["ID"],
                         params={"index": index, "wait": "5s"}, timeout=10)
    assert int(later.headers["X-Nomad-Index"]) > index and time.monotonic() - started < 5
    assert response.status_code == 200
