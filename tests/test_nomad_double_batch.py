"""The Nomad double runs batch jobs as Nomad does (../shared/reference/nomad/, api/tasks.go's batch defaults,
scheduler/reconciler/filters.go): through its HTTP API with python-nomad as our code calls it, a task of a stub
image runs to its end on the test Docker engine, exit 0 is ``complete`` and the job ``dead``, exit 1 with no
restarts is ``failed``; a finished allocation is not replaced, a changed job runs again, the logs read back."""
from __future__ import annotations

import json
import time

import pytest
import requests

from mlflow_self_host.adapters import nomad_api
from tests.job.conftest import job_settings
from tests.services import wait_for

SECOND = 1_000_000_000


def client(double):
    return nomad_api.client(job_settings(double.address))


def batch_hcl(image: str, name: str = "migrate", body: str = "", policies: str = "", meta: str = "1",
              update: str = "") -> str:
    """A batch job of one task; ``body``: the docker config's extra lines (entrypoint...)."""
    return f'''
job "{name}" {{
  type = "batch"
  meta {{ run = "{meta}" }}
  {update}
  group "migrate" {{
    {policies}
    task "migrate" {{
      driver = "docker"
      config {{
        image = "{image}"
        {body}
      }}
      resources {{ memory = 64 }}
    }}
  }}
}}
'''


def script(code: str) -> str:
    """A docker config whose entrypoint runs ``code`` with the stub image's python3."""
    return f"entrypoint = [\"python3\", \"-c\", {json.dumps(code)}]"


NO_RETRY = """restart { attempts = 0 }
    reschedule {
      attempts  = 0
      unlimited = false
    }"""


def register(n, hcl: str) -> dict:
    job = n.jobs.parse(hcl, canonicalize=True)
    return n.job.register_job(job["ID"], {"Job": job})


def finished(n, job_id: str, count: int = 1, timeout: float = 60.0) -> list[dict]:
    """The job's allocations once ``count`` of them are terminal, oldest first."""
    def done():
        allocs = sorted(n.job.get_allocations(job_id), key=lambda a: a["CreateIndex"])
        ended = [a for a in allocs if a["ClientStatus"] in ("complete", "failed")]
        return allocs if len(ended) >= count else None
    return wait_for(done, timeout, f"{count} finished allocation(s) of {job_id}", interval=0.1)


def logs(n, alloc_id: str, kind: str, **params) -> str:
    response = n.client.stream_logs.request(alloc_id, params={"task": "migrate", "type": kind, "plain": True,
                                                               **params}, method="get")
    return response.content.decode()


def event(alloc: dict, kind: str) -> dict | None:
    return next((e for e in alloc["TaskStates"]["migrate"]["Events"] if e["Type"] == kind), None)


def test_a_batch_job_runs_to_completion_is_not_replaced_and_runs_again_when_changed(nomad_cluster):
    double, n = nomad_cluster.nomad, client(nomad_cluster.nomad)
    image = nomad_cluster.publish("1.0")  # the serve stub: its python3 runs the task's own entrypoint
    hcl = batch_hcl(image, body=script("import sys, time; print('migrating'); sys.stderr.write('to head\\n'); "
                                       "time.sleep(2); print('done')"))
    parsed = n.jobs.parse(hcl, canonicalize=True)
    group = parsed["TaskGroups"][0]
    assert parsed["Type"] == "batch" and parsed["Update"] is None and group["Update"] is None
    assert {k: group["RestartPolicy"][k] for k in ("Attempts", "Delay", "Interval", "Mode")} == \
        {"Attempts": 3, "Delay": 15 * SECOND, "Interval": 24 * 3600 * SECOND, "Mode": "fail"}
    assert {k: group["ReschedulePolicy"][k] for k in ("Attempts", "Interval", "Delay", "DelayFunction", "Unlimited")} \
        == {"Attempts": 1, "Interval": 24 * 3600 * SECOND, "Delay": 5 * SECOND, "DelayFunction": "constant",
            "Unlimited": False}

    created = n.job.register_job("migrate", {"Job": parsed})
    assert created["EvalID"] and n.evaluation.get_evaluation(created["EvalID"])["Type"] == "batch"
    wait_for(lambda: n.job.get_job("migrate")["Status"] == "running", 30, "the job running", interval=0.05)
    [alloc] = finished(n, "migrate")
    assert (alloc["ClientStatus"], alloc["DeploymentID"], n.job.get_job("migrate")["Status"]) == \
        ("complete", "", "dead")
    assert event(alloc, "Terminated")["ExitCode"] == 0 and event(alloc, "Terminated")["DisplayMessage"] == \
        "Exit Code: 0"
    assert event(alloc, "Not Restarting") is None and alloc["TaskStates"]["migrate"]["Failed"] is False
    assert n.job.get_deployments("migrate") == []
    assert logs(n, alloc["ID"], "stdout") == "migrating\ndone\n"
    assert logs(n, alloc["ID"], "stderr") == "to head\n"
    assert logs(n, alloc["ID"], "stdout", follow=True, origin="start") == "migrating\ndone\n"  # ends: task gone
    summary = n.job.get_summary("migrate")
    assert summary["Summary"]["migrate"]["Complete"] == 1 and summary["Children"] == \
        {"Pending": 0, "Running": 0, "Dead": 0}

    again = register(n, hcl)  # the same job: an evaluation, no new allocation (the complete one counts)
    double.wait_idle()
    assert again["EvalID"] and len(n.job.get_allocations("migrate")) == 1
    assert n.job.get_job("migrate")["Status"] == "dead"

    register(n, hcl.replace('run = "1"', 'run = "2"'))  # changed: it runs again
    allocs = finished(n, "migrate", count=2)
    assert [a["ClientStatus"] for a in allocs] == ["complete", "complete"]
    assert [a["JobVersion"] for a in allocs] == [0, 1]
    assert n.job.get_summary("migrate")["Summary"]["migrate"]["Complete"] == 2

    n.job.deregister_job("migrate", purge=True)
    with pytest.raises(Exception) as gone:
        n.job.get_job("migrate")
    assert nomad_api.status_and_text(gone.value) == (404, "job not found")


