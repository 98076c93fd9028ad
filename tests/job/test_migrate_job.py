"""A schema-changing release: the migration's batch job (steps/job/batch.py) as deploy registers it, and the
register after it without Nomad's automatic revert (flows/deploy.py)."""
from __future__ import annotations

import json

from mlflow_self_host.flows.deploy import keep_revert_off, without_auto_revert
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
    assert old["RestartPolicy"]["Attempts"] == 2  # the task's own, which Nomad uses: never run twice
    assert task["RestartPolicy"]["Attempts"] == 0 and task["RestartPolicy"]["Mode"] == "fail"
    assert task["Env"] == {**old["Env"], "MLFLOW_DB_UPGRADE": "only"}
    assert task["VolumeMounts"] == old["VolumeMounts"] and task["Constraints"] == old["Constraints"]
    assert task["User"] == old["User"] and task["Resources"] == old["Resources"] and not task.get("Services")
    assert json.dumps(service["TaskGroups"][0]) == json.dumps(before)  # the service job is left as it was
    assert jobfile.image_of(service) != NEW


def test_on_postgres_the_migration_reads_the_url_from_its_own_variable_at_the_same_item():
    service = service_job(store="postgres", database_revision="20261207T180000000000Z")
    job = batch.spec(service, NEW, "mlflow-migrate", variable=batch.variable_path(job_settings("http://127.0.0.1:1")))
    (template,) = job["TaskGroups"][0]["Tasks"][0]["Templates"]  # the URL's only: not auth's secrets
    before, auth = service["TaskGroups"][0]["Tasks"][0]["Templates"]
    assert ".database_url_" in before["EmbeddedTmpl"] and ".database_url_" not in auth["EmbeddedTmpl"]
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


def test_the_same_version_again_keeps_the_revert_off_and_the_next_one_has_it_on():
    registered = without_auto_revert(service_job())
    again = keep_revert_off(registered, service_job())
    assert again["TaskGroups"][0]["Update"]["AutoRevert"] is False  # no diff: "already deployed"
    s = job_settings("http://127.0.0.1:1")
    values = jobfile.variables(s, "1.1", "amd64,arm64", "nomad", None)
    nxt = engine.parse(HCL, jobfile.var_file(values), canonicalize=True)
    assert keep_revert_off(registered, nxt)["TaskGroups"][0]["Update"]["AutoRevert"] is True


# --- through `inv deploy`, against the Nomad double: the real image migrating a real database --------------------
# (the SSH host is this machine: the host's database is the one in the cluster's backend folder)
import os  # noqa: E402

import pytest  # noqa: E402

from mlflow_self_host.core.settings import Settings  # noqa: E402
from mlflow_self_host.flows import deploy as job_deploy  # noqa: E402
from tests.flags.conftest import errors, inv, make_project, set_version  # noqa: E402
from tests.job import older_schema  # noqa: E402
from tests.services import ADMIN_PASSWORD, clean_env  # noqa: E402
from tests.services.nomad_cluster import MLFLOW_TIMINGS  # noqa: E402

NEW_VERSION = "1.1"  # the real MLflow image (labelled by `inv build`'s code), in the cluster's registry as v1.1


