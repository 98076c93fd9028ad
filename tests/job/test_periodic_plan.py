"""The companion periodic jobs' plan (steps/job/periodic.py ``make_plan``, pure) and what the settings turn on: a
line per change (new, changed, stopped in Nomad, paused for the release, retired), none when Nomad's plan has no
diff; the backup's plan line from its settings; its settings refused at load."""
from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_self_host.core.settings import PROJECT_ROOT, Settings
from mlflow_self_host.steps.job import periodic


def settings(**overrides) -> Settings:
    return Settings.load(root=PROJECT_ROOT, env={}, overrides=overrides)


def found(registered=None, changed=False, name="mlflow-backup") -> periodic.CompanionFacts:
    companion = periodic.Companion(name, Path("nomad/mlflow-backup.nomad.hcl"), {}, "nightly at 03:00 UTC, kept 7 deep")
    return periodic.CompanionFacts(companion, {"ID": name}, registered, changed)


def lines(facts: periodic.Facts) -> list[str]:
    return [change.describe() for change in periodic.make_plan(settings(), facts)]


def test_one_line_per_change_and_none_without_a_diff():
    running = {"ID": "mlflow-backup", "Stop": False}
    assert lines(periodic.Facts([found()])) == ["+ periodic job mlflow-backup: nightly at 03:00 UTC, kept 7 deep"]
    assert lines(periodic.Facts([found(running)])) == []  # a second deploy: nothing
    assert lines(periodic.Facts([found(running, changed=True)])) == [
        "~ periodic job mlflow-backup: nightly at 03:00 UTC, kept 7 deep"]
    assert lines(periodic.Facts([found({"Stop": True})])) == [
        "~ periodic job mlflow-backup: nightly at 03:00 UTC, kept 7 deep (stopped in Nomad: started again)"]
    assert lines(periodic.Facts([found({"Stop": True})], paused=("mlflow-backup",))) == [
        "~ periodic job mlflow-backup: nightly at 03:00 UTC, kept 7 deep (started again after the release)"]
    assert lines(periodic.Facts([], retiring=["mlflow-backup"])) == [
        "- periodic job mlflow-backup: turned off in the settings: stopped (its past runs kept in Nomad)"]
    empty = periodic.make_plan(settings(), periodic.Facts([found(running)]))
    assert empty.empty and empty.reason == "no change"


def test_the_settings_turn_the_backup_on_and_off():
    (backup,) = [c for c in periodic.companions(settings()) if c.name == "mlflow-backup"]
    assert backup.describe == "nightly at 03:00 UTC, kept 7 deep" and backup.variables["copy"] is False
    moved = periodic.backup_companion(settings(backup_schedule="30 1 * * *", backup_time_zone="Europe/Paris",
                                               backup_keep=3, backup_copy_path="/mnt/usb/mlflow", job_name="ml"))
    assert moved.name == "ml-backup" and moved.variables["copy"] is True
    assert moved.describe == "nightly at 01:30 Europe/Paris, kept 3 deep, copied to /mnt/usb/mlflow"
    off = settings(backup_schedule="")
    assert periodic.backup_companion(off) is None and "mlflow-backup" in periodic.retired(off)


def test_the_postgres_secrets_keep_the_password_out_of_the_url():
    secrets = periodic.pg_secrets("postgresql+psycopg2://mlflow:p%27q%23s%3Ax@db.lan:5432/mlflow")
    assert secrets["database_url"] == "postgresql://mlflow@db.lan:5432/mlflow"
    assert bytes.fromhex(secrets["password_hex"]).decode() == "p'q#s:x"


def test_only_the_shared_variables_a_job_file_declares_are_passed():
    text = (PROJECT_ROOT / periodic.BACKUP_FILE).read_text()
    shared = periodic.shared_variables(settings(), "registry.lan:5000/mlflow:v1.0", "amd64")
    chosen = periodic.variables_for(periodic.backup_companion(settings()), text, {**shared, "unknown": 1})
    assert chosen["image"] == "registry.lan:5000/mlflow:v1.0" and chosen["job_name"] == "mlflow"
    assert "unknown" not in chosen and "database_variable" not in chosen


@pytest.mark.parametrize("name, value, why", [
    ("BACKUP_TIME_ZONE", "Europe/Pari", "is not a time zone Nomad knows"),
    ("BACKUP_SCHEDULE", "0 3", "is not a cron line"),
])
def test_a_bad_nightly_backup_setting_is_refused_at_load_before_any_release(name, value, why):
    """Refused by `inv` itself (exit 2, one red line), not by Nomad after the service was released."""
    from tests.test_cli import inv

    done = inv("config", env={f"MSH_{name}": value})
    assert done.returncode == 2, done.stderr
    assert f"env MSH_{name}: {name.lower()} {value!r} {why}" in done.stderr and "Traceback" not in done.stderr
    off = inv("config", env={"MSH_BACKUP_SCHEDULE": "", "MSH_BACKUP_TIME_ZONE": "America/New_York"})
    assert off.returncode == 0, off.stderr  # empty: no nightly backup; a real zone: accepted
