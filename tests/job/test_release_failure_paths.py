"""Failure paths of a schema-changing release that must not leave the service down without a way back
(flows/deploy.py's stop and migrate, steps/job/batch.py's stop of the migration), driven with a fake Nomad:
each would take minutes against the double (a migration that outlives its deadline, a stop that hangs, Ctrl-C)."""
from __future__ import annotations

import pytest

from mlflow_self_host.core.errors import ExitCode, UserError
from mlflow_self_host.core.plan import Change
from mlflow_self_host.flows import deploy as job_deploy
from mlflow_self_host.flows.deploy_plan import JobFacts, Step
from mlflow_self_host.steps.backup import BackupResult
from mlflow_self_host.steps.job import batch, follow, lifecycle
from tests.job.conftest import job_settings

OLD_JOB = {"ID": "mlflow", "Version": 4, "Stable": True,
           "TaskGroups": [{"Tasks": [{"Name": "mlflow", "KillTimeout": 1_000_000_000,
                                      "Config": {"image": "registry.lan:5000/mlflow:v0.99"}}]}]}
BACKUP = "/var/backups/mlflow/mlflow-20261207T180000Z-v0.99.db"


class FakeNomad:
    """Just what lifecycle and batch call: jobs, their allocations (each status a list, the last one kept), and
    what was done, in order, in ``events``."""

    def __init__(self, statuses: dict):
        self.statuses = statuses  # job id -> the ClientStatus of its one allocation, read after read
        self.events: list = []
        self.job = self
        self.jobs = self

    def get_job(self, job_id):
        if job_id.endswith(("-backup", "-gc")):  # no periodic jobs on this cluster (steps/job/periodic.py reads them)
            import nomad.api.exceptions as nex

            raise nex.URLNotFoundNomadException(None)
        stopped = any(e == ("stop", job_id) for e in self.events)
        return {**OLD_JOB, "ID": job_id, "Stop": stopped, "Stable": not stopped, "Version": 5 if stopped else 4}

    def deregister_job(self, job_id, purge=False):
        self.events.append(("stop", job_id))

    def get_allocations(self, job_id):
        seq = self.statuses[job_id]
        status = seq.pop(0) if len(seq) > 1 else seq[0]
        self.events.append(("read", job_id, status))
        return [{"ID": f"{job_id}-alloc-0001", "ClientStatus": status, "JobVersion": 4}]

    def register_job(self, job_id, body):
        self.events.append(("start", job_id, body["Job"]["Stop"]))
        return {"EvalID": "e1"}


def _deploy(n, **overrides) -> job_deploy.Deploy:
    steps = job_deploy.Deploy(job_settings("http://127.0.0.1:1", **overrides), "1.1")
    steps.n = n
    steps.known = JobFacts(job_version=4)
    steps.job_spec = OLD_JOB
    steps.backup_result = BackupResult(BACKUP, 1000, "0.99", "host m700", [])
    return steps


def _started_fine(monkeypatch, n):
    monkeypatch.setattr(follow, "after_submit", lambda *a, **k: follow.Outcome("successful", 6, "d1"))


MIGRATE = Change("run", "migration", op=Step("migrate", schema_from="a", schema_to="b"))


def test_a_migration_past_its_deadline_is_waited_for_before_the_backup_goes_back(monkeypatch):
    """migrate_timeout: the batch job stopped, then its allocation read until it ended, only then the put-back."""
    n = FakeNomad({"mlflow-migrate": ["running", "running", "complete"]})
    steps = _deploy(n)
    steps.stopped_job = OLD_JOB
    put_back = []
    monkeypatch.setattr(steps, "_put_back_the_backup", lambda: put_back.append(list(n.events)) or ("put back", True))
    _started_fine(monkeypatch, n)

    def times_out(settings, nomad, *a, **k):  # batch.run's follow, reaching its deadline
        return batch._follow(settings, nomad, "mlflow-migrate", {"ID": "mlflow-migrate-alloc-0001"}, "mlflow",
                             batch.Deadline(0), 1.0)

    monkeypatch.setattr(batch, "run", times_out)
    n.allocation = n
    n.get_allocation = lambda alloc_id: {"ClientStatus": "running", "TaskStates": {}}
    with pytest.raises(UserError) as caught:
        steps.apply_one(MIGRATE)
    assert caught.value.code == ExitCode.REVERTED == 12, caught.value
    (before,) = put_back
    stop = before.index(("stop", "mlflow-migrate"))
    assert ("read", "mlflow-migrate", "complete") in before[stop:]  # ended before the put-back