@pytest.fixture
def upgrade(tmp_path, ssh_server, nomad_cluster, mlflow_image, docker_client):
    """(project, env, database): the cluster running the stub v0.99 on a database one migration behind the
    real image's head; the real image published as v1.1; version.txt at 1.1."""
    image = docker_client.images.get(mlflow_image.ref())
    repo = f"{nomad_cluster.images.registry}/{nomad_cluster.images.repository}"
    image.tag(repo, f"v{NEW_VERSION}")
    docker_client.images.push(repo, tag=f"v{NEW_VERSION}")
    made = docker_client.containers.run(mlflow_image.ref(), environment={"MLFLOW_DB_UPGRADE": "only"}, detach=True,
                                        volumes={str(nomad_cluster.backend): {"bind": "/mnt/backend_store"},
                                                 str(nomad_cluster.artifacts): {"bind": "/mnt/artifacts"}})
    try:
        assert made.wait(timeout=120)["StatusCode"] == 0, made.logs()
    finally:
        made.remove(force=True)
    db = nomad_cluster.backend / "mlflow.db"
    older_schema.one_behind(db)
    project = make_project(tmp_path / "project", docker=None)
    values = dict(ssh_server.settings(), **nomad_cluster.overrides(backups_path=str(tmp_path / "host-backups"),
                                                                   **{**MLFLOW_TIMINGS, "healthy_deadline": "4m",
                                                                      "progress_deadline": "5m"},
                                                                   deploy_timeout=400, migrate_timeout=300))
    job_deploy.deploy(Settings.load(root=project, env={"MSH_MLFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD}, overrides=values),
                      "0.99", skip_host=True, skip_build=True, backup=False)
    set_version(project, NEW_VERSION)
    env = clean_env()
    env.update({f"MSH_{k.upper()}": str(v) for k, v in values.items()})
    yield project, env, db
    docker_client.images.remove(f"{repo}:v{NEW_VERSION}", noprune=True)


def _backups(env):
    folder = env["MSH_BACKUPS_PATH"]
    return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".db"))


def test_inv_deploy_of_a_schema_upgrade_backs_up_stops_migrates_once_then_registers_without_revert(upgrade,
                                                                                                  nomad_cluster):
    project, env, db = upgrade
    dry = inv("deploy", "--skip-host", "--skip-build", "--dry-run", cwd=project, env=env)
    assert f"schema upgrade {older_schema.BEFORE_HEAD} -> {older_schema.HEAD}" in dry.stderr, dry.stderr
    assert older_schema.revision(db) == older_schema.BEFORE_HEAD
    done = inv("deploy", "--skip-host", "--skip-build", cwd=project, env=env, timeout=600)
    err = done.stderr
    assert older_schema.revision(db) == older_schema.HEAD and "job_locks" in older_schema.tables(db)
    (backup,) = _backups(env)
    assert older_schema.revision(backup) == older_schema.BEFORE_HEAD  # taken before the migration
    said = ("backing up the database", "stopping job mlflow", "running the migration: batch job mlflow-migrate",
            "  | mlflow-entrypoint: mlflow db upgrade", "  | mlflow-entrypoint: schema upgraded; not serving",
            f"migrated schema {older_schema.BEFORE_HEAD} → {older_schema.HEAD}", "registering job mlflow",
            f"deployed v{NEW_VERSION}")
    assert all(line in err for line in said), err
    order = [err.index(line) for line in said]
    assert order == sorted(order), err  # the migration's own output shown, in that order
    assert "no automatic revert" in err and err.count("  | mlflow-entrypoint: mlflow db upgrade") == 1  # once
    double = nomad_cluster.nomad
    (alloc,) = double.running_allocs()
    assert double.container_of(alloc["ID"]).attrs["Config"]["Image"].endswith(f":v{NEW_VERSION}")
    assert double.job()["TaskGroups"][0]["Update"]["AutoRevert"] is False
    migration = double.job("mlflow-migrate")
    assert migration["Type"] == "batch" and migration["Status"] == "dead"
    again = inv("deploy", "--skip-host", "--skip-build", cwd=project, env=env)  # nothing left to do
    assert "already deployed" in again.stderr and "migration" not in again.stderr


