"""The deploy lock, through `inv` as users run it, against the Nomad double (its Variables API).

Two deploys at once: one proceeds, the other is refused at once with the holder named and changes
nothing; a deploy killed mid-way leaves a lock the next run calls stale; Ctrl-C releases it; `inv lock`
shows, takes and releases it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mlflow_self_host.core.settings import PROJECT_ROOT
from tests.services import wait_for
from tests.services.mlflow_image import clean_env

pytestmark = pytest.mark.usefixtures("nomad_double")
LOCK = ("default", "mlflow-self-host/lock/mlflow")


@pytest.fixture
def env(nomad_cluster):
    values = clean_env()
    values.update(nomad_cluster.env(deploy_poll="0.1"))
    return values


def inv(*args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def start_deploy(env):
    return subprocess.Popen([sys.executable, "-m", "invoke", "deploy", "--skip-host", "--skip-build", "--no-backup"],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_two_deploys_at_once_one_proceeds_the_other_is_refused_and_changes_nothing(nomad_double, env):
    slow = {**env, "MSH_MIN_HEALTHY_TIME": "5s"}  # the first holds the lock for seconds
    first = start_deploy(slow)
    wait_for(lambda: LOCK in nomad_double.variables, 20, "the first deploy's lock")
    second = inv("deploy", "--skip-host", "--skip-build", "--no-backup", env=slow)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 14, second.stderr[-2000:]
    line = second.stderr.splitlines()[0]
    assert line.startswith("error: job mlflow is being deployed by ") and "for `deploy v" in line
    assert f"@{os.uname().nodename}" in line and "nothing was changed" in line
    assert "Traceback" not in second.stderr
    assert len(nomad_double.registrations()) == 1  # only the first registered
    assert LOCK not in nomad_double.variables  # released on success


def test_a_lock_taken_by_hand_refuses_deploy_until_released(nomad_double, env):
    assert inv("lock", env=env).stdout == "deploy lock of job mlflow: free\n"
    taken = inv("lock", "--take", "--message", "disk replacement", env=env)
    assert taken.returncode == 0 and "deploys are refused until `inv lock --release`" in taken.stderr
    shown = inv("lock", env=env).stdout
    assert shown.startswith("deploy lock of job mlflow: held by ") and "for `disk replacement`" in shown
    refused = inv("deploy", "--skip-host", "--skip-build", env=env)
    assert refused.returncode == 14 and "for `disk replacement`" in refused.stderr
    assert nomad_double.registrations() == []
    assert inv("deploy", "--skip-host", "--skip-build", "--dry-run", env=env).returncode == 0  # a dry run reads
    released = inv("lock", "--release", env=env)
    assert released.returncode == 0 and "released the deploy lock held by " in released.stderr
    assert "disk replacement" in released.stderr
    deployed = inv("deploy", "--skip-host", "--skip-build", env=env)
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    assert inv("lock", "--take", "--release", env=env).returncode == 2


def test_a_deploy_killed_mid_way_leaves_a_lock_the_next_run_calls_stale(nomad_double, env):
    slow = {**env, "MSH_MIN_HEALTHY_TIME": "10s", "MSH_LOCK_STALE_AFTER": "1"}
    victim = start_deploy(slow)
    wait_for(lambda: LOCK in nomad_double.variables, 20, "the deploy's lock")
    os.killpg(victim.pid, signal.SIGKILL)  # no chance to release
    victim.wait(10)
    time.sleep(1.5)
    stale = inv("deploy", "--skip-host", "--skip-build", env=slow)
    assert stale.returncode == 14
    assert "older than lock_stale_after (1s): its holder was probably killed" in stale.stderr
    assert "`inv lock --release`" in stale.stderr
    assert "(stale: older than lock_stale_after)" in inv("lock", env=slow).stdout
    assert inv("lock", "--release", env=slow).returncode == 0
    again = inv("deploy", "--skip-host", "--skip-build", env=slow)
    assert again.returncode == 0, again.stderr[-2000:]


def test_ctrl_c_releases_the_lock(nomad_double, env):
    # a minute to be healthy: on a loaded machine this process (the double's too) may see the lock late, and
    # the Ctrl-C must still find the deploy running
    slow = {**env, "MSH_MIN_HEALTHY_TIME": "60s", "MSH_HEALTHY_DEADLINE": "90s", "MSH_PROGRESS_DEADLINE": "120s",
            "MSH_DEPLOY_TIMEOUT": "180"}
    deploying = start_deploy(slow)
    wait_for(lambda: LOCK in nomad_double.variables, 20, "the deploy's lock")
    time.sleep(0.5)
    os.killpg(deploying.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole process group
    out, err = deploying.communicate(timeout=60)
    assert deploying.returncode == 130 and "interrupted" in err, err[-3000:]
    assert LOCK not in nomad_double.variables


def test_a_token_without_variables_is_told_which_rule_it_needs(nomad_double, env):
    nomad_double.acl_tokens = {"no-vars": {"default": {"list-jobs", "parse-job", "read-job", "submit-job",
                                                       "read-logs"}}}
    refused = inv("deploy", "--skip-host", "--skip-build", env={**env, "NOMAD_TOKEN": "no-vars"})
    assert refused.returncode == 1
    assert "taking the deploy lock" in refused.stderr and 'path "mlflow-self-host/*"' in refused.stderr
    assert "no-vars" not in refused.stderr
    assert nomad_double.registrations() == []
