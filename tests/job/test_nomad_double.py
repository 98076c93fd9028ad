"""The Nomad double answers as ../shared/reference/nomad/ says (paths, codes, text/plain errors, headers),
and behaves as Nomad does over time (BEHAVIOUR.md): its client runs the job's task on the test Docker
engine, checks it, restarts it, and its deployment watcher fails, reschedules and reverts."""
from __future__ import annotations

import base64
import json
import time

import pytest
import requests

from mlflow_self_host.steps.job import jobfile
from mlflow_self_host.core.settings import PROJECT_ROOT
from tests.job.conftest import NATIVE_ARCH, PI_ARCH, job_settings
from tests.services import wait_for

HCL = (PROJECT_ROOT / "nomad" / "mlflow.nomad.hcl").read_text()
VARS = 'image = "reg.lan:5000/mlflow:v1.0"\n'


def variables(double, version="1.0", arch=None, **settings) -> str:
    """The var-file deploy sends for ``version``, with the cluster's image and fast timings (``arch``: the
    image's, default this machine's, as the stub images are built)."""
    settings = {"auth": "none", **settings}  # the job registered here by hand: no Variable with auth's secrets
    return jobfile.var_file(jobfile.variables(job_settings(double, **settings), version, arch))


def parse(double, variables=VARS):
    return requests.post(double.address + "/v1/jobs/parse",
                         json={"JobHCL": HCL, "Variables": variables, "Canonicalize": True}, timeout=5)


def job_of(double, version="1.0", **settings) -> dict:
    response = parse(double, variables(double, version, **settings))
    assert response.status_code == 200, response.text
    return response.json()