def test_inv_deploy_whose_migration_fails_puts_the_backup_back_and_starts_the_old_version(upgrade, nomad_cluster):
    project, env, db = upgrade
    older_schema.break_for_the_head_migration(db)
    done = inv("deploy", "--skip-host", "--skip-build", cwd=project, env=env, expect=12, timeout=600)
    (line,) = errors(done)
    assert "the migration of schema" in line and "failed (exit code 1: " in line, done.stderr
    assert "no such table: jobs" in line and "a Python traceback" in done.stderr  # its last line, said
    assert done.stderr.count("  | mlflow-entrypoint: mlflow db upgrade") == 1  # run once, never restarted
    assert "the database is as the backup" in line and "v0.99 runs again" in line, line
    (backup,) = _backups(env)
    assert db.read_bytes() == open(backup, "rb").read()  # exactly as the backup holds it
    assert older_schema.revision(db) == older_schema.BEFORE_HEAD
    double = nomad_cluster.nomad
    (alloc,) = double.running_allocs()
    assert double.container_of(alloc["ID"]).attrs["Config"]["Image"].endswith(":v0.99")
    assert jobfile.image_of(double.job()).endswith(":v0.99")  # nothing of the new version registered
    assert nomad_cluster.backend.joinpath("stub-starts.log").read_text().splitlines() == ["v0.99 uid=1000"] * 2


def test_inv_deploy_failing_after_its_migration_names_the_way_back_and_rollback_restore_takes_it(
        upgrade, nomad_cluster, docker_client):
    """The migration succeeds, then the new version never serves (a server flag it refuses): exit 11, no revert
    onto v0.99 (which cannot read the migrated database); the hint names the commands that go back, and
    `inv rollback --to 0 --restore` puts back the backup taken before the migration and runs v0.99 again."""
    import io

    project, env, db = upgrade
    repo = f"{nomad_cluster.images.registry}/{nomad_cluster.images.repository}"
    broken = f"FROM {repo}:v{NEW_VERSION}\nENV MLFLOW_SERVER_EXTRA_ARGS=--no-such-flag\n"  # the labels are kept
    docker_client.images.build(fileobj=io.BytesIO(broken.encode()), tag=f"{repo}:v1.2", rm=True, network_mode="host")
    docker_client.images.push(repo, tag="v1.2")
    set_version(project, "1.2")
    failed = inv("deploy", "--skip-host", "--skip-build", cwd=project, env=env, expect=11, timeout=600)
    (backup,) = _backups(env)
    name = os.path.basename(backup)
    assert older_schema.revision(db) == older_schema.HEAD  # migrated, and left so
    assert "the database was migrated: an older version cannot read it" in failed.stderr
    hint = " ".join(failed.stderr.split())
    assert f"`inv rollback --to 0 --restore` does both" in hint and f"`inv restore --backup {name}`" in hint, hint
    assert "`inv rollback --to 0`" in hint
    assert jobfile.image_of(nomad_cluster.nomad.job()).endswith(":v1.2")  # no automatic revert
    from mlflow_self_host.core.schema_chain import chain
    from tests.job.test_schema_release import publish_labelled

    # v0.99 as `inv build` would have labelled it: an MLflow whose head is the revision before 3.17.2's
    publish_labelled(nomad_cluster, "0.99", chain().order[:-1], "3.17.1")
    back = inv("rollback", "--to", "0", "--restore", cwd=project, env=env, timeout=600)
    assert "rolled back to job version 0" in back.stderr
    assert older_schema.revision(db) == older_schema.BEFORE_HEAD and db.read_bytes() == open(backup, "rb").read()
    (alloc,) = nomad_cluster.nomad.running_allocs()
    assert nomad_cluster.nomad.container_of(alloc["ID"]).attrs["Config"]["Image"].endswith(":v0.99")
    docker_client.images.remove(f"{repo}:v1.2", noprune=True)


