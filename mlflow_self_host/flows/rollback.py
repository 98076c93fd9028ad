"""`inv rollback [--to VERSION] [--restore]`: revert the job (check-and-set on its version), follow the deployment.

Facts (``read_facts``: the registered job, its versions, the version to go back to (``choose``),
Nomad's answer whether it has the current specification, with store postgres the names of the database
Variable's items, and the schema: the target image's labels from the registry against the database's
revision) → ``make_plan`` (pure: one ``revert`` change to that version, or an empty plan with its
reason; refused when that version's database URL item is gone, or when its MLflow cannot serve the
database: a newer one migrated it) → ``runner.run`` (the revert, then the deployment followed).

``--restore`` goes back past a migration: stop the job, put back the newest backup whose recorded schema
revision (``{backup}.schema``, written by deploy) the target's MLflow can serve, register the target
version (ops ``Stop``, ``Restore``, ``Register``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core import database
from ..core.errors import ExitCode, UserError
from ..core.plan import Plan
from ..steps.backup.restore import Stop  # noqa: F401 - --restore's stop: inv restore's (local=False)
from ..steps.job import follow as follower
from ..steps.job import database_variable, jobfile
from ..adapters import nomad_api


@dataclass(frozen=True)
class Revert:
    """The operation: revert the job to ``version``, refused by Nomad unless it is still at ``prior``."""

    version: int
    prior: int


@dataclass(frozen=True)
class Restore:
    """--restore: put the backup ``name`` (in backups_path) of schema ``revision`` in the database's place."""

    name: str
    revision: str
    kind: str = "restore"


@dataclass(frozen=True)
class Register(Revert):
    """--restore: the revert of the stopped job to ``version``; ``prior`` is the current version before the stop
    (the stop adds one: the revert is checked against the job as the stop left it)."""

    kind: str = "register"


@dataclass
class RollbackFacts:
    current: dict | None  # the registered job (None: not registered)
    versions: list = field(default_factory=list)  # the job's versions, as Nomad lists them
    same_specification: set = field(default_factory=set)  # versions Nomad's plan finds equal to the current
    target: dict | None = None  # the version to go back to (``choose``; None: no job)
    variable_items: frozenset = frozenset()  # store postgres: the names of the database Variable's items
    schema: object = None  # steps/migrate/schema.SchemaFacts: the database against the target's image (None: not read)
    restore: bool = False  # --restore
    backups: dict = field(default_factory=dict)  # --restore: {backup name: its recorded schema revision}


def choose(current: dict, versions: list[dict], to) -> dict:
    """The job version to go back to: ``to``, or the newest stable one before the current."""
    by_number = {v["Version"]: v for v in versions}
    if to is not None:
        try:
            wanted = int(str(to).lstrip("v"))
        except ValueError:
            raise UserError(f"--to {to!r} is not a job version number", hint="see `inv status` for versions",
                            code=ExitCode.BAD_ARGUMENT) from None
        if wanted not in by_number:
            known = ", ".join(str(v) for v in sorted(by_number))
            raise UserError(f"job {current['ID']} has no version {wanted} (versions: {known})", code=ExitCode.BAD_ARGUMENT)
        if wanted == current["Version"]:
            raise UserError(f"job version {wanted} is the current version: nothing to roll back", code=ExitCode.BAD_ARGUMENT)
        if by_number[wanted].get("Stop"):
            raise UserError(f"job version {wanted} is a stopped copy of the job (`nomad job stop`, `inv "
                            "restore`): going back to it would stop the job",
                            hint="pick a version that runs (see `inv status`)", code=ExitCode.BAD_ARGUMENT)
        return by_number[wanted]
    # A stop stores a copy of the job as a new version, Stable flag included (fsm.go): never go back to it.
    stable = [v for v in versions if v.get("Stable") and not v.get("Stop") and v["Version"] < current["Version"]]
    if not stable:
        raise UserError(f"job {current['ID']} has no stable version before version {current['Version']}",
                        hint="pick one with --to VERSION (see `inv status`)", code=ExitCode.BAD_ARGUMENT)
    return max(stable, key=lambda v: v["Version"])


def _same_specification(settings, n, target: dict) -> bool:
    """Nomad's own answer: a plan of the target version against the current job changes nothing (a
    revert to it would register nothing)."""
    job = {k: v for k, v in target.items() if k not in ("Stable", "Version", "Status", "StatusDescription")}
    plan = nomad_api.call(settings, f"planning job version {target['Version']}", n.job.plan_job,
                          settings.job_name, {"Job": job}, diff=True)
    return (plan.get("Diff") or {}).get("Type") == "None"


