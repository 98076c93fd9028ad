"""deploy, rollback and logs through `inv`, against the Nomad double whose client runs the stub images on the
test engine (FAST timings: a deployment takes seconds): every exit code by its number, and what `--follow`
shows while it runs."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests

from mlflow_self_host.steps.job import jobfile
from tests.services import ADMIN_PASSWORD  # auth: basic by default
from tests.flags.conftest import errors, inv, make_project, set_version, without_host_volumes
from tests.services.mlflow_image import clean_env

# no SSH host in these tests: no host step, and no backup before a version change (test_data_flags has both)
DEPLOY = ("deploy", "--skip-host", "--skip-build", "--no-backup")


def env_for(cluster, **settings) -> dict:
    env = clean_env()
    env.update(cluster.env(**settings))
    return env


def image_of(double) -> str:
    return jobfile.image_of(double.job())


def test_deploy_exits_2_when_the_registry_lacks_the_version(nomad_double, tmp_path):
    project = make_project(tmp_path / "project", version="7.7.7", docker=None)
    done = inv(*DEPLOY, cwd=project, env=env_for(nomad_double.cluster), expect=2)
    ref = nomad_double.cluster.images.ref("7.7.7")
    assert errors(done) == [f"error: the registry has no {ref}: refusing to deploy an image Nomad cannot pull"]
    assert nomad_double.registrations() == [] and nomad_double.job() is None


def test_deploy_exits_1_when_the_job_changes_between_plan_and_register(nomad_double, tmp_path):
    cluster = nomad_double.cluster
    project = make_project(tmp_path / "project", docker=None)
    env = env_for(cluster)
    inv(*DEPLOY, cwd=project, env=env)
    theirs = nomad_double.job()
    theirs["TaskGroups"][0]["Tasks"][0]["Config"]["image"] = cluster.images.ref("1.2")
    nomad_double.after_plan = lambda: nomad_double.register_out_of_band(theirs)  # someone's `nomad job run`

    set_version(project, "1.0")
    done = inv(*DEPLOY, cwd=project, env=env, expect=1)
    assert "changed in Nomad after the plan" in done.stderr and "nothing was registered" in done.stderr
    assert image_of(nomad_double) == cluster.images.ref("1.2")  # theirs stands, not overwritten
    assert len(nomad_double.versions()) == 2  # ours, then theirs: our second register was refused
    assert nomad_double.registrations()[-1][1]["EnforceIndex"] is True


def test_failed_and_not_reverted_is_exit_11_for_deploy_and_rollback_and_rollback_refusals_are_exit_2(
        nomad_double, tmp_path):
    """No version has ever been healthy, so Nomad has no stable version to go back to: each failed deployment
    ends there (exit 11) and registers nothing more. rollback's refusals change nothing (exit 2)."""
    cluster = nomad_double.cluster
    cluster.publish("0.99", behaviour="exit", message="broken-0.99: no such table: experiments")
    cluster.publish("0.100", behaviour="exit", message="broken-0.100: no such table: experiments")
    project = make_project(tmp_path / "project", docker=None)
    env = env_for(cluster)

    first = inv(*DEPLOY, cwd=project, env=env, expect=11)
    assert "no stable job version to auto revert to" in first.stderr
    assert "broken-0.99: no such table: experiments" in first.stderr  # the task's stderr, shown
    assert [(v["Version"], v["Stable"]) for v in nomad_double.versions()] == [(0, False)]

    set_version(project, "0.100")
    inv(*DEPLOY, cwd=project, env=env, expect=11)
    assert [(v["Version"], v["Stable"]) for v in nomad_double.versions()] == [(0, False), (1, False)]

    none_stable = inv("rollback", cwd=project, env=env, expect=2)
    assert errors(none_stable) == ["error: job mlflow has no stable version before version 1"]
    current = inv("rollback", "--to", "1", cwd=project, env=env, expect=2)
    assert errors(current) == ["error: job version 1 is the current version: nothing to roll back"]
    word = inv("rollback", "--to", "one", cwd=project, env=env, expect=2)
    assert errors(word) == ["error: --to 'one' is not a job version number"]
    assert len(nomad_double.versions()) == 2  # the refusals registered nothing

    back = inv("rollback", "--to", "0", cwd=project, env=env, expect=11)
    assert "no stable job version to auto revert to" in back.stderr
    assert "broken-0.99: no such table: experiments" in back.stderr
    versions = nomad_double.versions()
    assert [v["Version"] for v in versions] == [0, 1, 2]  # the revert, and no revert of the revert
    assert jobfile.image_of(versions[-1]) == cluster.images.ref("0.99") and not versions[-1]["Stable"]
    assert nomad_double.running_allocs() == []


