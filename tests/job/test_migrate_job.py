"""A schema-changing release: the migration's batch job (steps/job/batch.py) as deploy registers it, and the
register after it without Nomad's automatic revert (flows/deploy.py)."""
from __future__ import annotations

import json

from mlflow_self_host.flows.deploy import without_auto_revert
from mlflow_self_host.steps.job import batch, jobfile
from mlflow_self_host.core.settings import PROJECT_ROOT
from tests.doubles.nomad import engine
from tests.job.conftest import job_settings

HCL = (PROJECT_ROOT / "nomad" / "mlflow.nomad.hcl").read_text()
NEW = "registry.lan:5000/mlflow:v1.1"


def service_job(**overrides) -> dict:
    """The job file as deploy's parse gives it (the Go engine: Nomad's parser and Canonicalize)."""
    revision = overrides.pop("database_revision", None)
    s = job_settings("http://127.0.0.1:1", **overrides)
    values = jobfile.variables(s, "1.0", "amd64,arm64", "nomad", revision)
    return engine.parse(HCL, jobfile.var_file(values), canonicalize=True)


def test_the_migration_job_is_the_service_task_once_with_the_new_image_and_no_service():
    service = service_job()
    job = batch.spec(service, NEW, "mlflow-migrate")
    assert (job["ID"], job["Name"], job["Type"]) == ("mlflow-migrate", "mlflow-migrate", "batch")
    assert "Update" not in job and job["Datacenters"] == service["Datacenters"]
    (group,) = job["TaskGroups"]
    before = service["TaskGroups"][0]
    assert group["Count"] == 1
    assert group["Volumes"] == before["Volumes"] and group.get("Constraints") == before.get("Constraints")
    for gone in ("Services", "Update", "Networks"):
        assert not group.get(gone), gone
    assert group["RestartPolicy"]["Attempts"] == 0 and group["RestartPolicy"]["Mode"] == "fail"
    assert group["ReschedulePolicy"]["Attempts"] == 0 and group["ReschedulePolicy"]["Unlimited"] is False
    (task,) = group["Tasks"]
    old = before["Tasks"][0]
    assert task["Config"] == {"image": NEW}  # no port: the group has no network
    assert task["Env"] == {**old["Env"], "MLFLOW_DB_UPGRADE": "only"}
    assert task["VolumeMounts"] == old["VolumeMounts"] and task["Constraints"] == old["Constraints"]
    assert task["User"] == old["User"] and task["Resources"] == old["Resources"] and not task.get("Services")
    assert json.dumps(service["TaskGroups"][0]) == json.dumps(before)  # the service job is left as it was
    assert jobfile.image_of(service) != NEW


def test_on_postgres_the_migration_reads_the_url_from_its_own_variable_at_the_same_item():
    service = service_job(store="postgres", database_revision="20261207T180000000000Z")
    job = batch.spec(service, NEW, "mlflow-migrate", variable=batch.variable_path(job_settings("http://127.0.0.1:1")))
    (template,) = job["TaskGroups"][0]["Tasks"][0]["Templates"]
    (before,) = service["TaskGroups"][0]["Tasks"][0]["Templates"]
    assert template["EmbeddedTmpl"] == before["EmbeddedTmpl"].replace('"nomad/jobs/mlflow"', '"nomad/jobs/mlflow-migrate"')
    assert template["Envvars"] is True and template["DestPath"] == before["DestPath"]
    assert batch.template_items(service) == ["database_url_20261207T180000000000Z"]


def test_the_register_after_a_migration_has_no_automatic_revert():
    service = service_job()
    assert service["TaskGroups"][0]["Update"]["AutoRevert"] is True
    registered = without_auto_revert(service)
    assert registered["TaskGroups"][0]["Update"]["AutoRevert"] is False
    assert service["TaskGroups"][0]["Update"]["AutoRevert"] is True  # the plan's job is unchanged
    assert {k: v for k, v in registered["TaskGroups"][0]["Update"].items() if k != "AutoRevert"} == \
        {k: v for k, v in service["TaskGroups"][0]["Update"].items() if k != "AutoRevert"}