def read_facts(settings, n, to=None, restore: bool = False, dry_run: bool = False) -> RollbackFacts:
    """The job, its versions, the version to go back to (``to``, or the one chosen) and whether it has
    the current specification (Nomad plans only that one: the choice is refused first when it cannot
    be made); the schema of the target's image against the database's, and with ``restore`` the
    backups' recorded schema revisions."""
    current = jobfile.current(settings, n)
    if current is None:
        return RollbackFacts(None, restore=restore)
    versions = nomad_api.call(settings, "listing job versions", n.job.get_versions, settings.job_name)
    facts = RollbackFacts(current, (versions or {}).get("Versions") or [], restore=restore)
    target = facts.target = choose(current, facts.versions, to)
    if _same_specification(settings, n, target):
        facts.same_specification.add(target["Version"])
        return facts
    if database_variable.registered_revision(target):  # it reads its database URL from the Variable
        facts.variable_items = frozenset((database_variable.fetch(settings, n) or {}).get("Items") or {})
    _read_schema(settings, facts, dry_run)
    return facts


def _read_schema(settings, facts: RollbackFacts, dry_run: bool) -> None:
    """The target image's chain (its registry labels) against the database's revision; the backups'
    recorded revisions with --restore. What cannot be read is said and rollback goes on as before."""
    from ..adapters import registry, ssh
    from ..core import console
    from ..core.schema_chain import chain_of_labels
    from ..steps.migrate import schema
    from ..steps.store import revision as revisions

    version = jobfile.version_of(jobfile.image_of(facts.target))
    chain = None
    if version is not None:
        try:
            chain = chain_of_labels(registry.labels(settings, f"v{version}"))
        except UserError as exc:
            console.warn(f"cannot read the labels of v{version} ({exc.message}): its schema is not compared")
    if chain is None and not facts.restore:
        return  # an image without labels (or not ours): rollback as before
    host = None
    try:
        if database.kind(settings) == "sqlite" or facts.restore:
            try:
                host = ssh.connect(settings)
            except UserError as exc:
                if facts.restore:  # --restore needs the host (its backups)
                    raise
                console.warn(f"schema not compared ({exc.message}): rolling back as before")
                return
        read = revisions.read_db_revision(settings, host=host, make_env=not dry_run)
        facts.schema = schema.facts(read.revision, chain, read.unreadable)
        if facts.schema.kind == schema.UNKNOWN and chain is not None:
            console.warn(f"schema not compared: {facts.schema.why}")
        if facts.restore:
            facts.backups = revisions.backup_schemas(host, settings.backups_path)
    finally:
        if host is not None:
            host.close()


def make_plan(settings, facts: RollbackFacts) -> Plan:
    """The revert to the chosen version, or why not (UserError: no job; an empty plan: the same
    specification). Pure."""
    current, target = facts.current, facts.target
    if current is None:
        raise UserError(f"job {settings.job_name} is not registered in namespace "
                        f"{settings.nomad_namespace or 'default'}: nothing to roll back")
    plan = Plan(f"rollback job {settings.job_name}")
    if target["Version"] in facts.same_specification:
        plan.reason = (f"job version {target['Version']} has the same specification as the current version "
                       f"{current['Version']} ({jobfile.image_of(current)}): nothing to roll back")
        return plan
    detail = (f"version {current['Version']} ({jobfile.image_of(current)}) → version {target['Version']} "
              f"({jobfile.image_of(target)})")
    revision, now = database_variable.registered_revision(target), database_variable.registered_revision(current)
    restoring = _refuse_schema(settings, facts)
    if revision and not database_variable.holds_revision(facts.variable_items, revision):
        raise UserError(f"job version {target['Version']} reads its database URL at revision {revision}, which "
                        f"{jobfile.database_variable(settings)} no longer holds: its tasks would stop at start; "
                        "nothing was reverted",
                        hint="go back to a newer version (`inv rollback --to N`), or `inv deploy` the image you want")
    if revision and revision != now:
        detail += (f", with the database URL it ran with (revision {revision})"
                   if database_variable.item_for(revision) in facts.variable_items
                   else f", with the admin password and secret key it ran with (revision {revision})")
    if restoring is not None:
        name, backup_revision = restoring
        plan.title += f": schema {facts.schema.db_revision} -> {backup_revision} (restore the backup taken before the migration)"
        plan.add("stop", f"job {settings.job_name}", f"version {current['Version']} ({jobfile.image_of(current)}): "
                 "nothing serves the database while it is replaced", op=Stop(local=False))
        plan.add("restore", f"backup {name}", f"schema {backup_revision}, in place of the database at "
                 f"{facts.schema.db_revision} ("
                 + ("in one transaction" if database.kind(settings) == "postgres" else "kept aside") + ")",
                 op=Restore(name, backup_revision))
        plan.add("register", f"job {settings.job_name}", detail,
                 op=Register(target["Version"], current["Version"]))
        return plan
    plan.add("revert", f"job {settings.job_name}", detail, op=Revert(target["Version"], current["Version"]))
    return plan