def test_a_failing_batch_task_without_restarts_fails_and_is_not_rescheduled(nomad_cluster):
    double, n = nomad_cluster.nomad, client(nomad_cluster.nomad)
    image = nomad_cluster.publish("1.0-exit1", behaviour="exit", message="migration failed", exit_code=1)
    register(n, batch_hcl(image, policies=NO_RETRY))
    [alloc] = finished(n, "migrate")
    assert alloc["ClientStatus"] == "failed" and alloc["TaskStates"]["migrate"]["Failed"] is True
    assert event(alloc, "Terminated")["ExitCode"] == 1
    assert event(alloc, "Not Restarting")["DisplayMessage"] == "Policy allows no restarts"
    assert logs(n, alloc["ID"], "stderr") == "migration failed\n"
    time.sleep(1.5)  # nothing comes after it: no restart, no reschedule, no replacement
    double.wait_idle()
    assert [a["ID"] for a in n.job.get_allocations("migrate")] == [alloc["ID"]]
    assert n.job.get_job("migrate")["Status"] == "dead"
    assert n.job.get_summary("migrate")["Summary"]["migrate"]["Failed"] == 1


def test_a_failed_batch_task_is_rescheduled_once_by_default(nomad_cluster):
    n = client(nomad_cluster.nomad)
    image = nomad_cluster.publish("1.0-exit1", behaviour="exit", message="migration failed", exit_code=1)
    register(n, batch_hcl(image, policies="restart { attempts = 0 }"))  # the default reschedule: 1 in 24h after 5s
    allocs = finished(n, "migrate", count=2, timeout=40)
    first, second = allocs
    assert (first["ClientStatus"], second["ClientStatus"]) == ("failed", "failed")
    assert first["NextAllocation"] == second["ID"] and second["PreviousAllocation"] == first["ID"]
    assert second["RescheduleTracker"]["Events"][0]["Delay"] == 5 * SECOND
    time.sleep(6)  # attempts 1: no third
    assert len(n.job.get_allocations("migrate")) == 2 and n.job.get_job("migrate")["Status"] == "dead"


@pytest.fixture
def no_docker_double():
    """A double whose node has no docker driver: jobs register and evaluate, nothing runs."""
    from tests.doubles.nomad import NomadDouble

    double = NomadDouble()
    yield double
    double.stop()