def test_a_failed_migration_whose_backup_cannot_be_put_back_is_exit_11_with_the_commands_that_finish_it(
        monkeypatch):
    """Exit 12 says the database is as the backup left it and the old version runs: when the put-back fails,
    neither is true; the error is 11 ("the revert failed too") and its hint names the restore and the rollback."""
    from mlflow_self_host.core.errors import ExitCode, UserError
    from mlflow_self_host.flows.deploy_plan import JobFacts
    from mlflow_self_host.steps.backup import BackupResult

    steps = job_deploy.Deploy(job_settings("http://127.0.0.1:1"), "1.1")
    steps.stopped_job = {"TaskGroups": [{"Tasks": [{"Config": {"image": "registry.lan:5000/mlflow:v0.99"}}]}]}
    steps.known = JobFacts(job_version=4)
    steps.backup_result = BackupResult("/var/backups/mlflow/mlflow-20261207T180000Z-v0.99.db", 1000, "0.99",
                                       "host m700", [])

    def fails():
        raise UserError("cp: cannot stat the backup")

    monkeypatch.setattr(steps, "_put_back_the_backup", fails)
    error = steps._after_failed_migration("the migration of schema a → b failed (exit code 1)", None)
    assert error.code == ExitCode.DEPLOY_FAILED == 11
    assert "putting the backup back failed (cp: cannot stat the backup)" in error.message
    assert "`inv restore --backup mlflow-20261207T180000Z-v0.99.db`" in error.hint
    assert "then `inv rollback --to 4` starts the old version again" in error.hint


def test_on_postgres_the_migration_job_gets_the_url_from_its_own_variable_which_is_removed_after(nomad_cluster):
    """store: postgres against the Nomad double: the batch job's template renders the URL from
    nomad/jobs/mlflow-migrate (the stub fails as MLflow does on a refused password: so the URL did reach it),
    the failure's exit code and line come back, and neither the job's text nor anything left keeps the URL."""
    from mlflow_self_host.adapters import nomad_api
    from mlflow_self_host.steps.job import database_variable

    url = "postgresql://mlflow:refused@db.lan:5432/mlflow"
    s = Settings.load(root=PROJECT_ROOT, env={"MSH_DATABASE_URL": url},
                      overrides=nomad_cluster.overrides(store="postgres"))
    revision = "20261207T180000000000Z"
    values = jobfile.variables(s, "0.99", "amd64,arm64", "nomad", revision)
    service = engine.parse(HCL, jobfile.var_file(values), canonicalize=True)
    image = nomad_cluster.publish("0.99")
    result = batch.run(s, nomad_api.client(s), service, image, url=database_variable.wanted(s), timeout=120)
    assert result.exit_code == 1, result
    assert "password authentication failed" in batch.failure_line(result.lines)
    double = nomad_cluster.nomad
    assert not [key for key in double.variables if key[1] == "nomad/jobs/mlflow-migrate"]  # removed after
    registered = json.dumps(double.job("mlflow-migrate"))
    assert "refused" not in registered and 'nomadVar \\"nomad/jobs/mlflow-migrate\\"' in registered


def test_a_failure_after_migrating_a_stopped_job_names_no_rollback_to_its_stopped_copy():
    """The job was stopped before the deploy (e.g. left so by `inv restore`): its registered version is the stopped
    copy, which `inv rollback --to` refuses (exit 2); the way back is the stop and the restore alone."""
    from mlflow_self_host.core.errors import UserError
    from mlflow_self_host.flows.deploy_plan import JobFacts
    from mlflow_self_host.steps.backup import BackupResult

    steps = job_deploy.Deploy(job_settings("http://127.0.0.1:1"), "1.1")
    steps.known = JobFacts(job_version=5, stopped_version="0.99")  # no stop by deploy: stopped_job stays None
    steps.backup_result = BackupResult("/var/backups/mlflow/mlflow-20261207T180000Z-v0.99.db", 1000, "0.99",
                                       "host m700", [])
    error = UserError("job mlflow: deployment failed", code=11)
    steps._say_how_to_go_back(error)
    assert "rollback --to 5" not in error.hint, error.hint
    assert "`nomad job stop mlflow`, then `inv restore --backup mlflow-20261207T180000Z-v0.99.db`" in error.hint