def _refuse_schema(settings, facts: RollbackFacts):
    """(backup name, its revision) to restore with --restore; None: a plain revert. A target whose MLflow cannot
    serve the database (its chain lacks the database's revision: a newer MLflow migrated it) is refused
    unless --restore, and --restore without such a target or without a backup it can serve. Pure."""
    from ..steps.backup.names import backup_sort_key
    from ..steps.migrate import schema as schemas

    schema, target = facts.schema, facts.target
    number = target["Version"]
    older = schema is not None and schema.kind == schemas.NEWER
    if not older:
        if facts.restore:
            now = f"at schema {schema.db_revision}" if schema is not None and schema.db_revision else "as it is"
            why = ("its image has no schema labels" if schema is None or schema.image_head is None
                   else f"its MLflow {schema.image_mlflow} serves the database {now}")
            raise UserError(f"--restore: job version {number} needs no restore ({why}); nothing was changed",
                            hint=f"`inv rollback --to {number}` reverts the job alone; `inv restore --backup NAME` "
                                 "puts back a backup", code=ExitCode.BAD_ARGUMENT)
        return None
    mlflow = f"MLflow {schema.image_mlflow}" if schema.image_mlflow else "its MLflow"
    if not facts.restore:
        raise UserError(f"job version {number} runs {jobfile.image_of(target)} ({mlflow}, schema head "
                        f"{schema.image_head}), which cannot serve the database at schema revision "
                        f"{schema.db_revision} (a newer MLflow migrated it); nothing was changed",
                        hint=f"`inv rollback --to {number} --restore` stops the job, puts back the backup taken "
                             f"before the migration and registers version {number}", code=ExitCode.STORE_REFUSED)
    fits = [name for name, revision in facts.backups.items() if revision in schema.chain and backup_sort_key(name)]
    if not fits:
        raise UserError(f"--restore: no backup in {settings.backups_path} records a schema revision {mlflow} of job "
                        f"version {number} can serve (schema head {schema.image_head}); nothing was changed",
                        hint="deploy records each backup's schema revision in {backup}.schema beside it "
                             "(backups_path); `inv restore --backup NAME` then `inv rollback --to "
                             f"{number}` does it by hand", code=ExitCode.STORE_REFUSED)
    name = max(fits, key=backup_sort_key)
    return name, facts.backups[name]


def rollback(settings, to=None, dry_run: bool = False, restore: bool = False):
    """`inv rollback` through the runner, under the deploy lock (a dry run only says who holds it): the
    plan on a dry run; None when there is nothing to roll back; else the followed outcome."""
    from ..steps import runner

    n = nomad_api.client(settings)
    applying = Apply(settings, n)
    def planned(facts):
        applying.plan = make_plan(settings, facts)  # --restore: the backup its stop checks first
        return applying.plan

    step = runner.Step("rollback", read=lambda: read_facts(settings, n, to, restore=restore, dry_run=dry_run),
                       plan=planned, apply_one=applying.apply_one)
    what = f"rollback{' --to ' + str(to) if to is not None else ''}{' --restore' if restore else ''}"
    outcome = runner.run([step], dry_run=dry_run, lock=runner.Lock(settings, what), inside=applying.paused)
    plan = outcome.plans["rollback"]
    if plan.empty:
        return None
    return applying.outcome if applying.outcome is not None else plan