def get(double, path, **params):
    response = requests.get(double.address + path, params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_until(check, timeout=30.0, what="the double"):
    return wait_for(check, timeout, what, interval=0.1)


def latest_deployment(double, status=("successful", "failed", "cancelled"), version=None):
    """The job's latest deployment (of job ``version`` when given) once it has ended."""
    def ended():
        deps = get(double, "/v1/job/mlflow/deployments")  # newest first
        dep = next((d for d in deps if version is None or d["JobVersion"] == version), None)
        return dep if dep and dep["Status"] in status else None
    return wait_until(ended, what=f"a deployment {status} of job version {version}")


def why(double) -> str:
    """Each allocation's job version, status and task events: what an assertion on a deployment shows when it
    fails (a stub that should have served went unhealthy or died)."""
    lines = []
    for alloc in get(double, "/v1/job/mlflow/allocations"):
        lines.append(f"alloc {alloc['ID'][:8]} v{alloc['JobVersion']} {alloc['ClientStatus']} "
                     f"{alloc.get('DeploymentStatus')}")
        for name, state in (alloc.get("TaskStates") or {}).items():
            lines += [f"  {name}: {e['Type']}: {e.get('DisplayMessage', '')}" for e in state["Events"]]
    return "\n".join(lines)


def events(alloc) -> list[str]:
    return [e["Type"] for state in alloc["TaskStates"].values() for e in state["Events"]]


def register(double, job, **extra):
    return requests.post(double.address + "/v1/jobs", json={"Job": job, **extra}, timeout=5)


def test_parse_gives_the_json_job_with_the_variables(nomad_double):
    job = parse(nomad_double).json()
    assert (job["ID"], job["Type"], job["Namespace"], job["Region"]) == ("mlflow", "service", "default", "global")
    group = job["TaskGroups"][0]
    assert (group["Name"], group["Count"], group["Tasks"][0]["Name"]) == ("svc", 1, "mlflow_app")
    assert group["Update"]["AutoRevert"] is True and group["Update"]["HealthCheck"] == "checks"
    assert group["Networks"][0]["DynamicPorts"][0] == {"Label": "mlflow_http", "Value": 0, "To": 5000,
                                                       "HostNetwork": "", "IgnoreCollision": False}
    assert group["Services"][0]["Checks"][0]["Path"] == "/health"
    assert group["RestartPolicy"]["Attempts"] == 2 and group["RestartPolicy"]["Delay"] == 15 * 10**9
    assert (group["ReschedulePolicy"]["Attempts"], group["ReschedulePolicy"]["Unlimited"]) == (0, False)
    assert group["Tasks"][0]["User"] == "1000:1000"
    assert {m["Destination"] for m in group["Tasks"][0]["VolumeMounts"]} == {"/mnt/backend_store", "/mnt/artifacts"}
    assert group["Tasks"][0]["Config"]["image"] == "reg.lan:5000/mlflow:v1.0"


@pytest.mark.parametrize("image", ["reg.lan:5000/mlflow:latest", "reg.lan:5000/mlflow", "mlflow:v1"])
def test_the_job_file_refuses_an_unpinned_image(nomad_double, image):
    response = parse(nomad_double, f'image = "{image}"\n')
    assert response.status_code == 400 and response.headers["Content-Type"] == "text/plain"
    assert "Invalid value for varfile variable" in response.text and "never latest" in response.text


def test_parse_errors_are_400_text(nomad_double):
    response = parse(nomad_double, "")
    assert (response.status_code, response.headers["Content-Type"]) == (400, "text/plain")
    assert 'Unset variable "image"' in response.text
    undeclared = parse(nomad_double, VARS + 'colour = "red"\n')  # not strict: a warning, dropped (jobspec2)
    assert undeclared.status_code == 200 and undeclared.json()["ID"] == "mlflow"
    bad = requests.post(nomad_double.address + "/v1/jobs/parse",
                        json={"JobHCL": 'job "x" {\n  bogus {\n  }\n}\n'}, timeout=5)
    assert bad.status_code == 400 and bad.text.startswith("Failed to parse job: input.hcl:2,")
    assert 'Unsupported block type; Blocks of type "bogus" are not expected here.' in bad.text


def test_enforce_index_failures_are_500_with_nomads_text(nomad_double):
    job = job_of(nomad_double)
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
    register(nomad_double, job_of(nomad_double))
    read = requests.get(nomad_double.address + "/v1/job/mlflow", timeout=5)
    assert int(read.headers["X-Nomad-Index"]) >= read.json()["JobModifyIndex"]
    assert requests.get(nomad_double.address + "/v1/deployment/nope", timeout=5).text == "resource not found"


def test_no_update_block_no_deployment_and_the_latest_is_null(nomad_double):
    """A job submitted without any update strategy (the CLI's parse adds a job-level one to a service job:
    api/jobs.go Canonicalize; a JSON job sent as it is need not have one) gets no deployment."""
    job = job_of(nomad_double)
    job["Update"] = job["TaskGroups"][0]["Update"] = None
    register(nomad_double, job)
    alloc = wait_until(lambda: [a for a in get(nomad_double, "/v1/job/mlflow/allocations")
                                if a["ClientStatus"] == "running"], what="a running allocation")[0]
    latest = requests.get(nomad_double.address + "/v1/job/mlflow/deployment", timeout=5)
    assert (latest.status_code, latest.text) == (200, "null")
    assert alloc["DeploymentID"] == "" and alloc["DeploymentStatus"] is None


def test_logs_endpoint_validates_like_nomad_and_frames_base64(nomad_double):
    register(nomad_double, job_of(nomad_double))
    latest_deployment(nomad_double)
    alloc = get(nomad_double, "/v1/job/mlflow/allocations")[0]
    url = nomad_double.address + "/v1/client/fs/logs/" + alloc["ID"]
    assert requests.get(url, params={"type": "stderr"}, timeout=5).text == "must provide task name"
    assert requests.get(url, params={"task": "mlflow_app", "type": "x"}, timeout=5).text == \
        "must provide log type (stdout/stderr)"
    plain = requests.get(url, params={"task": "mlflow_app", "type": "stderr", "plain": "true"}, timeout=5)
    framed = requests.get(url, params={"task": "mlflow_app", "type": "stderr"}, timeout=5)
    assert plain.headers["Content-Type"] == "text/plain" and "Uvicorn running" in plain.text
    assert base64.b64decode(json.loads(framed.text)["Data"]).decode() == plain.text


def test_revert_checks_the_prior_version(nomad_double):
    register(nomad_double, job_of(nomad_double, "1.0"))
    latest_deployment(nomad_double)
    register(nomad_double, job_of(nomad_double, "1.2"))
    nomad_double.wait_idle()
    url = nomad_double.address + "/v1/job/mlflow/revert"
    wrong = requests.post(url, json={"JobID": "mlflow", "JobVersion": 0, "EnforcePriorVersion": 0}, timeout=5)
    assert (wrong.status_code, wrong.text) == (500, "Current job has version 1; enforcing version 0"), \
        why(nomad_double)
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

    response = register(nomad_double, job_of(nomad_double))
    wait_until(lambda: get(nomad_double, "/v1/job/mlflow/deployment"), what="a deployment")
    dep = requests.get(nomad_double.address + "/v1/job/mlflow/deployment", timeout=5)
    index = int(dep.headers["X-Nomad-Index"])
    started = time.monotonic()
    later = requests.get(nomad_double.address + "/v1/deployment/" + dep.json()["ID"],
                         params={"index": index, "wait": "5s"}, timeout=10)
    assert int(later.headers["X-Nomad-Index"]) > index and time.monotonic() - started < 5
    assert response.status_code == 200


# --- over time: what the client runs and how the deployment watcher decides ---------------------------
def running_alloc(double, version: int | None = None) -> dict:
    def found():
        allocs = [a for a in get(double, "/v1/job/mlflow/allocations")
                  if a["ClientStatus"] == "running" and a["DesiredStatus"] == "run"
                  and (version is None or a["JobVersion"] == version)]
        return allocs[0] if allocs else None
    return wait_until(found, what=f"a running allocation of job version {version}")


def test_the_task_runs_as_the_docker_driver_runs_it(nomad_double):
    cluster = nomad_double.cluster
    register(nomad_double, job_of(nomad_double, "1.0", memory=300))
    assert latest_deployment(nomad_double)["Status"] == "successful"
    alloc = running_alloc(nomad_double)
    container = nomad_double.container_of(alloc["ID"])
    config, host = container.attrs["Config"], container.attrs["HostConfig"]
    assert container.name == f"mlflow_app-{alloc['ID']}"
    assert config["Image"] == cluster.images.ref("1.0") and config["User"] == "1000:1000"
    assert "MLFLOW_BACKEND_STORE_URI=sqlite:////mnt/backend_store/mlflow.db" in config["Env"]
    assert host["Memory"] == 300 * 1024 * 1024 == host["MemorySwap"]
    binds = {b.split(":")[1]: b.split(":")[0] for b in host["Binds"]}
    assert binds == {"/mnt/backend_store": str(cluster.backend), "/mnt/artifacts": str(cluster.artifacts)}
    # the stub wrote into the host folder of client.hcl, as uid 1000
    assert "v1.0 uid=1000" in (cluster.backend / "stub-starts.log").read_text()
    # the group's service, with its tags, at the mapped port on the node's address
    (registration,) = get(nomad_double, "/v1/service/mlflow")
    assert registration["AllocID"] == alloc["ID"] and registration["Address"] == "127.0.0.1"
    assert "traefik.http.routers.mlflow.rule=Host(`mlflow.lan`)" in registration["Tags"]
    port = alloc["AllocatedResources"]["Shared"]["Ports"][0]
    assert (port["Label"], port["To"], port["Value"]) == ("mlflow_http", 5000, registration["Port"])
    assert requests.get(f"http://127.0.0.1:{registration['Port']}/version", timeout=5).text == "v1.0"
    assert get(nomad_double, "/v1/services") == [{"Namespace": "default", "Services": [
        {"ServiceName": "mlflow", "Tags": registration["Tags"]}]}]
    checks = get(nomad_double, f"/v1/client/allocation/{alloc['ID']}/checks")
    assert [c["Status"] for c in checks.values()] == ["success"]


def test_a_new_version_replaces_the_old_container_and_its_service(nomad_double):
    register(nomad_double, job_of(nomad_double, "1.0"))
    latest_deployment(nomad_double)
    old = running_alloc(nomad_double, 0)
    old_container = nomad_double.container_of(old["ID"])
    current = get(nomad_double, "/v1/job/mlflow")["JobModifyIndex"]
    register(nomad_double, job_of(nomad_double, "1.2"), EnforceIndex=True, JobModifyIndex=current)
    deployment = latest_deployment(nomad_double, version=1)
    assert (deployment["JobVersion"], deployment["Status"]) == (1, "successful"), why(nomad_double)
    new = running_alloc(nomad_double, 1)
    assert new["PreviousAllocation"] == old["ID"]
    stopped = get(nomad_double, f"/v1/allocation/{old['ID']}")
    assert (stopped["DesiredStatus"], stopped["ClientStatus"]) == ("stop", "complete")
    assert stopped["DesiredDescription"] == "alloc is being updated due to job update"
    assert events(stopped)[-2:] == ["Killing", "Killed"]
    with pytest.raises(Exception):
        old_container.reload()  # gone (the driver's gc)
    (registration,) = get(nomad_double, "/v1/service/mlflow")
    assert registration["AllocID"] == new["ID"]
    assert requests.get(f"http://127.0.0.1:{registration['Port']}/version", timeout=5).text == "v1.2"
    versions = get(nomad_double, "/v1/job/mlflow/versions")["Versions"]
    assert [(v["Version"], v["Stable"]) for v in versions] == [(1, True), (0, True)]


def test_a_crashing_task_is_restarted_by_its_policy_then_fails_and_nomad_reverts(nomad_double):
    cluster = nomad_double.cluster
    register(nomad_double, job_of(nomad_double, "1.0"))
    latest_deployment(nomad_double)
    cluster.publish("1.2", behaviour="exit", message="ImportError: cannot import name 'x'", exit_code=3)
    current = get(nomad_double, "/v1/job/mlflow")["JobModifyIndex"]
    started = time.monotonic()
    register(nomad_double, job_of(nomad_double, "1.2", restart_attempts=1, restart_delay="2s"),
             EnforceIndex=True, JobModifyIndex=current)
    failed = latest_deployment(nomad_double, status=("failed",), version=1)
    took = time.monotonic() - started
    assert failed["StatusDescription"] == "Failed due to unhealthy allocations - rolling back to job version 0"
    assert 2.0 <= took < 15, took  # one restart after 2s (+ up to 25% jitter), no reschedule
    (alloc,) = [a for a in get(nomad_double, "/v1/job/mlflow/allocations") if a["JobVersion"] == 1]
    assert alloc["ClientStatus"] == "failed" and alloc["DeploymentStatus"]["Healthy"] is False
    state = alloc["TaskStates"]["mlflow_app"]
    assert state["Restarts"] == 1 and state["Failed"] is True
    kinds = events(alloc)
    assert kinds.count("Terminated") == 2 and kinds.count("Started") == 2
    assert [e for e in state["Events"] if e["Type"] == "Terminated"][0]["DisplayMessage"] == "Exit Code: 3"
    assert [e for e in state["Events"] if e["Type"] == "Not Restarting"][0]["DisplayMessage"] == \
        'Exceeded allowed attempts 1 in interval 30m0s and mode is "fail"'
    stderr = requests.get(nomad_double.address + f"/v1/client/fs/logs/{alloc['ID']}",
                          params={"task": "mlflow_app", "type": "stderr", "plain": "true"}, timeout=5).text
    assert stderr.count("ImportError: cannot import name 'x'") == 2  # both runs' real output
    # the revert is a new version with the old specification, and the old image runs again
    revert = latest_deployment(nomad_double, version=2)
    assert revert["Status"] == "successful"
    (registration,) = get(nomad_double, "/v1/service/mlflow")
    assert requests.get(f"http://127.0.0.1:{registration['Port']}/version", timeout=5).text == "v1.0"
    versions = get(nomad_double, "/v1/job/mlflow/versions")["Versions"]
    assert [(v["Version"], v["Stable"]) for v in versions] == [(2, True), (1, False), (0, True)]


def test_a_task_that_never_passes_its_check_is_unhealthy_at_the_healthy_deadline(nomad_double):
    nomad_double.cluster.publish("1.0", behaviour="unhealthy")
    started = time.monotonic()
    register(nomad_double, job_of(nomad_double, "1.0", healthy_deadline="4s", progress_deadline="30s"))
    failed = latest_deployment(nomad_double, status=("failed",))
    assert 4.0 <= time.monotonic() - started < 12
    assert failed["StatusDescription"] == \
        "Failed due to unhealthy allocations - no stable job version to auto revert to"
    (alloc,) = get(nomad_double, "/v1/job/mlflow/allocations")
    assert alloc["ClientStatus"] == "running" and alloc["DeploymentStatus"]["Healthy"] is False
    checks = get(nomad_double, f"/v1/client/allocation/{alloc['ID']}/checks")
    assert [(c["Status"], c["StatusCode"]) for c in checks.values()] == [("failure", 503)]


def test_without_a_reschedule_block_nomad_reschedules_until_the_progress_deadline(nomad_double):
    """Nomad's default for service jobs (unlimited reschedules): the deployment fails only at its deadline."""
    nomad_double.cluster.publish("1.0", behaviour="exit", message="boom")
    job = job_of(nomad_double, "1.0", restart_attempts=0, healthy_deadline="3s", progress_deadline="6s")
    job["TaskGroups"][0]["ReschedulePolicy"] = {"Attempts": 0, "Interval": 0, "Delay": 1_000_000_000,
                                                "DelayFunction": "constant", "MaxDelay": 0, "Unlimited": True}
    started = time.monotonic()
    register(nomad_double, job)
    failed = latest_deployment(nomad_double, status=("failed",))
    assert failed["StatusDescription"].startswith("Failed due to progress deadline")
    assert time.monotonic() - started >= 6
    allocs = get(nomad_double, "/v1/job/mlflow/allocations")
    assert len(allocs) >= 3  # rescheduled again and again, each a new allocation after the 1s delay
    newest = max(allocs, key=lambda a: a["CreateIndex"])
    assert newest["PreviousAllocation"] and len(newest["RescheduleTracker"]["Events"]) == len(allocs) - 1
    first = min(allocs, key=lambda a: a["CreateIndex"])
    assert first["DesiredDescription"] == "alloc was rescheduled because it failed"
    assert events(first)[-2:] == ["Not Restarting", "Alloc Unhealthy"]  # the health hook says why
    assert [e for e in first["TaskStates"]["mlflow_app"]["Events"]
            if e["Type"] == "Not Restarting"][0]["DisplayMessage"] == "Policy allows no restarts"


def test_a_missing_host_volume_is_a_placement_failure_until_the_agent_restarts_with_it(nomad_double):
    cluster = nomad_double.cluster
    with_volumes = cluster.client_config.read_text()
    cluster.client_config.write_text(with_volumes.split("# MLFLOW_BEGIN")[0] + "}\n")
    nomad_double.restart_agent(0.1)
    job = job_of(nomad_double)
    plan = requests.post(nomad_double.address + "/v1/job/mlflow/plan", json={"Job": job}, timeout=5).json()
    assert plan["FailedTGAllocs"]["svc"]["ConstraintFiltered"] == {"missing compatible host volumes": 1}
    response = register(nomad_double, job).json()
    evaluation = wait_until(lambda: (lambda e: e if e["Status"] != "pending" else None)(
        get(nomad_double, f"/v1/evaluation/{response['EvalID']}")))
    assert evaluation["FailedTGAllocs"]["svc"]["ConstraintFiltered"] == {"missing compatible host volumes": 1}
    assert get(nomad_double, f"/v1/evaluation/{evaluation['BlockedEval']}")["Status"] == "blocked"
    assert get(nomad_double, "/v1/job/mlflow/allocations") == []
    node = get(nomad_double, f"/v1/node/{get(nomad_double, '/v1/nodes')[0]['ID']}")
    assert node["HostVolumes"] == {}
    # configure-host's fix: the block back in client.hcl and `systemctl restart nomad`
    cluster.client_config.write_text(with_volumes)
    down = requests.post(nomad_double.address + "/_double/agent/restart", json={"seconds": 1.0}, timeout=5)
    assert down.status_code == 200
    time.sleep(0.3)
    with pytest.raises(requests.ConnectionError):
        requests.get(nomad_double.address + "/v1/agent/health", timeout=2)

    def answers():
        try:
            return requests.get(nomad_double.address + "/v1/agent/health", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False
    wait_until(answers, what="the agent back after its restart")
    assert latest_deployment(nomad_double)["Status"] == "successful"  # the blocked evaluation placed it
    assert set(get(nomad_double, f"/v1/node/{node['ID']}")["HostVolumes"]) == {  # configure-host's block, whole
        "mlflow-backend-store", "mlflow-artifacts", "mlflow-backups", "mlflow-backups-copy"}


def test_an_image_the_registry_lacks_is_the_drivers_pull_error(nomad_double):
    cluster = nomad_double.cluster
    cluster.images.unpublish("1.0")
    register(nomad_double, job_of(nomad_double, "1.0", restart_attempts=0))
    latest_deployment(nomad_double, status=("failed",))
    (alloc,) = get(nomad_double, "/v1/job/mlflow/allocations")
    failure = [e for e in alloc["TaskStates"]["mlflow_app"]["Events"] if e["Type"] == "Driver Failure"][0]
    assert failure["DriverError"].startswith(f"Failed to pull `{cluster.images.ref('1.0')}`: ")
    assert "manifest unknown" in failure["DriverError"]


def test_memory_the_node_does_not_have_is_a_placement_failure(nomad_double):
    plan = requests.post(nomad_double.address + "/v1/job/mlflow/plan",
                         json={"Job": job_of(nomad_double, memory=100_000)}, timeout=5).json()
    assert plan["FailedTGAllocs"]["svc"]["DimensionExhausted"] == {"memory": 1}


def test_a_template_in_a_variable_value_is_kept_literally(nomad_double):
    """deploy escapes ${ and %{ in the values it sends; Nomad would read them as templates. (A domain setting
    cannot hold them since settings check it as a host name: the value is put in the var-file's values.)"""
    values = jobfile.variables(job_settings(nomad_double), "1.0", None)
    values["domain"] = "odd${name}%{x}.lan"
    response = parse(nomad_double, jobfile.var_file(values))
    assert response.status_code == 200, response.text
    assert response.json()["TaskGroups"][0]["Tasks"][0]["Env"]["MLFLOW_DOMAIN"] == "odd${name}%{x}.lan"


def test_the_evaluation_read_checks_the_requests_namespace(nomad_double):
    nomad_double.namespaces.add("ml")
    job = job_of(nomad_double)
    job["Namespace"] = "ml"
    nomad_double.acl_tokens = {"ml-only": {"ml": {"submit-job", "read-job", "parse-job"}}}
    registered = requests.post(nomad_double.address + "/v1/jobs", json={"Job": job}, params={"namespace": "ml"},
                               headers={"X-Nomad-Token": "ml-only"}, timeout=5).json()
    url = nomad_double.address + f"/v1/evaluation/{registered['EvalID']}"
    plain = requests.get(url, headers={"X-Nomad-Token": "ml-only"}, timeout=5)  # what python-nomad sends
    assert (plain.status_code, plain.text) == (403, "Permission denied")
    scoped = requests.get(url, params={"namespace": "ml"}, headers={"X-Nomad-Token": "ml-only"}, timeout=5)
    assert scoped.status_code == 200 and scoped.json()["Namespace"] == "ml"


def test_an_evaluation_is_pending_then_complete_with_its_deployment(nomad_double):
    nomad_double.eval_delay = 0.5
    registered = register(nomad_double, job_of(nomad_double)).json()
    first = get(nomad_double, f"/v1/evaluation/{registered['EvalID']}")
    assert (first["Status"], first["DeploymentID"]) == ("pending", "")
    done = wait_until(lambda: (lambda e: e if e["Status"] == "complete" else None)(
        get(nomad_double, f"/v1/evaluation/{registered['EvalID']}")))
    assert done["DeploymentID"] == get(nomad_double, "/v1/job/mlflow/deployment")["ID"]


def test_a_stop_keeps_the_stable_flag_and_the_stable_endpoint_clears_it(nomad_double):
    register(nomad_double, job_of(nomad_double))
    latest_deployment(nomad_double)
    stopped = requests.delete(nomad_double.address + "/v1/job/mlflow", timeout=5)
    assert stopped.status_code == 200
    versions = get(nomad_double, "/v1/job/mlflow/versions")["Versions"]
    assert [(v["Version"], v["Stop"], v["Stable"]) for v in versions] == [(1, True, True), (0, False, True)]
    wait_until(lambda: not nomad_double.running_allocs(), what="the allocation stopped")
    marked = requests.post(nomad_double.address + "/v1/job/mlflow/stable",
                           json={"JobID": "mlflow", "JobVersion": 1, "Stable": False}, timeout=5)
    assert marked.status_code == 200
    assert [v["Stable"] for v in get(nomad_double, "/v1/job/mlflow/versions")["Versions"]] == [False, True]


def test_no_revert_to_a_stable_version_with_the_same_specification(nomad_double):
    """v0 stable; v1 fails and Nomad reverts (v2 = v0's spec); v2 fails too: its stable twin is not a target."""
    cluster = nomad_double.cluster
    register(nomad_double, job_of(nomad_double, "0.99"))
    latest_deployment(nomad_double, version=0)
    cluster.publish("0.99", behaviour="exit", message="now broken too")  # the registry's tag was overwritten
    cluster.publish("0.100", behaviour="exit", message="broken")
    current = get(nomad_double, "/v1/job/mlflow")["JobModifyIndex"]
    register(nomad_double, job_of(nomad_double, "0.100"), EnforceIndex=True, JobModifyIndex=current)
    assert latest_deployment(nomad_double, version=1)["StatusDescription"].endswith("rolling back to job version 0")
    second = latest_deployment(nomad_double, version=2)
    # the revert's copy kept version 0's Stable flag, so it is the newest stable version itself
    assert second["StatusDescription"] == ("Failed due to unhealthy allocations - not rolling back to stable job "
                                           "version 2 as current job has same specification")
    assert len(get(nomad_double, "/v1/job/mlflow/versions")["Versions"]) == 3


# --- nodes and their architecture (client/fingerprint/arch.go, scheduler/feasible) ---------------------
def test_cpu_arch_is_in_the_node_read_not_in_the_node_list(nomad_double):
    pi = nomad_double.add_node("pi4", cpu_arch="arm64")
    stubs = get(nomad_double, "/v1/nodes")
    assert [s["Name"] for s in stubs] == ["client-1", "pi4"]
    assert all("Attributes" not in s for s in stubs)  # structs.go Node.Stub
    assert get(nomad_double, "/v1/nodes", os="true")[1]["Attributes"] == {"os.name": "debian"}
    attributes = get(nomad_double, f"/v1/node/{pi.id}")["Attributes"]
    assert (attributes["cpu.arch"], attributes["kernel.arch"]) == ("arm64", "aarch64")
    import platform as host

    own = get(nomad_double, f"/v1/node/{nomad_double.node_id}")["Attributes"]
    assert own["kernel.arch"] == host.machine()


def test_the_job_file_constrains_the_task_to_the_images_architecture(nomad_double):
    job = job_of(nomad_double, arch=None)
    task = job["TaskGroups"][0]["Tasks"][0]
    # ${attr.cpu.arch} stays literal for the scheduler (jobspec2's UndefinedVariable)
    assert task["Constraints"] == [{"LTarget": "${attr.cpu.arch}", "RTarget": NATIVE_ARCH,
                                    "Operand": "set_contains_any"}]
    response = parse(nomad_double, variables(nomad_double, arch="amd64, arm64"))
    assert response.status_code == 400 and "Go architecture names" in response.text


def test_a_node_of_another_architecture_is_filtered_by_the_constraint(pi_double):
    """The only node is an arm64 Raspberry Pi: an amd64 job is not placed; the evaluation says why."""
    registered = register(pi_double, job_of(pi_double, arch=NATIVE_ARCH)).json()
    ev = wait_until(lambda: (lambda e: e if e["Status"] == "complete" else None)(
        get(pi_double, f"/v1/evaluation/{registered['EvalID']}")))
    metric = ev["FailedTGAllocs"]["svc"]
    assert metric["ConstraintFiltered"] == {f"${{attr.cpu.arch}} set_contains_any {NATIVE_ARCH}": 1}
    assert (metric["NodesEvaluated"], metric["NodesFiltered"]) == (1, 1)
    assert ev["BlockedEval"] and not get(pi_double, "/v1/job/mlflow/allocations")


def test_an_image_of_another_architecture_dies_with_exec_format_error(nomad_double):
    """Without the constraint the scheduler may pick the Pi (here the fuller node, ScoreFitBinPack): the
    Pi's kernel cannot run the amd64 stub, whose container exits 1 at once, as runc reports it."""
    cluster = nomad_double.cluster
    nomad_double.add_node("pi4", cpu_arch=PI_ARCH, client_config=cluster.client_config, memory_mb=2048)
    job = job_of(nomad_double, "1.0")
    job["TaskGroups"][0]["Tasks"][0]["Constraints"] = None  # a job file without the constraint
    register(nomad_double, job)
    dep = latest_deployment(nomad_double)
    assert dep["Status"] == "failed"
    (alloc,) = get(nomad_double, "/v1/job/mlflow/allocations")
    assert alloc["NodeName"] == "pi4"
    assert events(alloc)[:5] == ["Received", "Task Setup", "Driver", "Started", "Terminated"]
    terminated = [e for s in alloc["TaskStates"].values() for e in s["Events"] if e["Type"] == "Terminated"]
    assert terminated[0]["ExitCode"] == 1
    stderr = requests.get(nomad_double.address + "/v1/client/fs/logs/" + alloc["ID"],
                          params={"task": "mlflow_app", "type": "stderr", "plain": "true"}, timeout=5).text
    # the stub's ENTRYPOINT is ["python3", ...]: runc names the program it found in PATH
    assert stderr.splitlines()[0] == "exec /usr/bin/python3: exec format error"


def test_with_the_constraint_the_job_lands_on_the_node_of_its_architecture(nomad_double):
    cluster = nomad_double.cluster
    nomad_double.add_node("pi4", cpu_arch=PI_ARCH, client_config=cluster.client_config, memory_mb=2048)
    register(nomad_double, job_of(nomad_double, "1.0"))  # the arch of this machine, as the stub's
    assert latest_deployment(nomad_double)["Status"] == "successful"
    assert running_alloc(nomad_double)["NodeName"] == "client-1"