def test_batch_job_registration_rules(no_docker_double):
    double = no_docker_double
    url = double.address
    hcl = batch_hcl("reg.lan:5000/mlflow:v1.0")
    json_job = {"ID": "raw", "Name": "raw", "Type": "batch", "TaskGroups": [
        {"Name": "g", "Tasks": [{"Name": "t", "Driver": "docker", "Config": {"image": "x:1"}}]}]}
    assert requests.post(url + "/v1/jobs", json={"Job": json_job}, timeout=5).status_code == 200
    group = requests.get(url + "/v1/job/raw", timeout=5).json()["TaskGroups"][0]  # JSON register: batch defaults
    assert (group["RestartPolicy"]["Attempts"], group["ReschedulePolicy"]["Attempts"],
            group["ReschedulePolicy"]["Unlimited"], group.get("Migrate")) == (3, 1, False, None)

    with_update = requests.post(url + "/v1/jobs/parse", json={"JobHCL": batch_hcl(
        "x:1", update="update { max_parallel = 1 }"), "Canonicalize": True}, timeout=5).json()
    refused = requests.post(url + "/v1/jobs", json={"Job": with_update}, timeout=5)
    assert refused.status_code == 500 and 'Job type "batch" does not allow update block' in refused.text

    service = requests.post(url + "/v1/jobs/parse", json={"JobHCL": hcl.replace('"batch"', '"service"'),
                                                          "Canonicalize": True}, timeout=5).json()
    service["ID"] = service["Name"] = "raw"
    changed = requests.post(url + "/v1/jobs", json={"Job": service}, timeout=5)
    assert (changed.status_code, changed.text) == (500, 'cannot update job from type "batch" to "service"')


# --- periodic jobs --------------------------------------------------------------------------------------
def periodic_hcl(image: str, cron: str, overlap: bool, body: str = "", name: str = "nightly") -> str:
    return batch_hcl(image, name=name, body=body, policies=NO_RETRY).replace(
        'type = "batch"', f'''type = "batch"
  periodic {{
    crons            = ["{cron}"]
    prohibit_overlap = {str(overlap).lower()}
    time_zone        = "Europe/Paris"
  }}''', 1)


def children(n, parent: str) -> list[dict]:
    return sorted((j for j in n.jobs.get_jobs(prefix=f"{parent}/periodic-") if j["ParentID"] == parent),
                  key=lambda j: j["ID"])


def test_a_periodic_job_is_forced_and_its_child_runs_like_a_batch_job(nomad_cluster):
    double, n = nomad_cluster.nomad, client(nomad_cluster.nomad)
    image = nomad_cluster.publish("1.0")
    hcl = periodic_hcl(image, "0 3 * * *", overlap=True, body=script("print('backed up')"))
    parsed = n.jobs.parse(hcl, canonicalize=True)
    assert {k: parsed["Periodic"][k] for k in ("Enabled", "Specs", "SpecType", "ProhibitOverlap", "TimeZone")} == \
        {"Enabled": True, "Specs": ["0 3 * * *"], "SpecType": "cron", "ProhibitOverlap": True,
         "TimeZone": "Europe/Paris"}
    plan = n.job.plan_job("nightly", {"Job": parsed})
    assert plan["NextPeriodicLaunch"][10:] in ("T03:00:00+01:00", "T03:00:00+02:00")  # in the block's zone
    created = n.job.register_job("nightly", {"Job": parsed})
    assert (created["EvalID"], created["EvalCreateIndex"]) == ("", 0)  # a periodic parent gets no evaluation
    double.wait_idle()
    assert n.job.get_job("nightly")["Status"] == "running" and n.job.get_allocations("nightly") == []
    assert children(n, "nightly") == []

    before = int(time.time())
    forced = n.job.periodic_job("nightly")
    assert set(forced) == {"EvalID", "EvalCreateIndex", "Index"} and forced["Index"] == forced["EvalCreateIndex"]
    [child] = children(n, "nightly")
    launched_at = int(child["ID"].rsplit("-", 1)[1])
    assert child["ID"] == f"nightly/periodic-{launched_at}" and before <= launched_at <= time.time()
    assert (child["Type"], child["Periodic"], child["ParentID"]) == ("batch", False, "nightly")
    evaluation = n.evaluation.get_evaluation(forced["EvalID"])
    assert (evaluation["JobID"], evaluation["TriggeredBy"], evaluation["Type"]) == (child["ID"], "periodic-job", "batch")
    [alloc] = finished(n, child["ID"])  # a slash in the ID: the endpoint is found by its suffix, as Nomad does
    assert alloc["ClientStatus"] == "complete" and logs(n, alloc["ID"], "stdout") == "backed up\n"
    assert n.job.get_job(child["ID"])["Status"] == "dead" and n.job.get_job(child["ID"])["Periodic"] is None
    assert n.job.get_summary("nightly")["Children"] == {"Pending": 0, "Running": 0, "Dead": 1}
    assert n.job.get_job("nightly")["Status"] == "running" and n.job.get_allocations("nightly") == []

    with pytest.raises(Exception) as refused:
        n.job.periodic_job(child["ID"])
    assert nomad_api.status_and_text(refused.value) == (500, "can't force launch non-periodic job")