def test_a_migration_that_does_not_end_after_its_stop_is_not_put_back_and_says_the_commands(monkeypatch):
    n = FakeNomad({"mlflow-migrate": ["running"]})
    steps = _deploy(n)
    steps.stopped_job = OLD_JOB
    monkeypatch.setattr(batch, "STOP_MARGIN", 0.2)
    monkeypatch.setattr(steps, "_put_back_the_backup", lambda: pytest.fail("put back under a running migration"))
    monkeypatch.setattr(lifecycle, "start", lambda *a: pytest.fail("started on a database being written"))

    def times_out(settings, nomad, *a, **k):
        batch.stop_and_wait(settings, nomad, "mlflow-migrate", 0.1)

    monkeypatch.setattr(batch, "run", times_out)
    with pytest.raises(UserError) as caught:
        steps.apply_one(MIGRATE)
    error = caught.value
    assert error.code == ExitCode.DEPLOY_FAILED == 11
    assert "allocation mlflow-m had not ended" in error.message and "the backup was not put back" in error.message
    assert "`inv restore --backup mlflow-20261207T180000Z-v0.99.db`" in error.hint
    assert "`inv rollback --to 4` starts the old version again" in error.hint


def test_a_stop_that_times_out_before_the_migration_starts_the_job_again_as_it_was(monkeypatch):
    n = FakeNomad({"mlflow": ["running"]})
    steps = _deploy(n, deploy_timeout=1)
    monkeypatch.setattr(job_deploy, "_unchanged_since_the_plan", lambda *a: None)
    monkeypatch.setattr(job_deploy.nomad_api, "set_stable", lambda *a: None)
    _started_fine(monkeypatch, n)
    with pytest.raises(UserError) as caught:
        steps.apply_one(Change("stop", "job mlflow", op=Step("stop")))
    error = caught.value
    assert error.code == ExitCode.FAILED == 1
    assert "still has running allocations after the stop" in error.message
    assert "nothing was migrated" in error.message and "started again as it was (v0.99 runs)" in error.message
    assert "`nomad job status mlflow`" in error.hint
    assert n.events[-1] == ("start", "mlflow", False) and steps.stopped_job is None


def test_ctrl_c_during_the_migration_stops_it_waits_puts_the_backup_back_and_starts_the_old_version(monkeypatch):
    n = FakeNomad({"mlflow-migrate": ["running", "complete"], "mlflow": ["running"]})
    steps = _deploy(n)
    steps.stopped_job = OLD_JOB
    put_back = []
    monkeypatch.setattr(steps, "_put_back_the_backup",
                        lambda: put_back.append(list(n.events)) or ("the database is as the backup left it", True))
    _started_fine(monkeypatch, n)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "run", interrupted)
    with pytest.raises(UserError) as caught:
        steps.apply_one(MIGRATE)
    error = caught.value
    assert error.code == 130
    assert error.message.startswith("interrupted during the migration of schema a → b")
    assert "the database is as the backup left it" in error.message and "v0.99 runs again" in error.message
    (before,) = put_back
    assert before[:1] == [("stop", "mlflow-migrate")] and ("read", "mlflow-migrate", "complete") in before
    assert n.events[-1] == ("start", "mlflow", False)


def test_a_postgres_dry_run_with_the_schema_unread_says_the_real_deploy_may_plan_a_migration(monkeypatch):
    from mlflow_self_host.core import console
    from mlflow_self_host.core.schema_chain import Chain
    from mlflow_self_host.steps.store.revision import DbRevision

    steps = job_deploy.Deploy(job_settings("http://127.0.0.1:1", store="postgres",
                                           env={"MSH_DATABASE_URL": "postgresql://u:p@db.lan/mlflow"}), "1.1",
                              dry_run=True)
    monkeypatch.setattr(steps, "_image_chain", lambda: Chain("3.17.2", ("a", "b")))
    monkeypatch.setattr(steps, "_read_db_revision", lambda: DbRevision(
        unreadable="the MLflow environment that reads PostgreSQL from here is not made yet", blocking=False))
    said = []
    monkeypatch.setattr(console, "warn", said.append)
    steps._read_schema(job_changed=True)
    (line,) = said
    assert "schema unknown: the database's revision was not read: the MLflow environment" in line
    assert "the real deploy reads the schema (making that environment first) and may then plan a backup" in line
    assert "deploying as before" not in line


