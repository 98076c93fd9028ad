"""gc as a Nomad periodic job, without services: the settings gc_older_than and gc_schedule checked once (one red
line, exit 2), the plan's line when gc is turned on, nothing when off, and doctor's `gc` row from a launch."""
from __future__ import annotations

import datetime as dt

import pytest

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.core.settings import Settings
from mlflow_self_host.flows import doctor
from mlflow_self_host.steps.job import gc
from tests.test_cli import inv

NOW = dt.datetime(2026, 12, 8, 9, 0, tzinfo=dt.timezone.utc)
LAUNCHED = "mlflow-gc/periodic-" + str(int(dt.datetime(2026, 12, 8, 4, 0, tzinfo=dt.timezone.utc).timestamp()))


def settings(**env) -> Settings:
    return Settings.load(env={f"MSH_{k.upper()}": v for k, v in env.items()})


@pytest.mark.parametrize("value, why", [
    ("30 days", "is not an age as mlflow gc --older-than takes it (#d#h#m#s)"),
    ("30", "is not an age as mlflow gc --older-than takes it (#d#h#m#s)"),
    ("d", "is not an age as mlflow gc --older-than takes it (#d#h#m#s)"),
    ("0d0h", "is no time at all"),
])
def test_a_bad_gc_older_than_is_one_red_line_and_exit_2(value, why):
    done = inv("config", env={"MSH_GC_OLDER_THAN": value})
    assert done.returncode == 2, done.stderr
    assert f"env MSH_GC_OLDER_THAN: gc_older_than {value!r} {why}" in done.stderr
    assert "Traceback" not in done.stderr and "30d" in done.stderr  # the hint says what to write


def test_gc_settings_accepted_and_a_bad_schedule_refused():
    assert settings().gc_older_than == "" and gc.gc_companion(settings()) is None  # off by default
    assert settings(gc_older_than=" 30d ").gc_older_than == "30d"
    assert settings(gc_older_than="1d12h30m").gc_older_than == "1d12h30m"
    assert settings(gc_older_than="1.5h").gc_older_than == "1.5h"  # MLflow takes floats
    assert settings(gc_schedule="@daily").gc_schedule == "@daily"
    with pytest.raises(UserError) as refused:
        settings(gc_schedule="every night")
    assert refused.value.code == 2 and "gc_schedule 'every night' is not a cron line" in refused.value.message


def test_turning_gc_on_shows_in_the_plan():
    from mlflow_self_host.steps.job import periodic

    on = settings(gc_older_than="30d")
    companion = gc.gc_companion(on)
    assert companion.name == "mlflow-gc" and companion.jobfile.name == "mlflow-gc.nomad.hcl"
    assert companion.variables["older_than"] == "30d" and companion.variables["schedule"] == "0 4 * * *"
    assert companion.describe == "daily at 04:00 UTC, runs deleted more than 30d ago"
    assert companion.secrets == {}  # sqlite: no Variable to write
    assert companion in periodic.companions(on) and "mlflow-gc" not in periodic.retired(on)
    assert "mlflow-gc" in periodic.retired(settings())  # off: deploy stops one it registered before

    facts = periodic.Facts(found=[periodic.CompanionFacts(companion, {"ID": "mlflow-gc"}, None, changed=True)])
    plan = periodic.make_plan(on, facts)
    assert [c.describe() for c in plan] == [
        "+ periodic job mlflow-gc: daily at 04:00 UTC, runs deleted more than 30d ago"]
    other = settings(gc_older_than="12h", gc_schedule="30 2 * * *", job_name="mlflow-prod")
    assert (gc.gc_id(other), gc.describe(other)) == ("mlflow-prod-gc", "daily at 02:30 UTC, runs deleted more "
                                                                       "than 12h ago")
    assert gc.when("0 */6 * * *") == "cron '0 */6 * * *' (UTC)"


def test_with_postgres_the_launches_read_the_url_from_the_jobs_own_variable():
    on = settings(gc_older_than="30d", store="postgres", database_url="postgresql://mlflow:pw@db.lan/mlflow")
    companion = gc.gc_companion(on)
    assert companion.secrets == {"database_url": "postgresql+psycopg2://mlflow:pw@db.lan/mlflow"}
    assert "pw" not in companion.describe and "pw" not in repr(companion)


def test_doctor_has_a_gc_row_only_when_gc_is_on():
    names = lambda s: [name for check in doctor._checks(s) for name in check.names]  # noqa: E731
    assert "gc" not in names(settings()) and "gc" in names(settings(gc_older_than="30d"))


def test_the_gc_row_says_what_the_last_run_removed_or_left():
    done = gc.Launch(LAUNCHED, gc.launch_time(LAUNCHED), "complete", 0, "a1b2c3d4e5",
                     {"runs": 2, "removed": 2, "left": [], "error": ""},
                     ["2 runs, 0 logged models and 0 experiments deleted more than 30d ago: r1, r2",
                      "removed 2 runs, 0 logged models, 0 experiments; nothing left in /opt/nomad/data/mlflow/artifacts"])
    row = gc.launch_row(done, NOW)
    assert row.ok and row.found == ("last run 2026-12-08 04:00 UTC, 5 h ago: removed 2 runs, 0 logged models, "
                                    "0 experiments; nothing left in /opt/nomad/data/mlflow/artifacts")

    left = "left: run r2 (experiment 1): /opt/nomad/data/mlflow/artifacts/1/r2/artifacts, 3 files, 12.0 kB"
    failed = gc.Launch(LAUNCHED, gc.launch_time(LAUNCHED), "failed", 1, "a1b2c3d4e5",
                       {"runs": 2, "removed": 1, "left": [{"id": "r2"}], "error": "PermissionError: denied",
                        "still_in_store": ["r2"]},
                       ["mlflow gc failed: PermissionError: denied", left, "left in the store: 1 of the 2 runs (r2)"])
    row = gc.launch_row(failed, NOW)
    assert not row.ok and row.found == ("last run 2026-12-08 04:00 UTC, 5 h ago failed (exit 1): mlflow gc failed: "
                                        "PermissionError: denied; left run r2 (experiment 1): "
                                        "/opt/nomad/data/mlflow/artifacts/1/r2/artifacts, 3 files, 12.0 kB")
    assert row.fix.startswith("`nomad alloc logs a1b2c3d4` has its whole output; fix what stopped gc")

    orphan = gc.Launch(LAUNCHED, gc.launch_time(LAUNCHED), "failed", 1, "a1b2c3d4e5",
                       {"runs": 1, "removed": 1, "left": [{"id": "m-1"}], "error": "", "still_in_store": []},
                       ["left: logged model m-1 (experiment 1): /x/1/models/m-1/artifacts, 2 files, 1.0 kB",
                        "removed 1 of 1 run; left: 1 folder (1.0 kB) in /x"])
    row = gc.launch_row(orphan, NOW)
    assert row.found.endswith("failed (exit 1): left logged model m-1 (experiment 1): /x/1/models/m-1/artifacts, "
                              "2 files, 1.0 kB") and "remove it by hand" in row.fix

    never = gc.Launch(LAUNCHED, gc.launch_time(LAUNCHED), "failed")  # no allocation placed
    row = gc.launch_row(never, NOW)
    assert not row.ok and row.fix == f"`nomad job status {LAUNCHED}` says why it did not run"
    assert gc.launch_row(gc.Launch(LAUNCHED, gc.launch_time(LAUNCHED), "running", alloc_id="x"), NOW).ok
