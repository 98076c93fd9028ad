"""Never during a release (steps/job/periodic.py ``pause``/``resume``), on the Nomad double's periodic launcher: the
companion's parent stopped, a launch still running waited for to its end, a force refused while stopped (as Nomad
refuses it), then registered again as it was; a launch that outlives the bound: refused, the parent running again."""
from __future__ import annotations

import time

import pytest

from mlflow_self_host.adapters import nomad_api
from mlflow_self_host.core.errors import UserError
from mlflow_self_host.steps.job import periodic
from tests.job.conftest import job_settings
from tests.test_nomad_double_batch import periodic_hcl, register, script

pytestmark = pytest.mark.slow


def launched(nomad_cluster, seconds: int):
    """(settings, client, child): the nightly backup's parent registered (a stub task sleeping ``seconds``) and
    one launch forced, running."""
    settings = job_settings(nomad_cluster.nomad, deploy_poll="0.1")
    n = nomad_api.client(settings)
    register(n, periodic_hcl(nomad_cluster.publish("1.0"), "0 3 * * *", overlap=True, name="mlflow-backup",
                             body=script(f"import time; time.sleep({seconds})")))
    n.job.periodic_job("mlflow-backup")
    (child,) = periodic.children(settings, n, "mlflow-backup")
    return settings, n, child


def test_pause_waits_for_the_running_launch_refuses_a_force_and_resume_starts_it_again(nomad_cluster):
    settings, n, child = launched(nomad_cluster, 4)
    assert periodic.running(settings, n) == ["mlflow-backup"]

    started = time.monotonic()
    paused = periodic.pause(settings, n, timeout=60)
    assert list(paused) == ["mlflow-backup"] and time.monotonic() - started > 1  # it waited for the launch
    assert n.job.get_job(child["ID"])["Status"] == "dead" and n.job.get_job("mlflow-backup")["Stop"] is True
    with pytest.raises(Exception) as refused:  # a stopped periodic job launches nothing, even forced
        n.job.periodic_job("mlflow-backup")
    assert "can't force run non-tracked job" in nomad_api.status_and_text(refused.value)[1]
    assert periodic.running(settings, n) == [] and periodic.pause(settings, n) == {}  # nothing more to stop

    periodic.resume(settings, n, paused)
    assert not n.job.get_job("mlflow-backup")["Stop"] and periodic.running(settings, n) == ["mlflow-backup"]
    n.job.periodic_job("mlflow-backup")  # tracked again
    assert len(periodic.children(settings, n, "mlflow-backup")) == 2


def test_a_launch_running_past_the_bound_refuses_the_release_and_the_parent_runs_again(nomad_cluster):
    settings, n, child = launched(nomad_cluster, 60)
    with pytest.raises(UserError) as caught:
        periodic.pause(settings, n, timeout=2)
    assert caught.value.code == 1 and child["ID"] in caught.value.message
    assert "nothing of the release was done" in caught.value.message
    assert not n.job.get_job("mlflow-backup")["Stop"]  # registered again as it was
    n.job.deregister_job(child["ID"])