def test_rollback_exits_10_when_the_version_cannot_be_placed(nomad_double, tmp_path):
    cluster = nomad_double.cluster
    project = make_project(tmp_path / "project", docker=None)
    env = env_for(cluster)
    inv(*DEPLOY, cwd=project, env=env)
    set_version(project, "0.100")
    inv(*DEPLOY, cwd=project, env=env)
    (running,) = nomad_double.running_allocs()
    without_host_volumes(cluster)

    done = inv("rollback", cwd=project, env=env, expect=10)
    assert "Nomad cannot place the job in datacenter DC0" in done.stderr
    assert "node client-1 lacks host volumes mlflow-artifacts, mlflow-backend-store" in done.stderr
    assert "inv configure-host" in done.stderr
    assert [a["ID"] for a in nomad_double.running_allocs()] == [running["ID"]]  # v0.100 still serves


def test_logs_follow_streams_new_lines_until_the_job_stops(nomad_double, tmp_path):
    cluster = nomad_double.cluster
    project = make_project(tmp_path / "project", docker=None)
    env = env_for(cluster)
    inv(*DEPLOY, cwd=project, env=env)
    (registration,) = requests.get(nomad_double.address + "/v1/service/mlflow", timeout=5).json()
    marker = f"/api/2.0/mlflow/runs/get-{uuid.uuid4().hex[:8]}"

    proc = subprocess.Popen([sys.executable, "-m", "invoke", "logs", "--follow", "--stderr", "--lines", "1"],
                            cwd=project, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while not any(marker in line for line in lines):  # a request now: its line arrives while following
            assert proc.poll() is None, f"inv logs --follow ended early: {proc.stderr.read()}"
            assert time.monotonic() < deadline, f"no streamed line with {marker}: {lines}"
            requests.get(f"http://127.0.0.1:{registration['Port']}{marker}", timeout=5,
                         auth=("admin", ADMIN_PASSWORD))  # auth: basic, the default
            time.sleep(0.5)
        assert proc.poll() is None  # still following
        requests.delete(nomad_double.address + "/v1/job/mlflow", timeout=5)  # `nomad job stop`: the stream ends
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    reader.join(5)
    assert "Traceback" not in proc.stderr.read()
    assert any(f'"GET {marker} HTTP/1.1" 404' in line for line in lines), lines


# --- what Nomad's own job parser refuses (the double's engine: HashiCorp's HCL with Nomad's function table) ---
IMAGE_CHECK = 'regex_replace(var.image, "^[^:@]+(:[0-9]+)?/.+:v[0-9]+([.][0-9]+)*$", "") == ""'
REFUSED_EDITS = {
    # the job file as it was until issue 26: Nomad has no regex(), so can() is false and the validation refuses
    "can_regex": ((f"var.image != \"\" && {IMAGE_CHECK}", 'can(regex("^[^:@]+(:[0-9]+)?/.+:v[0-9]+([.][0-9]+)*$", var.image))'),
                  "Invalid value for varfile variable; The image must carry a pinned version tag"),
    "regex": (('count = var.allocations', 'count = length(regex("[0-9]+", "a1")) > 0 ? var.allocations : 1'),
              'Call to unknown function; There is no function named "regex".'),
    "null_duration": (('var.store == "postgres" ? var.shutdown_delay : "0s"', 'var.store == "postgres" ? var.shutdown_delay : null'),
                      "Unsuitable value; Unsuitable duration value: nil"),
    "unknown_attribute": (("shutdown_delay = var.store", "shutdown_dely = var.store"),
                          'Unsupported argument; An argument named "shutdown_dely" is not expected here.'),
}


@pytest.mark.parametrize("edit", sorted(REFUSED_EDITS))
def test_a_job_file_nomads_parser_refuses_is_exit_2_with_its_text_and_nothing_registered(nomad_double, tmp_path, edit):
    (old, new), text = REFUSED_EDITS[edit]
    project = make_project(tmp_path / "project", docker=None)
    job_file = project / "nomad" / "mlflow.nomad.hcl"
    source = job_file.read_text()
    assert old in source, f"the job file no longer has {old!r}"
    job_file.write_text(source.replace(old, new))
    done = inv(*DEPLOY, cwd=project, env=env_for(nomad_double.cluster), expect=2)
    (line,) = errors(done)
    assert line.startswith("error: Nomad's job parser refuses nomad/mlflow.nomad.hcl: input.hcl:") and text in line, line
    assert nomad_double.registrations() == [] and nomad_double.job() is None


def test_an_env_template_go_envparse_refuses_fails_the_task_with_nomads_text(nomad_double, tmp_path):
    """A template whose env file has an unquoted ' parses, but the client cannot read it (go-envparse): the task
    is killed with Nomad's event text, which deploy shows; no version was ever healthy, so exit 11."""
    project = make_project(tmp_path / "project", docker=None)
    job_file = project / "nomad" / "mlflow.nomad.hcl"
    anchor = "      # The image's entrypoint contract (docker/entrypoint.sh)."
    source = job_file.read_text()
    assert anchor in source
    job_file.write_text(source.replace(anchor, '      template {\n        data        = "GREETING=it\'s\\n"\n'
                                               '        destination = "local/greeting.env"\n        env         = true\n'
                                               "      }\n\n" + anchor))
    done = inv(*DEPLOY, cwd=project, env=env_for(nomad_double.cluster), expect=11)
    assert "Template failed to read environment variables" in done.stdout + done.stderr
    assert "unmatched '" in done.stdout + done.stderr
