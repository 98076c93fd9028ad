"""`inv deploy` as data: the facts deploy reads, and the pure plan made from them (no I/O here).

A deploy is sequential: configure-host changes what Nomad can place, and the build decides the image's
platform, which the job's constraint takes. deploy.py runs it as steps (host, image, takeover, store, job,
each with its own plan); this module decides the store and job steps, from Nomad's plan read after the
host and image steps: the job (its diff, its check-and-set index, a placement failure), the registered job
(its version, the running image's version) and, when the plan changes nothing, the latest deployment.
``make_plan`` with ``job`` gives the whole deploy: the steps before it as one line each (their own plans
are configure-host's, the image's, the takeover's), then back up and write the database URL (the store
step), register, follow, check (the job step), or an empty job part with its reason ("already deployed:
v0.99 ..."), or a refusal (its deployment failed: exit 11). It is made once per deploy; ``job=None`` (not
read yet) gives the steps before it and one ``register`` line saying its part is decided after them.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import ExitCode, UserError
from ..core.plan import Plan

API_PATH = "api/2.0/mlflow/experiments/search?max_results=1"


@dataclass(frozen=True)
class Step:
    """One step of a deploy, as data (deploy.py's ``apply_one`` performs it)."""

    kind: str  # configure_host, build, takeover, job, pause, backup, variable, auth, stop, migrate, https, register,
    # follow, check
    from_version: str = ""  # backup: the running version
    to_version: str = ""  # backup: the version deployed
    modify_index: int = 0  # register: check-and-set against Nomad's plan
    deployment_id: str = ""  # follow: a deployment already running (else the one the register starts)
    schema_from: str = ""  # backup: the database's schema revision (recorded beside it); migrate: from
    schema_to: str = ""  # migrate: the image's head
    auto_revert: bool = True  # register: False after a migration (no revert onto a version that cannot read it)


@dataclass
class JobFacts:
    """Nomad's answer for the job as parsed now, and the registered job."""

    job_version: int | None = None  # the registered job's version (None: not registered)
    running_version: str | None = None  # v{version} of the running job's image (None: stopped, none, not ours)
    stopped_version: str | None = None  # v{version} of a registered but stopped job's image
    changed: bool = True  # Nomad's plan has a diff
    diff: str = ""  # the diff as text (plan_view.text)
    modify_index: int = 0  # the plan's JobModifyIndex
    placement: UserError | None = None  # Nomad cannot place the job (exit 10)
    latest: dict | None = None  # the latest deployment (ID, JobVersion, Status, StatusDescription): read when unchanged
    database: object = None  # store postgres or auth basic: database_variable.VariableFacts (None: nothing to write)
    reads_revision: str | None = None  # the revision whose items the parsed job reads (its Variable's)
    tls: bool | None = None  # the registered job's router serves TLS (None: not registered, or not read)
    periodic: tuple = ()  # the periodic jobs Nomad runs beside it (steps/job/periodic.py): paused for a release


@dataclass
class DeployFacts:
    version: str
    image: str
    skip_host: bool = False
    skip_build: bool = False
    backup: bool = True  # --no-backup turns it off
    dry_run: bool = False
    migrate: bool = False
    takeover: int = 0  # changes of the takeover found on the host (0: none, or not read with --skip-host)
    takeover_copy: bool = False  # the takeover keeps a copy of the database: deploy's own backup is not needed
    registry_has_tag: bool | None = None  # None: not asked (the build pushes it first)
    job: JobFacts | None = None  # None: read after the host and image steps
    schema: object = None  # steps/migrate/schema.SchemaFacts: the database against the image (None: not read)


def deploy_url(settings) -> str:
    return (settings.deploy_url or settings.service_url()).rstrip("/") + "/"


def already_deployed(version: str, job_version) -> str:
    return f"already deployed: v{version} (job version {job_version}); nothing registered"


def make_plan(settings, facts: DeployFacts) -> Plan:
    """The deploy's changes in the order they are applied; refusals as UserError. Pure."""
    from ..core import database
    from ..steps.job.jobfile import allocations

    v = facts.version
    name = settings.job_name
    count = allocations(settings)  # refuses a count the store cannot have (sqlite: 1) before any change
    plan = Plan(f"{'migrate to' if facts.migrate else 'deploy'} v{v}")
    if not facts.skip_host:
        plan.add("configure", f"host {settings.host}", "configure-host's own plan (shown when it runs)",
                 op=Step("configure_host"))
    if not facts.skip_build:
        plan.add("build", facts.image, "and push: the image's own plan (built unless the engine has it for the "
                                       "wanted platform, pushed unless the registry's tag already is this image)",
                 op=Step("build"))
    if facts.takeover:
        plan.add("take over", f"store on {settings.host}",
                 f"the original recipe's setup: {facts.takeover} change{'s' if facts.takeover != 1 else ''} "
                 "(its own plan), the job stopped there", op=Step("takeover"))
    job = facts.job
    if job is None:
        plan.add("register", f"job {name}", "after the host and image steps: Nomad's plan then decides the diff, "
                                           "the backup and the follow", op=Step("job"))
        return plan

    if job.database is not None and job.reads_revision != job.database.job_revision:
        raise UserError(f"the job file {settings.job_file} does not read the database's URL at its revision (the "
                        f"items database_url_, admin_password_, secret_key_${{var.database_revision}} of "
                        f"{job.database.path}), so a new value would not reach the tasks and a revert would not "
                        "bring the old one back; nothing was changed",
                        hint="take the template blocks of nomad/mlflow.nomad.hcl into your job file",
                        code=ExitCode.BAD_ARGUMENT)
    if not job.changed:
        latest = job.latest or {}
        same = latest and latest.get("JobVersion") == job.job_version
        if same and latest.get("Status") == "failed":
            raise UserError(f"v{v} is already registered (job version {job.job_version}), but its deployment "
                            f"failed: {latest.get('StatusDescription')}",
                            hint="`inv logs --stderr` shows why; deploy a fixed version, or `inv rollback`",
                            code=ExitCode.DEPLOY_FAILED)
        if same and latest.get("Status") == "running" and not facts.dry_run:
            plan.add("follow", f"deployment {latest['ID'][:8]}",
                     f"v{v} is registered (job version {job.job_version}) and its deployment {latest['ID'][:8]} "
                     "is still running: following it", op=Step("follow", deployment_id=latest["ID"]))
            _check(settings, plan)
            return plan
        plan.reason = already_deployed(v, job.job_version)
        return plan

    if job.placement is not None and not facts.dry_run:
        raise job.placement
    schema = _schema_change(settings, facts)
    if job.periodic:  # never during a release: no launch runs while the service job changes
        plan.add("pause", f"periodic job{'s' if len(job.periodic) != 1 else ''} {', '.join(job.periodic)}",
                 f"stopped for the release, a running launch waited for (at most {settings.deploy_timeout}s); "
                 "registered again after it", op=Step("pause"))
    revision = (facts.schema.db_revision or "") if facts.schema is not None and facts.schema.kind != "unknown" else ""
    if schema is not None:
        plan.notes.append(schema.line)
        label = job.running_version or (job.stopped_version or "")
        plan.add("back up", "database", f"schema {schema.db_revision}"
                 + (f", v{label}" if label else "") + f" → v{v}: checked, kept for `inv rollback --restore`",
                 op=Step("backup", from_version=label or v, to_version=v, schema_from=revision))
        if job.running_version:
            plan.add("stop", f"job {name}", f"v{job.running_version}: no MLflow serves the database while it "
                                            "migrates (kept as it is, to start again on a failure)",
                     op=Step("stop"))
    elif facts.backup and not facts.takeover_copy and job.running_version and job.running_version != v:
        plan.add("back up", "database", f"running v{job.running_version} → v{v}",
                 op=Step("backup", from_version=job.running_version, to_version=v, schema_from=revision))
    _variable(plan, job)
    if schema is not None:
        plan.add("migrate", "database", f"schema {schema.db_revision} → {schema.image_head} ({schema.behind} "
                                        f"migration{'s' if schema.behind != 1 else ''} of MLflow "
                                        f"{schema.image_mlflow or '?'}), once, as the batch job {name}-migrate",
                 op=Step("migrate", schema_from=schema.db_revision, schema_to=schema.image_head))
    _https(settings, plan, job)
    number = 0 if job.job_version is None else job.job_version + 1
    detail = f"job version {number} (check-and-set at index {job.modify_index})"
    if database.kind(settings) == "postgres":
        detail += f", {count} allocation{'s' if count != 1 else ''} replaced one at a time"
    if schema is not None:
        detail += ", no automatic revert"
    plan.add("register", f"job {name}", detail, diff=job.diff,
             op=Step("register", modify_index=job.modify_index, auto_revert=schema is None))
    plan.add("follow", f"job {name}", "its evaluation and deployment, to healthy", op=Step("follow"))
    _check(settings, plan)
    return plan


def _schema_change(settings, facts: DeployFacts):
    """The SchemaFacts of a release that migrates the database (kind upgrade), None when the plan is as before
    (same, empty, unknown; a takeover upgrades on its own: its kept copy, the entrypoint). ``refuse_schema``'s
    refusals first."""
    schema = facts.schema
    if schema is None or facts.takeover:
        return None
    refuse_schema(facts.version, schema, facts.backup)
    return schema if schema.kind == "upgrade" else None


def refuse_schema(version: str, schema, backup: bool) -> None:
    """A database the image cannot serve (kind newer: exit 15), or --no-backup with a migration (exit 2). Pure;
    deploy asks it before any change too, with the image's chain as known then."""
    if schema is None:
        return
    if schema.kind == "newer":
        written = f" ({schema.why})" if schema.why else ""
        raise UserError(f"the database is at schema revision {schema.db_revision}, which MLflow "
                        f"{schema.image_mlflow or '?'} of v{version} (schema head {schema.image_head}) does not know: "
                        f"a newer MLflow wrote it{written}; nothing was changed",
                        hint="deploy a version whose MLflow knows that revision (`inv deps --upgrade`, then `inv "
                             "release`), or put back a backup taken before that MLflow migrated it (in backups_path: "
                             "`inv restore --backup NAME`)", code=ExitCode.STORE_REFUSED)
    if schema.kind == "upgrade" and not backup:
        raise UserError(f"--no-backup refused: v{version} migrates the database (schema {schema.db_revision} -> "
                        f"{schema.image_head}), and the backup taken before is the only way back to the older MLflow; "
                        "nothing was changed", hint="deploy without --no-backup", code=ExitCode.BAD_ARGUMENT)


def _variable(plan: Plan, job: JobFacts) -> None:
    """Write the database's URL and the auth secrets into the job's Nomad Variable when they differ (store
    postgres, auth basic). Its new revision is in the job's template, so the job differs too: the register
    replaces the allocations."""
    from ..core import database

    variable = job.database
    if variable is None or not variable.differs:
        return
    shown = [f"database_url = {database.shown_url(variable.wanted)}"] if variable.wanted is not None else []
    shown += [f"{name} = ****" for name in variable.auth]
    plan.add("update" if variable.exists else "create", f"variable {variable.path}", ", ".join(shown),
             op=Step("variable", modify_index=variable.modify_index))
    if variable.auth_turns_on and job.job_version is not None:
        plan.add("turn on", "authentication", "MLflow's logins: clients now need credentials "
                 "(MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD; `inv users --add NAME` makes them)",
                 op=Step("auth"))


def _https(settings, plan: Plan, job: JobFacts) -> None:
    """A running deployment whose router turns TLS on (or off): clients must change their URL (said, not applied:
    the register changes the tags)."""
    if job.job_version is None or job.tls is None or bool(settings.https) == job.tls:
        return
    if settings.https:
        ca = f" and MLFLOW_TRACKING_SERVER_CERT_PATH={settings.ca_file}" if settings.ca_file else ""
        plain = ("redirected to https://" if settings.plain_http == "redirect" else "refused (404)")
        plan.add("turn on", "HTTPS", f"clients must now use https://{settings.domain}/ (MLFLOW_TRACKING_URI{ca}); "
                                     f"plain http:// is {plain}", op=Step("https"))
    else:
        plan.add("turn off", "HTTPS", f"clients must now use http://{settings.domain}/ (MLFLOW_TRACKING_URI)",
                 op=Step("https"))


def _check(settings, plan: Plan) -> None:
    if settings.deploy_check:
        plan.add("check", deploy_url(settings) + API_PATH, "answers as MLflow", op=Step("check"))