class Apply:
    """The revert on Nomad client ``n``; ``outcome`` is the followed deployment's (None before)."""

    def __init__(self, settings, n):
        self.settings, self.n = settings, n
        self.outcome = None
        self.plan: Plan | None = None  # the plan applied (--restore: the stop checks its backup first)
        self.stopped_job: dict | None = None  # --restore: the job as it was before the stop, to start again
        from ..steps.job import periodic

        self.paused = periodic.Paused(settings, n)  # never during a release: the periodic jobs, until the end

    def apply_one(self, change) -> str:
        """Revert (check-and-set on the current version), then follow the deployment it starts; with
        --restore: stop, restore, register (the revert of the stopped job)."""
        kind = getattr(change.op, "kind", "revert")
        self.paused.now()
        if kind == "stop":
            from ..steps import backup as backups
            from ..steps.job import lifecycle

            for planned in (self.plan.changes if self.plan is not None else []):
                if getattr(planned.op, "kind", "") == "restore":  # a backup it would refuse: refused before the stop
                    backups.check_now(self.settings, planned.op.name)
            self.stopped_job = lifecycle.stop(self.settings, self.n)
            return f"stopped job {self.settings.job_name}"
        if kind == "restore":
            try:
                return self._restore(change.op)
            except UserError as exc:  # after the stop: the job started again as it was, and said
                raise self._start_again(f"restoring {change.op.name} failed: {exc.message}", exc) from None
        if kind == "register":
            stopped = jobfile.current(self.settings, self.n)
            return self._revert(Revert(change.op.version, stopped["Version"] if stopped else change.op.prior))
        return self._revert(change.op)

    def _restore(self, op: Restore) -> str:
        """The backup in the database's place, both stores (steps/backup's restore_now, as deploy's failed
        migration does: SQLite's current file kept aside, PostgreSQL's dump restored in one transaction); the job
        stays stopped until the register."""
        from ..steps import backup as backups

        aside = backups.restore_now(self.settings, op.name)
        kept = f"; the database it replaced is kept as {aside}" if aside else " (in one transaction)"
        return f"restored {op.name} (schema {op.revision}){kept}"

    def _start_again(self, what: str, cause: UserError) -> UserError:
        """--restore failed after the stop (the database as it was: SQLite's file is swapped last, PostgreSQL's
        restore is one transaction): the job started again as it was before the stop; the error says both."""
        from ..core import console
        from ..steps.job import lifecycle

        settings, job = self.settings, self.stopped_job
        if job is None:
            return cause
        old = jobfile.version_of(jobfile.image_of(job)) or "the previous version"
        if not getattr(cause, "database_unchanged", True):  # steps/backup/restore.restore_now: not as it was
            return UserError(f"{what}; the job stays stopped: the database is not as it was before the restore",
                             hint=f"`inv restore --backup {self._restoring()}` puts the backup in place, then "
                                  f"`inv rollback --to {self._target()}` starts that version",
                             code=ExitCode.DEPLOY_FAILED)
        console.step(f"starting job {settings.job_name} again with v{old}")
        try:
            lifecycle.start_running(settings, self.n, job, f"v{old}")
        except UserError as again:
            return UserError(f"{what}; the job was stopped, and starting v{old} again failed too: {again.message}",
                             hint=f"{cause.hint + '; ' if cause.hint else ''}`inv rollback --to {job.get('Version')}` "
                                  "starts it again; `inv status` shows it", code=ExitCode.DEPLOY_FAILED)
        return UserError(f"{what}; nothing was rolled back: the job was started again as it was (v{old} runs)",
                         hint=cause.hint, code=cause.code)

    def _restoring(self) -> str:
        ops = [c.op for c in (self.plan.changes if self.plan is not None else [])]
        return next((op.name for op in ops if getattr(op, "kind", "") == "restore"), "NAME")

    def _target(self) -> str:
        ops = [c.op for c in (self.plan.changes if self.plan is not None else [])]
        return next((str(op.version) for op in ops if getattr(op, "kind", "") == "register"), "N")

    def _revert(self, op: Revert) -> str:
        import nomad.api.exceptions as nex

        settings, n = self.settings, self.n
        try:
            response = n.job.revert_job(settings.job_name, op.version, enforce_prior_version=op.prior)
        except nex.BaseNomadException as exc:
            code, text = nomad_api.status_and_text(exc)
            if "enforcing version" in text:
                raise UserError(f"job {settings.job_name} changed while rolling back ({text}); nothing was "
                                "reverted", hint="run `inv rollback` again to see the versions now") from None
            raise nomad_api.to_user_error(exc, settings, f"reverting job {settings.job_name}") from None
        outcome = self.outcome = follower.after_submit(settings, n, response, f"job version {op.version}")
        return (f"rolled back to job version {op.version} ({outcome.image}); now job version "
                f"{outcome.job_version}")