def test_a_launch_reads_its_parents_variable_as_nomad_gives_its_identity_the_parents_id(nomad_cluster):
    n = client(nomad_cluster.nomad)
    image = nomad_cluster.publish("1.0")
    template = '''template {
        data        = "{{ with nomadVar \\"nomad/jobs/nightly\\" }}SECRET={{ .secret }}{{ end }}\\n"
        destination = "secrets/secret.env"
        env         = true
      }
      resources { memory = 64 }'''
    hcl = periodic_hcl(image, "0 3 * * *", overlap=True, body=script("import os; print(os.environ['SECRET'])"))
    n.variable.create_variable("nomad/jobs/nightly", {"Items": {"secret": "from-the-parent"}})
    register(n, hcl.replace("resources { memory = 64 }", template))
    n.job.periodic_job("nightly")
    [child] = children(n, "nightly")
    [alloc] = finished(n, child["ID"])  # nomad/jobs/nightly/periodic-<epoch> is no Variable of it: the parent's is
    assert alloc["ClientStatus"] == "complete", [e.get("DisplayMessage") for e in alloc["TaskStates"]["migrate"]["Events"]]
    assert logs(n, alloc["ID"], "stdout") == "from-the-parent\n"


def test_prohibit_overlap_skips_a_launch_while_a_child_runs_but_a_force_launches(nomad_cluster):
    double, n = nomad_cluster.nomad, client(nomad_cluster.nomad)
    image = nomad_cluster.publish("1.0")
    every_second = "* * * * * * *"  # cronexpr's seven fields: seconds first
    long_task = script("import time; time.sleep(60)")
    register(n, periodic_hcl(image, every_second, overlap=True, body=long_task))
    first = wait_for(lambda: children(n, "nightly") or None, 20, "the first launch", interval=0.1)
    wait_for(lambda: n.job.get_job(first[0]["ID"])["Status"] == "running", 30, "the child running", interval=0.1)
    time.sleep(3)  # three launch times pass while the child runs: each skipped
    assert [c["ID"] for c in children(n, "nightly")] == [first[0]["ID"]]
    assert n.job.get_summary("nightly")["Children"]["Running"] == 1

    n.job.periodic_job("nightly")  # a force launches even so (periodic.go ForceEval, python-nomad says so too)
    assert len(children(n, "nightly")) == 2

    register(n, periodic_hcl(image, every_second, overlap=False, body=long_task, name="hourly"))
    wait_for(lambda: len(children(n, "hourly")) >= 3, 20, "three overlapping launches", interval=0.1)
    n.job.deregister_job("hourly")  # a stopped parent launches no more
    time.sleep(1.2)
    count = len(children(n, "hourly"))
    time.sleep(2)
    assert len(children(n, "hourly")) == count and n.job.get_job("hourly")["Status"] == "dead"
    with pytest.raises(Exception) as refused:
        n.job.periodic_job("hourly")
    assert nomad_api.status_and_text(refused.value) == (
        500, 'force launch for job "hourly" failed: can\'t force run non-tracked job "hourly" (default)')


def test_periodic_registration_rules(no_docker_double):
    url = no_docker_double.address
    service = requests.post(url + "/v1/jobs/parse", json={"JobHCL": periodic_hcl("x:1", "0 3 * * *", False).replace(
        '"batch"', '"service"'), "Canonicalize": True}, timeout=5).json()
    refused = requests.post(url + "/v1/jobs", json={"Job": service}, timeout=5)
    assert refused.status_code == 500 and 'Periodic can only be used with "batch" or "sysbatch" scheduler' in refused.text
    bad = requests.post(url + "/v1/jobs/parse", json={"JobHCL": periodic_hcl("x:1", "61 * * * *", False),
                                                      "Canonicalize": True}, timeout=5).json()
    refused = requests.post(url + "/v1/jobs", json={"Job": bad}, timeout=5)
    assert refused.status_code == 500 and 'Invalid cron spec "61 * * * *"' in refused.text
    missing = requests.post(url + "/v1/job/nothing/periodic/force", timeout=5)
    assert (missing.status_code, missing.text) == (500, "job not found")