# --- `inv rollback --restore`: the backup checked before the stop; a failed restore starts the job again -------
def _rollback_restore(monkeypatch, n):
    from mlflow_self_host.core.plan import Plan
    from mlflow_self_host.flows import rollback
    from mlflow_self_host.steps.backup.restore import Stop

    applying = rollback.Apply(job_settings("http://127.0.0.1:1", deploy_timeout=1), n)
    applying.plan = Plan("rollback job mlflow")
    applying.plan.add("stop", "job mlflow", "", op=Stop(local=False))
    applying.plan.add("restore", "backup b.db", "", op=rollback.Restore("mlflow-20261207T180000Z-v0.99.db", "a"))
    applying.plan.add("register", "job mlflow", "", op=rollback.Register(3, 4))
    monkeypatch.setattr(job_deploy.nomad_api, "set_stable", lambda *a: None)
    _started_fine(monkeypatch, n)
    return applying


def _apply_all(applying):
    for change in applying.plan.changes:
        applying.apply_one(change)


def test_rollback_restore_refuses_a_corrupt_backup_before_the_stop(monkeypatch):
    from mlflow_self_host.steps import backup as backups

    n = FakeNomad({"mlflow": ["complete"]})
    applying = _rollback_restore(monkeypatch, n)

    def corrupt(settings, name, remote=None):
        raise UserError(f"{name} fails the SQLite integrity check: database disk image is malformed")

    monkeypatch.setattr(backups, "check_now", corrupt)
    with pytest.raises(UserError, match="fails the SQLite integrity check"):
        _apply_all(applying)
    assert n.events == []  # not stopped


def test_rollback_restore_failing_after_the_stop_starts_the_job_again_and_says_both(monkeypatch):
    from mlflow_self_host.steps import backup as backups

    n = FakeNomad({"mlflow": ["complete"]})
    applying = _rollback_restore(monkeypatch, n)
    monkeypatch.setattr(backups, "check_now", lambda *a, **k: None)

    def fails(settings, name, remote=None):
        raise UserError("pg_restore: error: could not execute query: connection to server lost")

    monkeypatch.setattr(backups, "restore_now", fails)
    with pytest.raises(UserError) as caught:
        _apply_all(applying)
    error = caught.value
    assert error.message.startswith("restoring mlflow-20261207T180000Z-v0.99.db failed: pg_restore: error")
    assert "the job was started again as it was (v0.99 runs)" in error.message
    assert n.events[0] == ("stop", "mlflow") and n.events[-1] == ("start", "mlflow", False)


def test_rollback_restore_whose_sqlite_swap_left_the_database_changed_keeps_the_job_stopped(monkeypatch):
    from mlflow_self_host.steps import backup as backups

    n = FakeNomad({"mlflow": ["complete"]})
    applying = _rollback_restore(monkeypatch, n)
    monkeypatch.setattr(backups, "check_now", lambda *a, **k: None)

    def half_done(settings, name, remote=None):
        error = UserError("putting MLflow's users in place failed: Connection reset by peer")
        error.database_unchanged = False
        raise error

    monkeypatch.setattr(backups, "restore_now", half_done)
    monkeypatch.setattr(lifecycle, "start", lambda *a: pytest.fail("started on a half-restored database"))
    with pytest.raises(UserError) as caught:
        _apply_all(applying)
    error = caught.value
    assert error.code == ExitCode.DEPLOY_FAILED == 11
    assert "the job stays stopped: the database is not as it was" in error.message
    assert "`inv restore --backup mlflow-20261207T180000Z-v0.99.db`" in error.hint
    assert "`inv rollback --to 3`" in error.hint


def test_a_failed_swap_moves_the_sqlite_database_back(tmp_path):
    import subprocess

    from mlflow_self_host.steps.backup import commands

    db, aside = tmp_path / "mlflow.db", tmp_path / "mlflow.db.before-restore-1"
    aside.write_text("the database")
    (tmp_path / "mlflow.db.before-restore-1-wal").write_text("its wal")
    said = subprocess.run(["sh", "-c", commands.undo_keep_aside(str(db), str(aside))], capture_output=True, text=True)
    assert said.stdout.strip() == "unchanged" and db.read_text() == "the database" and not aside.exists()
    assert (tmp_path / "mlflow.db-wal").read_text() == "its wal"
    aside.write_text("kept aside")  # the backup is in place already: not as it was
    said = subprocess.run(["sh", "-c", commands.undo_keep_aside(str(db), str(aside))], capture_output=True, text=True)
    assert said.stdout.strip() == "replaced" and db.read_text() == "the database"


def test_ctrl_c_before_the_migration_job_is_registered_does_not_wait_for_it(monkeypatch):
    import time

    import nomad.api.exceptions as nex

    n = FakeNomad({})

    def no_such_job(job_id):
        raise nex.URLNotFoundNomadException(None)

    n.get_allocations = no_such_job
    started = time.monotonic()
    batch.stop_and_wait(job_settings("http://127.0.0.1:1"), n, "mlflow-migrate", 5.0)
    assert time.monotonic() - started < 1  # not the kill timeout + 30 s
