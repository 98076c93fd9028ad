"""`inv deploy`: configure the host, build and push v{version}, plan, register (check-and-set), follow.

0. Before any change: MSH_DATABASE_URL (store postgres), the MLflow store on the host (flows/takeover.py:
   a setup the original recipe left is taken over after the push and before the register; a database that
   cannot be, corrupt or of a newer schema, is refused) and, with --skip-build, the registry's tag.
1. host: configure-host's plan (steps/host/configure.py), unless skip_host.
2. image: build and push (steps/image/publish.py's plan), unless skip_build; the registry must have the tag. The
   image is built for the clients' platform (steps/image/platform.py), and refused (exit 10) before the push,
   and again before the register, when no client the job can go to runs its architecture (cluster.py);
   the job's constraint on ${attr.cpu.arch} gets the registry image's architectures.
3. takeover: the original recipe's setup taken over (stop, kept copy, owners, artifact locations).
4. store: the agent parses the job file with the variables (/v1/jobs/parse) and plans it with a diff
   (shown); from that plan: the database backed up (a running version changes), the PostgreSQL URL
   written to the job's Nomad Variable (store postgres). The service goes into the catalogue the
   service_provider setting names, or the one the clients have (service_provider.py); a move is warned of.
5. job: register with EnforceIndex and the plan's JobModifyIndex (a change made meanwhile is refused),
   follow the evaluation and deployment to their end (follow.py; exit codes 10, 11, 12; on failure the
   failing allocations' task events and stderr), check that the service answers an MLflow API call
   through the deploy URL (deploy_url, http://{domain}/ by default). Nothing changed: "already deployed".

Each step is read, planned and applied in turn by the runner (runner.py), which holds the deploy lock for
the whole sequence; the deploy's job part (deploy_plan.py's ``make_plan``, pure) is made once, from
Nomad's plan, and split between the store and job steps. A dry run is every step in its dry form; a step
that cannot read its part says so and the later steps are still shown. `inv release` runs the same steps
after its own (``Deploy.steps``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..core import poll
from ..core.errors import INTERRUPTED, ExitCode, UserError, first_line
from ..core.plan import QUIET, Plan
from ..core.version import Version
from ..steps.image import platform as platform_mod
from ..steps.job import cluster
from ..steps.job import follow as follower
from ..steps.job import jobfile, plan_view
from ..adapters import nomad_api
from .deploy_plan import API_PATH, DeployFacts, JobFacts, deploy_url, make_plan

STORE = ("pause", "backup", "variable", "auth", "stop", "migrate")  # the store step's part of the deploy's plan
JOB = ("https", "register", "follow", "check")  # the job step's part


@dataclass
class DeployResult:
    status: str  # deployed, unchanged, dry-run
    image: str
    job_version: int | None = None
    deployment_id: str | None = None
    url: str | None = None
    diff: str = ""


def _version(version) -> Version:
    return version if isinstance(version, Version) else Version.parse(str(version), origin="version")


def deploy(settings, version, dry_run: bool = False, skip_host: bool = False, skip_build: bool = False,
           backup: bool = True, migrate: bool = False) -> DeployResult:
    """The whole deploy, its steps run by the runner under the deploy lock (a dry run only says who holds it).

    ``migrate``: `inv migrate`, where a store that cannot be taken over (no database) is an error;
    a deploy takes one over only when it finds one (flows/takeover.py)."""
    from ..steps import runner
    from ..steps.job import database_variable

    if not dry_run:  # a missing admin password (auth: basic): refused before the lock and any change
        database_variable.wanted_auth(settings)
    _warn_auth_off(settings)
    version = _version(version)
    what = f"{'migrate to' if migrate else 'deploy'} v{version.text}"
    steps = Deploy(settings, version, dry_run=dry_run, skip_host=skip_host, skip_build=skip_build, backup=backup,
                   migrate=migrate)
    with steps:
        runner.run(steps.steps(), dry_run=dry_run, lock=runner.Lock(settings, what))
    return steps.result


class Deploy:
    """A deploy's steps (``steps()``, for the runner) and what one step hands the next: the SSH connection,
    the takeover found, the client nodes, the image's platforms, Nomad's plan, the register's response.

    ``pushed``: `inv release` pushed v{version} just before these steps (on a dry run: would have)."""

    def __init__(self, settings, version, *, dry_run: bool = False, skip_host: bool = False,
                 skip_build: bool = False, backup: bool = True, migrate: bool = False, pushed: bool = False):
        self.settings, self.version, self.dry_run = settings, _version(version), dry_run
        self.skip_host, self.skip_build, self.backup, self.migrate = skip_host, skip_build, backup, migrate
        self.released = pushed
        self.image = settings.image_ref(self.version.text)
        self.n = None
        self.host = None  # the one SSH connection of this deploy (configure-host, the store, the backup)
        self.found = None  # flows/takeover.py's Takeover, or None
        self.early: dict[str, UserError] = {}  # a dry run: what a step could not read before any change
        self.local = None  # the built image's platform
        self.pushed = None  # the registry image's platforms
        self.nodes = None
        self.unreadable = ""  # a dry run: why the clients could not be read
        self._nodes_read = self._checked = False
        self.image_apply = None
        self.known: JobFacts | None = None
        self.job_error: UserError | None = None  # reading Nomad's plan of the job failed (the job step says it)
        self.refusal: UserError | None = None  # the job's plan refuses (the job step says it)
        self.plan: Plan | None = None  # the deploy's plan made from Nomad's, once
        self.job_spec: dict | None = None
        self.response: dict | None = None
        self.outcome = None
        self.url = None
        self.variable = None  # store postgres: database_variable.VariableFacts
        self.db_revision = None  # steps/store/revision.DbRevision: the database's, read before any change
        self.schema = None  # steps/migrate/schema.SchemaFacts: the database against the registry's image
        self.backup_result = None  # the backup deploy took (its path: the schema revision is recorded beside it)
        self.written = self.registered = self.taken_over = False
        self.takeover_apply = None  # takeover.Apply, made at the takeover's first change
        self.result = DeployResult("dry-run" if dry_run else "unchanged", self.image)
        self.stopped_job: dict | None = None  # a schema upgrade: the job as it was before the stop, to start again
        self.migrated = False  # the migration job ran and succeeded: going back needs the backup
        self.paused: dict = {}  # the periodic jobs stopped for the release (name -> the job before the stop)
        self.periodic_apply = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if exc[1] is not None and isinstance(exc[1], UserError):
            self._add_restore_hint(exc[1])
        if self.host is not None and not isinstance(self.host, UserError):
            self.host.close()
            self.host = None

    # --- the steps -------------------------------------------------------------------------------
    def steps(self):
        """host, image, takeover, store, job (runner.Step), each made when the ones before it ran."""
        from ..steps.runner import Step

        self._read_early()
        if self.early:  # a dry run: the first of them is where a real deploy stops, before any step
            first = next(iter(self.early.values()))
            yield Step("reads before any change", plan=lambda _: _raise(first))
        if not self.skip_host:
            yield Step("host", read=self._read_host, plan=self._plan_host, apply_one=self._apply_host)
        yield Step("image", read=self._read_image, plan=self._plan_image, apply_one=self._apply_image)
        if (self.found is not None and self.found.needed) or "takeover" in self.early:
            yield Step("takeover", read=self._read_takeover, plan=lambda found: found.plan,
                       apply_one=self._apply_takeover, show=False)  # shown when read, before any change
        yield Step("store", read=self._read_store, plan=self._plan_store, apply_one=self._apply_job_change)
        yield Step("job", read=self._read_job, plan=self._plan_job, apply_one=self._apply_job_change)
        yield Step("periodic jobs", read=self._read_periodic, plan=self._plan_periodic,
                   apply_one=self._apply_periodic)
        self._finish()

    def _early(self, step: str, read):
        """A read before any change: its refusal stops a real deploy here; a dry run keeps it for ``step``."""
        try:
            return read()
        except UserError as exc:
            if not self.dry_run:
                raise
            self.early.setdefault(step, exc)
            return None

    def _raise_early(self, step: str) -> None:
        if step in self.early:
            raise self.early[step]

    def _read_early(self) -> None:
        from ..steps.job import database_variable

        settings = self.settings
        self._early("store", lambda: database_variable.wanted(settings))  # MSH_DATABASE_URL, before any change
        self._early("store", lambda: database_variable.wanted_auth(settings))  # MSH_MLFLOW_ADMIN_PASSWORD, too
        self.n = nomad_api.client(settings)
        if not self.skip_host:
            self.found = self._early("takeover", self._read_store_on_host)
        else:
            self._early("job", lambda: _warn_not_ours(settings, self.n))
        if self.skip_build:  # the registry must have the tag: asked before any change
            self.pushed = self._early("image", lambda: _require_tag(settings, self.version,
                                                                    would_push=self.released and self.dry_run))
        self._early("schema", self._read_schema_early)

    # the schema: the database's revision against the image's chain (steps/migrate/schema.py)
    def _image_chain(self):
        """The image's chain from its labels: the registry's tag, else the engine's image, else (not built
        yet) this package's MLflow, which pins the same version as the image's lock. None: no labels."""
        from ..steps.image import publish

        return publish.image_schema(self.settings, self.version)

    def _read_db_revision(self):
        """The database's revision, read once (SQLite: the takeover's quick look, or over SSH; PostgreSQL:
        from here). A real deploy that cannot read it stops: it could not tell a migration from none."""
        from ..steps.store import revision as revisions

        if self.db_revision is None:
            from ..core import database

            host = store_facts = None
            if database.kind(self.settings) == "postgres":
                pass  # read from here, with MSH_DATABASE_URL: no SSH
            elif self.found is not None:
                store_facts = self.found.facts
            else:
                try:
                    host = self._connection()
                except UserError as exc:
                    # --skip-host: configure-host did not run, so an unreachable host is not an error of its own
                    # here; the schema is unknown, said with the plan (the backup, if any, still needs the host)
                    self.db_revision = revisions.DbRevision(unreadable=exc.message, blocking=not self.skip_host)
                    host = False
            if host is not False:
                self.db_revision = revisions.read_db_revision(self.settings, host=host, store_facts=store_facts,
                                                           make_env=not self.dry_run)
        read = self.db_revision
        if read.unreadable and read.blocking and not self.dry_run:
            raise UserError(f"cannot read the database's schema revision: {read.unreadable}; nothing was changed",
                            hint="deploy compares it with the image's MLflow before any change (a migration is "
                                 "backed up and run once): make the database reachable from here and deploy again")
        return read

    def _read_schema_early(self):
        """A database the image cannot serve (newer) or --no-backup with a migration: refused before any change
        (the image's chain as known now: the registry's or the engine's, else this package's MLflow)."""
        from ..steps.migrate import schema
        from .deploy_plan import refuse_schema

        if self.found is not None and self.found.needed:
            return None  # the takeover upgrades the store its own way (its kept copy, the entrypoint)
        chain = self._image_chain()
        if chain is None:
            return None  # an image without labels: unknown, said with the plan
        read = self._read_db_revision()
        refuse_schema(self.version.text, schema.facts(read.revision, chain, read.unreadable), self.backup)
        return None

    def _read_schema(self, job_changed: bool):
        """SchemaFacts for the plan, from the registry's image (after the push) and the database's revision."""
        from ..core import console, database
        from ..steps.migrate import schema

        if self.found is not None and self.found.needed:
            return None
        chain = self._image_chain()
        facts = schema.facts(None, None) if chain is None else None
        if facts is None:
            read = self._read_db_revision()
            facts = schema.facts(read.revision, chain, read.unreadable)
        if facts.kind == schema.UNKNOWN and job_changed:
            if self.dry_run and chain is not None and database.kind(self.settings) == "postgres":
                # unread only because a dry run makes nothing (the laptop's MLflow environment): the real run reads it
                console.warn(f"schema unknown: {facts.why}; this dry run shows the deploy as before, but the real "
                             "deploy reads the schema (making that environment first) and may then plan a backup, "
                             "a stop and a migration")
            else:
                console.warn(f"schema unknown: {facts.why}; deploying as before (the image migrates the database "
                             "when it starts)")
        return facts

    def _connection(self):
        from ..adapters import ssh

        if isinstance(self.host, UserError):  # a dry run: connecting failed already (said once per step)
            raise self.host
        if self.host is None:
            try:
                self.host = ssh.connect(self.settings)
            except UserError as exc:
                self.host = exc
                raise
        return self.host

    def _read_store_on_host(self):
        """The store on the host and the registered job: a takeover to do, or None (refusals first)."""
        from ..core import console
        from . import takeover
        from ..steps.migrate.host_store import NoPython

        settings = self.settings
        console.step(f"reading the MLflow store on {settings.host}")
        try:
            found = takeover.read(settings, self._connection(), self.n, require=self.migrate)
        except NoPython as exc:
            if self.migrate:
                raise
            console.warn(f"{exc.message}: not checked for a setup to take over (`inv migrate` needs it)")
            return None
        if found.needed:  # said before any change: a refusal that follows (the registry's tag) comes after it
            from ..core.plan import show

            show(found.plan, dry_run=self.dry_run)
        elif self.migrate:
            console.done(f"nothing to migrate: {found.reason}")
        return found

    # host: configure-host's read_facts, make_plan and Apply over the deploy's connection
    def _read_host(self):
        from ..core import console
        from ..steps.host import configure

        settings = self.settings
        configure.wanted_folders(settings)  # a bad image_user or folder_mode is refused before connecting
        jobfile.read_source(settings)  # a missing job file: its one message
        job_content = configure.job_source(settings).read_bytes()  # the bytes configure-host writes to the host
        console.step(f"reading {settings.ssh_user}@{settings.host}:{settings.ssh_port}")
        return configure.read_facts(self._connection(), settings), job_content

    def _plan_host(self, read) -> Plan:
        from ..steps.host import configure

        facts, job_content = read
        return configure.make_plan(self.settings, facts, job_content, host=self.settings.host)

    def _apply_host(self, change):
        from ..steps.host import configure

        return configure.Apply(self._connection(), self.settings).apply_one(change)

    # image: the build and push (steps/image/publish.py), or with --skip-build the registry's tag
    def read_nodes(self):
        """The client nodes, read once after configure-host (its restart changes what they offer); a dry run
        that cannot read them goes on without (the platform is then this machine's)."""
        if not self._nodes_read:
            try:
                self.nodes = _clients(self.settings, self.n)
            except UserError as exc:
                if not self.dry_run:
                    raise
                self.unreadable = exc.message
            self._nodes_read = True
        return self.nodes

    def _read_image(self):
        from ..core import console
        from ..steps.image import publish

        self._raise_early("image")
        if self.skip_build:
            return None
        settings, version = self.settings, self.version
        nodes = self.read_nodes()
        choice = platform_mod.wanted(settings, nodes=nodes, unreadable=self.unreadable)
        facts = publish.read_facts(settings, version, version.tag, dry_run=self.dry_run)
        for warning in publish.warnings(facts, facts.ref):
            console.warn(warning)
        return facts, choice

    def _plan_image(self, read) -> Plan:
        """The image's plan (built unless the engine has it for the wanted platform, pushed unless the registry's
        tag already is this image); one no client the job can go to runs is refused before the push."""
        from ..steps.image import publish

        if read is None:  # --skip-build
            where = "pushed by the release" if self.released else "--skip-build: the registry has it"
            return Plan(f"image {self.image}", reason=f"no build: {where}")
        facts, choice = read
        plan = publish.make_release_plan(self.settings, facts, self.version, choice, dry_run=self.dry_run)
        self.local = publish.release_platform(facts, choice)
        if self.nodes is not None:
            _refuse_other_arch(self.settings, facts.ref, [self.local], self.nodes, self.dry_run,
                               "refusing before the push; nothing was pushed or registered")
        return plan

    def _apply_image(self, change):
        from ..steps.image import publish

        if self.image_apply is None:
            self.image_apply = publish.Apply(self.settings, self.version)
        return self.image_apply.apply_one(change)

    @property
    def platforms(self):
        """What the registry holds (a dry run: what it would hold after the push)."""
        local = self.local
        return [local] if self.dry_run and local else self.pushed or ([local] if local else None)

    def image_checked(self) -> None:
        """The registry's image against the clients, once, before the takeover and the register (an image
        just built was checked before its push)."""
        if self._checked:
            return
        self._checked = True
        if not self.skip_build:
            self.pushed = _require_tag(self.settings, self.version, would_push=self.dry_run)
        self.read_nodes()
        platforms, nodes = self.platforms, self.nodes
        if platforms and nodes is not None and platforms != [self.local]:
            _refuse_other_arch(self.settings, self.image, platforms, nodes, self.dry_run,
                               "refusing before the register; nothing was registered")

    # takeover: now that the image is in the registry (the job is stopped there)
    def _read_takeover(self):
        self._raise_early("takeover")
        self.image_checked()
        return self.found

    def _apply_takeover(self, change):
        """One change of the takeover's plan (its Apply carries out each change's op, in the plan's order)."""
        from ..core import console
        from . import takeover

        if self.takeover_apply is None:
            self.takeover_apply = takeover.Apply(self.settings, self.host, self.n, self.found)
        said = self.takeover_apply.apply_one(change)
        self.taken_over = True
        if said is not QUIET:  # the step's plan was shown when read: each change is said as it is made
            console.done(said if isinstance(said, str) else change.describe())
        return QUIET

    # store and job: Nomad's plan of the job, read once; the deploy's plan made from it once
    def _read_store(self):
        self._raise_early("store")
        try:
            self._read_nomad_plan()
        except UserError as exc:
            self.job_error = exc  # said by the job step (a real run stops there, before any change)
        return self.plan

    def _plan_store(self, plan: Plan | None) -> Plan:
        from ..core import database

        part = Plan("database" if database.kind(self.settings) == "sqlite" else f"database ({database.kind(self.settings)})")
        if plan is None:
            part.reason = "decided from Nomad's plan of the job (see the job step)"
            return part
        part.changes = [change for change in plan if change.op.kind in STORE]
        if plan.notes:  # a schema upgrade: its line heads the database's part
            part.title += ": " + "; ".join(plan.notes)
        part.reason = "no backup needed" + ("" if self.variable is None else ", the database URL is the Variable's")
        return part

    def _read_job(self):
        self._raise_early("job")
        if self.job_error is not None:
            raise self.job_error
        return self.plan

    def _plan_job(self, plan: Plan) -> Plan:
        if self.refusal is not None:
            raise self.refusal
        part = Plan(f"job {self.settings.job_name}", reason=plan.reason)
        part.changes = [replace(change, diff="") for change in plan if change.op.kind in JOB]  # the diff: shown
        return part

    def _read_nomad_plan(self) -> None:
        """Nomad's plan of the job as parsed now (its diff shown), and the deploy's plan made from it."""
        from ..core import console
        from ..steps.job import database_variable

        self.image_checked()
        settings, n, version, image = self.settings, self.n, self.version, self.image
        console.step(f"planning job {settings.job_name} with {image} on {nomad_api.address(settings)}")
        provider = _provider(settings, n, self.nodes, self.unreadable)
        platforms = self.platforms
        self.variable = database_variable.read(settings, n)  # store postgres: its revision is in the job
        self.job_spec = jobfile.parse(settings, n, version.text,
                                      arch=platform_mod.archs(platforms) if platforms else None,
                                      provider=provider.value,
                                      database_revision=self.variable.job_revision if self.variable else None)
        current = jobfile.current(settings, n)
        _warn_provider_move(current, provider)
        self.job_spec = keep_revert_off(current, self.job_spec)
        answer = nomad_api.call(settings, f"planning job {settings.job_name}", n.job.plan_job, settings.job_name,
                                {"Job": self.job_spec}, diff=True)
        diff = answer.get("Diff")
        running = current and not current.get("Stop")
        known = JobFacts(job_version=current.get("Version") if current else None,
                         running_version=jobfile.version_of(jobfile.image_of(current)) if running else None,
                         stopped_version=jobfile.version_of(jobfile.image_of(current)) if current and not running
                         else None,
                         changed=bool(diff) and diff.get("Type") != "None",
                         modify_index=answer.get("JobModifyIndex", 0),
                         tls=jobfile.serves_https(current) if current else None)
        known.database = self.variable
        if known.changed:  # never during a release: the periodic jobs Nomad runs are stopped first
            from ..steps.job import periodic

            known.periodic = tuple(periodic.running(settings, n))
        if self.variable is not None:
            known.reads_revision = database_variable.registered_revision(self.job_spec)
        if not known.changed:
            known.latest = nomad_api.call(settings, "reading the latest deployment", n.job.get_deployment,
                                          settings.job_name)
        else:
            known.diff = plan_view.text(diff)
            console.err.print(f"[bold]job {settings.job_name}[/]: {'would change' if self.dry_run else 'changes'}")
            plan_view.show(diff)
            if answer.get("FailedTGAllocs"):
                known.placement = follower.placement_error(settings, answer["FailedTGAllocs"], registered=False,
                                                           n=n, job=self.job_spec)
                if self.dry_run:
                    console.warn(known.placement.message)
        self.known = known
        self.schema = self._read_schema(known.changed)
        facts = DeployFacts(version.text, image, skip_host=self.skip_host, skip_build=self.skip_build,
                            backup=self.backup, dry_run=self.dry_run, migrate=self.migrate,
                            takeover=len(self.found.plan) if self.found is not None and self.found.needed else 0,
                            takeover_copy=bool(self.found and self.found.backup_path),
                            registry_has_tag=True if self.skip_build else None, job=known, schema=self.schema)
        try:
            self.plan = make_plan(self.settings, facts)
        except UserError as exc:  # the job step refuses (a real run: before the store step changes anything)
            self.refusal = exc
            self.plan = Plan(f"deploy v{version.text}")

    def _apply_job_change(self, change):
        """One change of the store or job part: back up, write the URL, stop, migrate, register, follow, check."""
        try:
            said = self.apply_one(change)
        except BaseException as exc:
            self._resume_periodic()  # a failed release: the periodic jobs run again as they were
            if not isinstance(exc, UserError):
                raise
            if self.written:
                _say_where_the_url_is(self.settings, self.n, self.variable, exc, self.registered)
            if self.migrated:
                self._say_how_to_go_back(exc)
            raise
        if change.op.kind == "backup" and change.op.schema_from and getattr(self.backup_result, "path", ""):
            from ..steps.store import revision as revisions  # for `inv rollback --restore` (backup/names.py)

            revisions.record_backup_schema(self._connection(), self.backup_result.path, change.op.schema_from)
        self.written = self.written or change.op.kind == "variable"
        self.registered = self.registered or change.op.kind == "register"
        return said

    def apply_one(self, change):
        from ..core import console

        settings, version, op = self.settings, self.version, change.op
        if op.kind == "pause":  # never during a release: the periodic jobs stopped, their launches waited for
            from ..steps.job import periodic

            self.paused = periodic.pause(settings, self.n)
            return f"paused periodic job{'s' if len(self.paused) != 1 else ''} {', '.join(self.paused) or '(none ran)'}" \
                   " until the release is done"
        if op.kind == "variable":  # store postgres: the database's URL, for the job's template
            from ..steps.job import database_variable

            console.step(change.describe())  # the URL with its password as ****
            database_variable.write(settings, self.n, self.variable)
        elif op.kind in ("auth", "https"):  # said: the Variable's write and the register turn it on (or off)
            console.warn(change.detail)
        elif op.kind == "backup":  # before an image version change of a running job
            from ..steps import backup as backups

            self.backup_result = backups.before_deploy(settings, op.from_version, version.text, remote=self.host)
        elif op.kind == "stop":  # a schema upgrade: no MLflow serves the database while it migrates
            from ..steps.job import lifecycle

            _unchanged_since_the_plan(settings, self.n, self.plan)
            console.step(f"stopping job {settings.job_name} (no MLflow serves the database while it migrates)")
            try:
                self.stopped_job = lifecycle.stop(settings, self.n)
            except lifecycle.StillRunning as exc:  # nothing migrated: the job started again as it was
                raise self._start_again_after_the_stop(exc) from None
        elif op.kind == "migrate":
            return self._migrate(op)
        elif op.kind == "register":  # check-and-set against the plan (after a stop: against the stopped job)
            index = op.modify_index if self.stopped_job is None else _modify_index_now(settings, self.n)
            spec = self.job_spec if op.auto_revert else without_auto_revert(self.job_spec)
            console.step(f"registering job {settings.job_name} (check-and-set at index {index})"
                         + ("" if op.auto_revert else ", no automatic revert"))
            self.response = register(settings, self.n, spec, index)
            if self.stopped_job is not None:  # the plan's job version was before deploy's own stop
                return f"register job {settings.job_name}: check-and-set at index {index}, no automatic revert" \
                    if not op.auto_revert else f"register job {settings.job_name}: check-and-set at index {index}"
        elif op.kind == "follow":
            if op.deployment_id:
                console.info(change.detail)
                self.outcome = follower.follow(settings, self.n, op.deployment_id, f"v{version.text}",
                                               poll.Deadline(int(settings.deploy_timeout)))
            else:
                self.outcome = follower.after_submit(settings, self.n, self.response, f"v{version.text}")
        elif op.kind == "check":
            self.url = check_service(settings)
        else:
            raise ValueError(f"unknown deploy step {op.kind}")
        return None

    # periodic jobs: the companions (steps/job/periodic.py) planned as the service job, registered after it
    def _read_periodic(self):
        from ..steps.job import periodic

        if "job" in self.early or self.job_error is not None or self.refusal is not None:
            return None  # the job step said why (a real run stops there)
        self.image_checked()
        platforms = self.platforms
        try:
            more, without = {}, ()
            try:
                more = _pg_dump_image(self.settings)
            except UserError as exc:  # the service is deployed all the same; the nightly backup waits for the setting
                from ..core import console

                console.warn(f"the nightly backup is left as it is: {exc.message} ({exc.hint})")
                without = (periodic.backup_id(self.settings),)
                left = {name: job for name, job in self.paused.items() if name in without}
                periodic.resume(self.settings, self.n, left)  # paused for the release: running again as it was
                self.paused = {name: job for name, job in self.paused.items() if name not in without}
            return periodic.read(self.settings, self.n, self.image,
                                 platform_mod.archs(platforms) if platforms else None, paused=tuple(self.paused),
                                 more=more, without=without)
        except BaseException:
            self._resume_periodic()  # they ran before this deploy: they run again as they were
            raise

    def _plan_periodic(self, facts) -> Plan:
        from ..steps.job import periodic

        if facts is None:
            return Plan("periodic jobs", reason="decided after the job step (see it)")
        return periodic.make_plan(self.settings, facts)

    def _apply_periodic(self, change):
        from ..steps.job import periodic

        if self.periodic_apply is None:
            self.periodic_apply = periodic.Apply(self.settings, self.n)
        try:
            said = self.periodic_apply.apply_one(change)
        except BaseException:
            self._resume_periodic()  # paused for the release (this one too): running again as they were
            raise
        self.paused.pop(change.op.name, None)
        return said

    def _resume_periodic(self) -> None:
        """The periodic jobs this deploy stopped, registered again as they were (after a failure of the release)."""
        if self.paused:
            from ..steps.job import periodic

            periodic.resume(self.settings, self.n, self.paused)
            self.paused = {}

    def _start_again_after_the_stop(self, exc) -> UserError:
        """The stop before a migration timed out (an allocation still running): nothing was migrated; the job
        started again as it was before the stop (steps/job/lifecycle.start); exit 1 saying both."""
        from ..core import console
        from ..steps.job import lifecycle

        settings = self.settings
        old = jobfile.version_of(jobfile.image_of(exc.job)) or "the previous version"
        what = f"{exc.message} (deploy_timeout {settings.deploy_timeout}s); nothing was migrated nor registered"
        console.step(f"starting job {settings.job_name} again with v{old}")
        try:
            lifecycle.start_running(settings, self.n, exc.job, f"v{old}")
        except UserError as again:
            return UserError(f"{what}; starting v{old} again failed too: {again.message}",
                             hint=f"check `nomad job status {settings.job_name}` (an allocation that does not stop: "
                                  "its node, the task's kill timeout), then "
                                  f"`inv rollback --to {exc.job.get('Version', 'N')}` starts the job again as it was",
                             code=ExitCode.FAILED)
        return UserError(f"{what}; the job was started again as it was (v{old} runs)",
                         hint=f"check `nomad job status {settings.job_name}` (an allocation that does not stop: its "
                              "node, the task's kill timeout), then deploy again", code=ExitCode.FAILED)

    # a schema upgrade: the migration as its own batch job; its failure puts the backup back
    def _migrate(self, op) -> str:
        from ..steps.job import batch, database_variable

        settings = self.settings
        schema = f"schema {op.schema_from} → {op.schema_to}" if op.schema_from or op.schema_to else "the schema"
        try:
            result = batch.run(settings, self.n, self.job_spec, self.image, url=database_variable.wanted(settings))
        except batch.StillRunning as exc:  # stopped, but not ended: putting the backup back could be overwritten
            exc.message = f"the migration of {schema} did not finish: {exc.message}"
            exc.hint = f"{exc.hint}: {self._by_hand(False)}"
            raise exc from None
        except UserError as exc:  # it could not run to its end (placement, the deadline)
            raise self._after_failed_migration(f"the migration of {schema} did not finish: {exc.message}",
                                               exc) from None
        except KeyboardInterrupt:  # Ctrl-C: undone as a failed migration is, then said as an interruption
            raise self._after_interrupted_migration(schema) from None
        if not result.ok:
            said = f"exit code {result.exit_code}" if result.exit_code is not None else "it never started"
            last = batch.failure_line(result.lines)
            raise self._after_failed_migration(
                f"the migration of {schema} failed ({said}{': ' + last if last else ''})", None)
        self.migrated = True
        return f"migrated {schema} (batch job {batch.job_id(settings)})"

    def _after_interrupted_migration(self, schema: str) -> UserError:
        """Ctrl-C during the migration: its job stopped and waited for, the backup put back, the old version started;
        exit 130 (as core/taskrun's "interrupted"), the line saying what was done."""
        from ..core import console
        from ..steps.job import batch

        settings = self.settings
        console.warn(f"interrupted: stopping the migration job {batch.job_id(settings)}, then putting the backup back")
        try:
            batch.stop_and_wait(settings, self.n, batch.job_id(settings), batch.kill_timeout(self.job_spec))
        except batch.StillRunning as exc:
            return UserError(f"interrupted during the migration of {schema}; {exc.message}",
                             hint=f"{exc.hint}: {self._by_hand(False)}", code=INTERRUPTED)
        error = self._after_failed_migration(f"interrupted during the migration of {schema}", None)
        error.code = INTERRUPTED
        return error

    def _after_failed_migration(self, what: str, cause: UserError | None) -> UserError:
        """The database put back from the backup just taken, the old version started again; the error: exit 12
        when both were done, else 11 (as "the revert failed too") with the commands that finish it by hand."""
        from ..core import console

        settings = self.settings
        try:
            put_back, restored = self._put_back_the_backup()
        except UserError as exc:
            put_back, restored = f"putting the backup back failed ({exc.message}): the old version was not started", False
        started, back = "", restored
        old = jobfile.version_of(jobfile.image_of(self.stopped_job)) if self.stopped_job is not None else None
        if self.stopped_job is not None and restored:
            from ..steps.job import lifecycle

            old = old or "the previous version"
            console.step(f"starting job {settings.job_name} again with v{old}")
            try:
                lifecycle.start_running(settings, self.n, self.stopped_job, f"v{old}")
                started = f"; v{old} runs again"
            except UserError as exc:
                started, back = f"; starting v{old} again failed too: {exc.message}", False
        hint = (cause.hint + "; " if cause is not None and cause.hint else "") \
            + f"`nomad alloc logs -stderr` of the batch job {settings.job_name}-migrate shows the migration's " \
              "output; nothing of the new version was registered"
        if not back:
            hint += "; " + self._by_hand(restored)
        return UserError(f"{what}; {put_back}{started}", hint=hint,
                         code=ExitCode.REVERTED if back else ExitCode.DEPLOY_FAILED)

    def _by_hand(self, restored: bool) -> str:
        """After a failed migration that could not be undone whole: the commands that finish it."""
        backup = self.backup_result
        name = backup.path.rsplit("/", 1)[-1] if backup is not None and getattr(backup, "path", "") else "NAME"
        back = self.known.job_version if self.known is not None else None
        steps = [] if restored else [f"`inv restore --backup {name}` puts the database back (a stopped job stays "
                                     "stopped)"]
        if self.stopped_job is not None:
            steps.append(f"`inv rollback --to {back if back is not None else 'N'}` starts the old version again")
        return "to finish by hand: " + ", then ".join(steps)

    def _put_back_the_backup(self) -> tuple[str, bool]:
        """The database as the backup before the migration holds it (steps/backup's restore_now, both stores):
        what was done, said in one clause, and whether the database is now as before the migration."""
        from ..core import console
        from ..steps import backup as backups

        backup = self.backup_result
        if backup is None or not getattr(backup, "path", ""):
            return "no backup was taken (no database before the migration): nothing put back", True
        name = backup.path.rsplit("/", 1)[-1]
        console.step(f"putting the backup {name} back in place of the migrated database")
        aside = backups.restore_now(self.settings, backup.path, remote=self._connection())
        kept = f" (the migrated one is kept as {aside.rsplit('/', 1)[-1]})" if aside else ""
        return f"the database is as the backup {name} left it{kept}", True

    def _say_how_to_go_back(self, exc: UserError) -> None:
        """A failure after the migration: the old version cannot read the new schema; the way back."""
        backup = self.backup_result
        name = backup.path.rsplit("/", 1)[-1] if backup is not None and getattr(backup, "path", "") else "NAME"
        if self.stopped_job is None:  # it was not running before this deploy (stopped, or none): nothing to revert to
            said = (f"the database was migrated: an older version cannot read it. To go back as it was before this "
                    f"deploy: `nomad job stop {self.settings.job_name}`, then `inv restore --backup {name}` (a stopped "
                    "job stays stopped)")
            exc.hint = "; ".join(h for h in (exc.hint, said) if h)
            return
        back = (self.known.job_version if self.known is not None else None)
        to = str(back) if back is not None else "N"
        said = (f"the database was migrated: an older version cannot read it. To go back, `inv rollback --to {to} "
                "--restore` "
                f"does both (the job stopped, the backup {name} restored, job version {to} registered); by hand: "
                f"`nomad job stop {self.settings.job_name}`, `inv restore --backup {name}` (a stopped job stays "
                f"stopped), `inv rollback --to {to}`")
        exc.hint = "; ".join(h for h in (exc.hint, said) if h)

    def _finish(self) -> None:
        """After the job step: the takeover's schema verified, the result and the last line."""
        from ..core import console

        known = self.known or JobFacts(job_version=None)
        if self.dry_run:
            console.err.print("[dim]dry run: nothing was registered[/]")
            self.result = DeployResult("dry-run", self.image, known.job_version, None, diff=known.diff)
            return
        if self.outcome is None:
            self.result = DeployResult("unchanged", self.image, known.job_version, (known.latest or {}).get("ID"))
            return
        if self.found is not None and self.found.needed:
            from . import takeover

            takeover.verify(self.settings, self.host, self.found)
        outcome, url = self.outcome, self.url
        console.done(f"deployed v{self.version.text}: job version {outcome.job_version}" + (f", {url}" if url else ""))
        self.result = DeployResult("deployed", self.image, outcome.job_version, outcome.deployment_id, url, known.diff)

    def _add_restore_hint(self, exc: UserError) -> None:
        """After a takeover, a failure names the kept copy of the original database (13: the job is healthy)."""
        found = self.found
        if found is None or not found.backup_path or not self.taken_over or exc.code == ExitCode.SERVICE_UNREACHABLE:
            return
        from . import takeover

        exc.hint = "; ".join(h for h in (exc.hint, takeover.restore_hint(found)) if h)


def _pg_dump_image(settings) -> dict:
    """store postgres, no pg_dump_image setting: the nightly backup's image, postgres:{the server's major} (read here,
    with the pg_dump backups use: steps/backup/postgres.py); {} otherwise."""
    from ..core import database
    from ..steps.backup import postgres as pg_backup

    if database.kind(settings) != "postgres" or str(settings.pg_dump_image or "").strip():
        return {}
    found = pg_backup.read_database(settings)
    if not found.server_major:
        raise UserError(f"cannot read the PostgreSQL server's version ({found.looked}): the nightly backup's image is "
                        "postgres:{its major}", hint="set pg_dump_image to an image with pg_dump of the server's major "
                                                     "version, or install the PostgreSQL client here")
    return {"pg_dump_image": f"postgres:{found.server_major}"}


def _warn_auth_off(settings) -> None:
    from ..core import auth, console

    if not auth.enabled(settings):
        console.warn(f"auth is none: anyone who reaches {deploy_url(settings)} may read, change and delete every "
                     "experiment and model (set auth: basic and export MSH_MLFLOW_ADMIN_PASSWORD to require logins)")


def _warn_not_ours(settings, n) -> None:
    """--skip-host does not read the store: say so when the running job looks like the original recipe's."""
    from ..core import console

    current = jobfile.current(settings, n)
    image = jobfile.image_of(current)
    if current and not current.get("Stop") and image and jobfile.version_of(image) is None:
        console.warn(f"job {settings.job_name} runs {image}, not a version of ours: `inv migrate` takes such a setup "
                     "over (--skip-host skipped reading its store)")


def _say_where_the_url_is(settings, n, variable, exc: UserError, registered: bool) -> None:
    """A failure after deploy wrote a new database URL: add to the hint which URL the tasks read now (nothing with
    SQLite: the Variable's auth secrets go back with the job version that reads them)."""
    from ..steps.job import database_variable

    if variable is None or variable.wanted is None:
        return
    if exc.code == ExitCode.REVERTED:  # the version Nomad went back to reads its own revision's item, if any
        try:
            back = database_variable.registered_revision(jobfile.current(settings, n))
        except UserError:
            back = None
        if back and back != variable.new_revision and database_variable.item_for(back) in variable.items_to_write():
            said = (f"the version Nomad went back to reads its own database URL (revision {back}) from "
                    f"{variable.path}; the new one stays there unused: fix MSH_DATABASE_URL and `inv deploy`")
        else:
            said = ("the version Nomad went back to reads the new database URL too: set MSH_DATABASE_URL to the "
                    "old URL and `inv deploy`")
    elif not registered:
        said = (f"{variable.path} already holds the new database URL, which the job does not read yet: `inv "
                "deploy` again rolls it out; to go back, set MSH_DATABASE_URL to the old URL and `inv deploy`")
    else:
        return
    exc.hint = ((exc.hint + "; ") if exc.hint else "") + said


def _clients(settings, n):
    """The client nodes of the job's datacenters (cluster.py); None when the token may not read them
    (node:read): then only the job's constraint guards the architecture."""
    from ..core import console

    try:
        return cluster.read(settings, n)
    except UserError as exc:
        if "token lacks permission" not in exc.message and "no token is set" not in exc.message:
            raise
        console.warn(f"cannot read the Nomad clients ({exc.message}): the image's architecture is checked by "
                     "the job's constraint only (give the token node:read)")
        return None


def _provider(settings, n, nodes, unreadable: str = ""):
    """Where the service is registered (service_provider.py), said on every deploy: the user's proxy reads
    one catalogue only."""
    from ..core import console
    from ..steps.job import service_provider

    choice = service_provider.wanted(settings, nodes=nodes, n=n,
                                     unreadable="" if nodes is not None else unreadable or "the token lacks node:read")
    console.info(f"service provider: {choice.value} ({choice.source})")
    return choice


def _warn_provider_move(current: dict | None, provider) -> None:
    """A deploy that moves the service to the other catalogue takes it away from a proxy reading the old one
    (Nomad still reports the job healthy): said before the plan."""
    from ..core import console
    from ..steps.job import service_provider

    running = service_provider.provider_of(current) if current and not current.get("Stop") else ""
    if running and running != provider.value:
        console.warn(f"the running job's service is in {running}'s catalogue; this deploy moves it to "
                     f"{provider.value}'s, where a proxy reading {running}'s (Traefik's "
                     f"{'consulCatalog' if running == 'consul' else 'nomad'} provider) no longer finds it; "
                     f"set service_provider={running} to keep it there")


def _refuse_other_arch(settings, image: str, image_platforms, nodes, dry_run: bool, refusing: str) -> None:
    """Exit 10 when no client the job can go to runs the image's platform (a dry run only warns)."""
    from ..core import console

    error = cluster.mismatch(image, image_platforms, nodes, settings, refusing)
    if error is None:
        return
    if not dry_run:
        raise error
    console.warn(error.message)


def _require_tag(settings, version: Version, would_push: bool):
    """The platforms of the registry's v{version} (None when a dry run would push it first)."""
    from ..steps.image import publish

    return publish.registry_platforms(settings, version, would_push)


def without_auto_revert(job: dict) -> dict:
    """The job with its update blocks' AutoRevert false (a release after a migration: Nomad must not go back
    to a version that cannot read the new schema)."""
    import copy

    job = copy.deepcopy(job)
    if job.get("Update"):
        job["Update"]["AutoRevert"] = False
    for group in job.get("TaskGroups") or []:
        if group.get("Update"):
            group["Update"]["AutoRevert"] = False
    return job


def keep_revert_off(current: dict | None, job: dict) -> dict:
    """The parsed ``job`` with auto-revert off when the registered job runs the same image with it off (the
    release that migrated the schema registered it so): deploying the same version again changes nothing.
    The next image's register has it on again."""
    groups = (current or {}).get("TaskGroups") or []
    off = groups and all((group.get("Update") or {}).get("AutoRevert") is False for group in groups)
    if off and jobfile.image_of(current) == jobfile.image_of(job):
        return without_auto_revert(job)
    return job


def _unchanged_since_the_plan(settings, n, plan) -> None:
    """Before deploy's own stop: the job as Nomad planned it (the register's check-and-set, done by hand, since
    the stop changes the job's index)."""
    planned = next((c.op.modify_index for c in plan or [] if getattr(c.op, "kind", "") == "register"), None)
    if planned is not None and _modify_index_now(settings, n) != int(planned or 0):
        raise UserError(f"job {settings.job_name} changed in Nomad after the plan; nothing was stopped or migrated",
                        hint="someone else deployed meanwhile: run `inv deploy` again to see the new plan",
                        code=ExitCode.FAILED)


def _modify_index_now(settings, n) -> int:
    """The job's JobModifyIndex now (after deploy's own stop: the register's check-and-set is against it)."""
    current = jobfile.current(settings, n) or {}
    return int(current.get("JobModifyIndex") or 0)


def register(settings, n, job: dict, modify_index: int) -> dict:
    """POST /v1/jobs with EnforceIndex: refused (not overwritten) when the job changed since the plan."""
    import nomad.api.exceptions as nex

    payload = {"Job": job, "EnforceIndex": True, "JobModifyIndex": int(modify_index or 0)}
    try:
        return n.jobs.register_job(payload)
    except nex.BaseNomadException as exc:
        code, text = nomad_api.status_and_text(exc)
        if "Enforcing job modify index" in text:
            raise UserError(f"job {settings.job_name} changed in Nomad after the plan ({text}); nothing was "
                            "registered", hint="someone else deployed meanwhile: run `inv deploy` again to see "
                                               "the new plan", code=ExitCode.FAILED) from None
        raise nomad_api.to_user_error(exc, settings, f"registering job {settings.job_name}") from None


def check_service(settings, timeout: float | None = None) -> str:
    """GET an MLflow API path through the URL users use (the proxy checks the Host header, MLflow too), as the
    admin when auth is on (core/auth.py), its certificate verified (adapters/mlflow_http.py): one that still does
    not verify at the end is exit 18."""
    import requests

    from ..adapters import mlflow_http
    from ..core import auth, console

    url = deploy_url(settings)
    target = url + API_PATH
    console.step(f"checking {target}")
    last = ""
    refused: list[UserError] = []  # the certificate's refusal, while it lasts (a resolver may be getting it)
    creds = auth.basic(settings)

    def answers() -> str | None:
        nonlocal last
        refused.clear()
        try:
            response = mlflow_http.get(settings, target, timeout=5, auth=creds)
            if response.status_code == 200 and "experiments" in response.text:
                return url
            last = f"HTTP {response.status_code}: {response.text.strip()[:120]}"
            if response.status_code == 401:
                last += (f" (MLflow refuses the admin {settings.admin_username}'s credentials: is "
                         "MSH_MLFLOW_ADMIN_PASSWORD the admin's password now? `inv users --set-password` changes it)"
                         if creds else " (MLflow asks for credentials: export MSH_MLFLOW_ADMIN_PASSWORD)")
        except requests.RequestException as exc:
            last = first_line(exc)
        except UserError as exc:
            if exc.code != ExitCode.CERTIFICATE:
                raise
            refused.append(exc)
        return None

    def unreachable(_):
        if refused:
            raise refused[0]
        raise UserError(f"Nomad reports the job healthy, but {target} does not answer as MLflow ({last})",
                        hint="check DNS (`inv dns --check`), the proxy's route for the domain, and "
                             "MLFLOW_SERVER_ALLOWED_HOSTS; set deploy_url to check another URL, or "
                             "deploy_check=false to skip", code=ExitCode.SERVICE_UNREACHABLE)

    return poll.until(answers, timeout if timeout is not None else int(settings.deploy_check_timeout), interval=1,
                      on_timeout=unreachable)


def _raise(error: UserError):
    raise error
