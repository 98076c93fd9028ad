"""The restore drill's rules (pure): what is counted where, when it fails, and doctor's two rows."""
from __future__ import annotations

import datetime as dt

from mlflow_self_host.flows.doctor import request_total
from mlflow_self_host.steps.backup import drill

NOW = dt.datetime(2026, 12, 7, 18, 0, tzinfo=dt.timezone.utc)


def test_a_live_store_ahead_is_fine_and_one_behind_fails():
    backup = dict(experiments=3, runs=4, metrics=12, latest_metrics=4, params=8, artifacts=4)
    ahead = dict(backup, runs=5, metrics=15)
    assert drill.judge("ok", drill.compare(backup, ahead)) == drill.Verdict(True, "")
    behind = drill.judge("ok", drill.compare(backup, dict(backup, params=7)))
    assert not behind.ok and "params 7 live < 8 in the backup" in behind.why
    assert drill.judge("database disk image is malformed", []) == drill.Verdict(False, "database disk image is malformed")
    lines = drill.table(drill.compare(backup, dict(ahead, params=7)))
    assert lines[2].split() == ["runs", "4", "5", "+1"] and lines[5].split() == ["params", "8", "7", "-1", "fewer", "live"]


def test_artifacts_are_the_runs_folders_under_artifacts_path():
    assert drill.artifact_dir("mlflow-artifacts:/1/abc/artifacts") == "1/abc/artifacts"
    assert drill.artifact_dir("/mnt/artifacts/2/def/artifacts", "/mnt/artifacts") == "2/def/artifacts"
    assert drill.artifact_dir("s3://bucket/1/abc/artifacts", "/mnt/artifacts") is None
    per_dir = drill.parse_artifact_listing("      3 1/abc/artifacts\n      2 1/xyz/artifacts\n")
    assert drill.artifact_files(["mlflow-artifacts:/1/abc/artifacts"], per_dir) == 3
    assert drill.artifact_files(["mlflow-artifacts:/1/abc/artifacts", "mlflow-artifacts:/1/xyz/artifacts"],
                                per_dir) == 5


def test_the_newest_backup_of_the_stores_kind_is_drilled():
    names = ["mlflow-20261201T000000Z-v0.99.db", "mlflow-20261205T000000Z-v0.99.dump",
             "mlflow-20261203T000000Z-v0.99.db", ".last-drill.json"]
    assert drill.choose(names, "sqlite", None) == "mlflow-20261203T000000Z-v0.99.db"
    assert drill.choose(names, "postgres", None) == "mlflow-20261205T000000Z-v0.99.dump"
    assert drill.choose(names, "sqlite", "x.db") == "x.db"
    assert drill.choose([], "sqlite", None) is None


def test_doctor_rows_by_age_and_result():
    fresh, old = "mlflow-20261207T060000Z-v0.99.db", "mlflow-20261205T060000Z-v0.99.db"
    assert drill.backup_row([fresh], "sqlite", NOW, 26, True).ok
    row = drill.backup_row([old], "sqlite", NOW, 26, True)
    assert not row.ok and "older than backup_max_age_hours 26" in row.found
    assert drill.backup_row([], "sqlite", NOW, 26, False).ok  # nothing to back up yet
    assert not drill.backup_row([], "sqlite", NOW, 26, True).ok

    kept = drill.record(NOW - dt.timedelta(days=3), fresh, drill.Verdict(True, ""), "sqlite")
    assert drill.drill_row(kept, True, NOW, 31).ok
    assert not drill.drill_row(kept, True, NOW, 2).ok
    failed = drill.record(NOW, fresh, drill.Verdict(False, "malformed"), "sqlite")
    row = drill.drill_row(failed, True, NOW, 31)
    assert not row.ok and "malformed" in row.found
    assert not drill.drill_row(None, True, NOW, 31).ok and drill.drill_row(None, False, NOW, 31).ok
    assert not drill.drill_row({"unreadable": True}, True, NOW, 31).ok


def test_the_scratch_database_is_named_after_the_live_one():
    url = "postgresql://mlflow:pw@db.lan:5432/tracking"
    assert drill.scratch_name(url) == "tracking_verify"
    assert drill.scratch_url(url) == "postgresql://mlflow:pw@db.lan:5432/tracking_verify"


def test_the_request_count_of_a_metrics_page():
    page = ('# TYPE mlflow_http_request_total counter\nmlflow_http_request_total{method="GET",status="200"} 4.0\n'
            'mlflow_http_request_total{method="POST",status="200"} 2.0\n')
    assert request_total(page) == 6
    assert request_total('mlflow_exporter_info{version="0.23.2"} 1.0\n') == 0
    assert request_total("<html>not found</html>", "text/html") is None
