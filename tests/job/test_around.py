"""status, logs, rollback against the Nomad double (its client runs the stub images for real)."""
from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.steps.job import jobfile
from mlflow_self_host.steps.job import logs as job_logs
from mlflow_self_host.flows import rollback as job_rollback
from mlflow_self_host.steps.job import status as job_status
from tests.services import ADMIN_PASSWORD  # auth: basic by default
from tests.job.conftest import job_settings
from tests.job.test_deploy import run


@pytest.fixture
def two_versions(nomad_double):
    settings = job_settings(nomad_double)
    run(settings, "0.99")
    run(settings, "0.100")
    return settings


def test_rollback_goes_to_the_previous_stable_version_with_check_and_set(nomad_double, two_versions):
    outcome = job_rollback.rollback(two_versions)
    assert outcome.job_version == 2
    assert jobfile.image_of(nomad_double.job()).endswith(":v0.99")
    method, path, query, body = [r for r in nomad_double.requests if r[1].endswith("/revert")][0]
    assert body["JobVersion"] == 0 and body["EnforcePriorVersion"] == 1


def test_rollback_to_a_version_that_does_not_exist_is_refused(nomad_double, two_versions):
    with pytest.raises(UserError) as caught:
        job_rollback.rollback(two_versions, to="7")
    assert caught.value.message == "job mlflow has no version 7 (versions: 0, 1)"
    assert len(nomad_double.versions()) == 2


def test_rollback_dry_run_changes_nothing(nomad_double, two_versions, capsys):
    job_rollback.rollback(two_versions, to="0", dry_run=True)
    assert len(nomad_double.versions()) == 2
    images = nomad_double.cluster.images
    assert f"version 1 ({images.ref('0.100')}) → version 0 ({images.ref('0.99')})" in capsys.readouterr().err


def test_a_rollback_to_an_image_the_registry_lost_fails_on_the_pull_and_nomad_reverts_exit_12(
        nomad_double, two_versions, capsys):
    nomad_double.cluster.images.unpublish("0.99")
    with pytest.raises(UserError) as caught:
        job_rollback.rollback(two_versions, to="0")
    assert caught.value.code == 12  # version 1 was stable and differs: Nomad reverts to it
    assert "v0.100" in caught.value.message
    err = capsys.readouterr().err
    assert f"Failed to pull `{nomad_double.cluster.images.ref('0.99')}`" in err and "manifest unknown" in err
    (alloc,) = nomad_double.running_allocs()
    assert alloc["JobVersion"] == 3


def test_rollback_without_a_job(nomad_double):
    with pytest.raises(UserError) as caught:
        job_rollback.rollback(job_settings(nomad_double))
    assert "not registered" in caught.value.message


def test_status_json_compares_the_running_image_with_version_txt(nomad_double, two_versions, capsys):
    capsys.readouterr()
    job_status.status(two_versions, "0.101", as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert data["job"]["version"] == 1 and data["job"]["image_version"] == "0.100"
    assert data["job"]["up_to_date"] is False and data["version_txt"] == "0.101"
    assert [a["client_status"] for a in data["allocations"]][:2] == ["running", "complete"]
    assert data["allocations"][0]["healthy"] is True
    assert data["deployment"]["status"] == "successful" and data["deployment"]["healthy"] == 1


def test_status_table(nomad_double, two_versions, capsys):
    capsys.readouterr()
    job_status.status(two_versions, "0.100")
    out = capsys.readouterr().out
    assert "= version.txt" in out and "successful" in out and "healthy" in out


def test_status_without_a_job(nomad_double, capsys):
    job_status.status(job_settings(nomad_double), "0.99")
    assert "not registered" in capsys.readouterr().out


def test_logs_show_the_last_lines_of_the_running_allocation(nomad_double, two_versions, capsys):
    capsys.readouterr()
    job_logs.logs(two_versions, lines=1)
    assert capsys.readouterr().out == "stub v0.100 listening on 0.0.0.0:5000\n"  # the task's real stdout
    job_logs.logs(two_versions, stderr=True, lines=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all('"GET /health HTTP/1.1" 200' in line for line in lines)  # Nomad's checks


def test_logs_follow_streams_new_lines_until_the_task_stops(nomad_double, two_versions, capsys):
    (registration,) = requests.get(nomad_double.address + "/v1/service/mlflow", timeout=5).json()

    def later():
        time.sleep(0.5)
        requests.get(f"http://127.0.0.1:{registration['Port']}/api/2.0/mlflow/runs/get-me", timeout=5,
                     auth=("admin", ADMIN_PASSWORD))  # auth: basic, the default
        time.sleep(0.5)
        requests.delete(nomad_double.address + "/v1/job/mlflow", timeout=5)  # `nomad job stop`

    threading.Thread(target=later, daemon=True).start()
    job_logs.logs(two_versions, follow=True, stderr=True, lines=1)  # returns when the stream ends
    out = capsys.readouterr().out
    assert '"GET /api/2.0/mlflow/runs/get-me HTTP/1.1" 404' in out


def test_logs_without_allocation(nomad_double):
    with pytest.raises(UserError) as caught:
        job_logs.logs(job_settings(nomad_double))
    assert "not registered" in caught.value.message


def test_rollback_skips_a_stopped_copy_of_the_job(nomad_double, two_versions):
    """A stop stores the job as a new version with its Stable flag: rollback never picks that one."""
    requests.delete(nomad_double.address + "/v1/job/mlflow", timeout=5)  # version 2: stopped, stable
    nomad_double.wait_idle()
    run(two_versions, "1.0")  # version 3
    outcome = job_rollback.rollback(two_versions)
    assert outcome.job_version == 4
    assert jobfile.image_of(nomad_double.job()).endswith(":v0.100") and nomad_double.job()["Stop"] is False
    with pytest.raises(UserError) as caught:
        job_rollback.rollback(two_versions, to="2")
    assert caught.value.code == 2 and "stopped copy" in caught.value.message


def test_rollback_to_a_version_with_the_current_specification_registers_nothing(nomad_double, two_versions,
                                                                                capsys):
    run(two_versions, "0.99")  # version 2 = version 0's specification
    registered = len(nomad_double.registrations())
    assert job_rollback.rollback(two_versions, to="0") is None
    assert "has the same specification as the current version 2" in capsys.readouterr().err
    assert len(nomad_double.registrations()) == registered and len(nomad_double.versions()) == 3


def test_logs_follow_decodes_utf8_across_chunks(nomad_double, two_versions, capsys):
    """Nomad's plain logs carry no charset; following reads them incrementally as UTF-8."""
    message = "Größe ≠ 0 ✓ " * 2000  # 30 kB: more than one chunk of the stream
    nomad_double.cluster.publish("1.0", message=message)
    run(two_versions, "1.0")
    (registration,) = requests.get(nomad_double.address + "/v1/service/mlflow", timeout=5).json()

    def later():
        time.sleep(0.5)
        requests.get(f"http://127.0.0.1:{registration['Port']}/version", timeout=5)  # prints the message
        time.sleep(0.5)
        requests.delete(nomad_double.address + "/v1/job/mlflow", timeout=5)

    threading.Thread(target=later, daemon=True).start()
    job_logs.logs(two_versions, follow=True, lines=1)
    out = capsys.readouterr().out
    assert message in out and "\ufffd" not in out
