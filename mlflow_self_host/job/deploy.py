"""`inv deploy`: configure the host, build and push v{version}, plan, register (check-and-set), follow.

0. Unless skip_host: the MLflow store on the host is read (migrate/takeover.py); a setup the original
   recipe left is taken over after the push and before the register (stop, kept copy, owners, artifact
   locations), and a database that cannot be (corrupt, newer schema) is refused before any change.
1. configure-host (unless skip_host), build and push (unless skip_build); the registry must have the tag.
   The image is built for the clients' platform (image/platform.py), and refused (exit 10) before the
   push, and again before the register, when no client the job can go to runs its architecture
   (cluster.py); the job's constraint on ${attr.cpu.arch} gets the registry image's architectures.
2. The agent parses the job file with the variables (/v1/jobs/parse) and plans it with a diff;
   nothing changed: "already deployed", nothing registered. The service goes into the catalogue the
   service_provider setting names, or the one the clients have (service_provider.py); a move is warned of.
3. Register with EnforceIndex and the plan's JobModifyIndex: a change made meanwhile is refused.
4. Follow the evaluation and deployment to their end (follow.py; exit codes 10, 11, 12).
5. On failure the failing allocations' task events and stderr are shown (follow.py).
6. The service must answer an MLflow API call through the deploy URL (http://{domain}/ by default).

Facts, then a plan, then its steps (deploy_plan.py: ``make_plan(settings, facts)`` is pure): the facts
before any change give the host and image steps; Nomad's plan, read after them, gives the rest (back up,
register, follow, check) or an empty job part with its reason. Each step shows its own plan as it runs
(configure-host's, the image's, Nomad's diff); a dry run runs them in their dry form and shows the
deploy's whole plan at the end.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .. import poll
from ..errors import ExitCode, UserError, first_line
from ..version import Version
from ..image import platform as platform_mod
from . import cluster
from . import follow as follower
from . import jobfile, nomad_api, plan_view
from .deploy_plan import API_PATH, JOB, DeployFacts, JobFacts, deploy_url, make_plan


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
    """The whole deploy under the deploy lock (lock.py; a dry run only says who holds it).

    ``migrate``: `inv migrate`, where a store that cannot be taken over (no database) is an error;
    a deploy takes one over only when it finds one (migrate/takeover.py)."""
    from . import lock

    version = _version(version)
    args = (settings, version, dry_run, skip_host, skip_build, backup, migrate)
    if dry_run:
        lock.check_free(settings)
        return _deploy(*args)
    with lock.hold(settings, f"{'migrate to' if migrate else 'deploy'} v{version.text}"):
        return _deploy(*args)


def _read_takeover(settings, n, dry_run: bool, migrate: bool):
    """0. The store on the host and the registered job: a takeover to do, or None (refusals first)."""
    from .. import console
    from ..host import ssh
    from ..migrate import takeover

    from ..migrate.store import NoPython

    console.step(f"reading the MLflow store on {settings.host}")
    host = ssh.connect(settings)
    try:
        found = takeover.read(settings, host, n, require=migrate)
    except NoPython as exc:
        if migrate:
            raise
        console.warn(f"{exc.message}: not checked for a setup to take over (`inv migrate` needs it)")
        return host, None
    if found.needed:
        from ..plan import show

        show(found.plan, dry_run=dry_run)
    elif migrate:
        console.done(f"nothing to migrate: {found.reason}")
    return host, found


def _warn_not_ours(settings, n) -> None:
    """--skip-host does not read the store: say so when the running job looks like the original recipe's."""
    from .. import console

    current = jobfile.current(settings, n)
    image = jobfile.image_of(current)
    if current and not current.get("Stop") and image and jobfile.version_of(image) is None:
        console.warn(f"job {settings.job_name} runs {image}, not a version of ours: `inv migrate` takes such a setup "
                     "over (--skip-host skipped reading its store)")


def _deploy(settings, version: Version, dry_run: bool, skip_host: bool, skip_build: bool, backup: bool,
            migrate: bool = False) -> DeployResult:
    from . import database_variable

    database_variable.wanted(settings)  # store postgres: MSH_DATABASE_URL set and a PostgreSQL URL, before any change
    n = nomad_api.client(settings)
    store_host, found = (None, None) if skip_host else _read_takeover(settings, n, dry_run, migrate)
    try:
        if skip_host:
            _warn_not_ours(settings, n)

        # 1. the host, the image (with --skip-build the registry must have the tag: asked before any change)
        pushed = _require_tag(settings, version, would_push=False) if skip_build else None
        facts = DeployFacts(version.text, settings.image_ref(version.text), skip_host=skip_host, skip_build=skip_build,
                            backup=backup, dry_run=dry_run, migrate=migrate,
                            takeover=len(found.plan) if found is not None and found.needed else 0,
                            registry_has_tag=True if skip_build else None)
        run = Apply(settings, n, version, dry_run, store_host, found, pushed)
        for change in make_plan(settings, facts):  # the host and image steps; the job's part is decided after them
            if change.op.kind != "job":
                run.apply_one(change)
        run.image_checked()
        try:
            result = run.job(facts)
        except UserError as exc:
            if found is not None and found.backup_path and exc.code != ExitCode.SERVICE_UNREACHABLE:  # 13: the job is healthy
                from ..migrate import takeover

                hint = "; ".join(h for h in (exc.hint, takeover.restore_hint(found)) if h)
                raise UserError(exc.message, hint=hint, code=exc.code) from None
            raise
        if found is not None and found.needed and not dry_run:
            from ..migrate import takeover

            takeover.verify(settings, store_host, found)
        return result
    finally:
        if store_host is not None:  # the one SSH connection of this deploy (the store, the backup)
            store_host.close()


class Apply:
    """One deploy's steps (``apply_one``: one change of the plan), and what a step hands the next: the client
    nodes, the image's platforms, Nomad's plan and the register's response."""

    def __init__(self, settings, n, version: Version, dry_run: bool, store_host, found, pushed):
        self.settings, self.n, self.version, self.dry_run = settings, n, version, dry_run
        self.image = settings.image_ref(version.text)
        self.store_host, self.found, self.pushed = store_host, found, pushed
        self.local = None  # the built image's platform
        self.nodes = None
        self._nodes_read = self._checked = False
        self.job_spec: dict | None = None
        self.response: dict | None = None
        self.outcome = None
        self.url = None
        self.variable = None  # store postgres: database_variable.VariableFacts

    def read_nodes(self):
        """The client nodes, read once after configure-host (its restart changes what they offer)."""
        if not self._nodes_read:
            self.nodes = _clients(self.settings, self.n)
            self._nodes_read = True
        return self.nodes

    @property
    def platforms(self):
        """What the registry holds (a dry run: what it would hold after the push)."""
        local = self.local
        return [local] if self.dry_run and local else self.pushed or ([local] if local else None)

    def image_checked(self) -> None:
        """The registry's image against the clients, once, before the takeover and the register (an image
        just built was checked before its push)."""
        self.read_nodes()
        if self._checked:
            return
        self._checked = True
        platforms, nodes = self.platforms, self.nodes
        if platforms and nodes is not None and platforms != [self.local]:
            _refuse_other_arch(self.settings, self.image, platforms, nodes, self.dry_run,
                               "refusing before the register; nothing was registered")

    def apply_one(self, change) -> None:
        from .. import console

        settings, version, op = self.settings, self.version, change.op
        if op.kind == "configure_host":
            from ..host import configure

            configure.run(settings, dry_run=self.dry_run)
        elif op.kind == "build":  # builds and pushes (the image's own plan)
            self.local = _build_and_push(settings, version, self.dry_run, self.read_nodes())
            self.pushed = _require_tag(settings, version, would_push=self.dry_run)
        elif op.kind == "takeover":  # now that the image is in the registry (the job is stopped there)
            self.image_checked()
            if not self.dry_run:
                from ..migrate import takeover

                takeover.apply(settings, self.store_host, self.n, self.found)
        elif op.kind == "variable":  # store postgres: the database's URL, for the job's template
            from . import database_variable

            console.step(change.describe())  # the URL with its password as ****
            database_variable.write(settings, self.n, self.variable)
        elif op.kind == "backup":  # before an image version change of a running job
            running_version = op.from_version
            from .. import backup as backups

            backups.before_deploy(settings, running_version, version.text, remote=self.store_host)
        elif op.kind == "register":  # check-and-set against the plan
            console.step(f"registering job {settings.job_name} (check-and-set at index {op.modify_index})")
            self.response = register(settings, self.n, self.job_spec, op.modify_index)
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

    def job(self, facts: DeployFacts) -> DeployResult:
        """2-6: Nomad's plan of the job (shown), then the deploy's plan made from it, and its job steps."""
        from .. import console
        from .. import plan as plans

        settings, n, version, image = self.settings, self.n, self.version, self.image
        console.step(f"planning job {settings.job_name} with {image} on {nomad_api.address(settings)}")
        provider = _provider(settings, n, self.nodes)
        platforms = self.platforms
        from . import database_variable

        self.variable = database_variable.read(settings, n)  # store postgres: its revision is in the job
        self.job_spec = jobfile.parse(settings, n, version.text,
                                      arch=platform_mod.archs(platforms) if platforms else None,
                                      provider=provider.value,
                                      database_revision=self.variable.job_revision if self.variable else None)
        current = jobfile.current(settings, n)
        _warn_provider_move(current, provider)
        answer = nomad_api.call(settings, f"planning job {settings.job_name}", n.job.plan_job, settings.job_name,
                                {"Job": self.job_spec}, diff=True)
        diff = answer.get("Diff")
        running = current and not current.get("Stop")
        known = JobFacts(job_version=current.get("Version") if current else None,
                         running_version=jobfile.version_of(jobfile.image_of(current)) if running else None,
                         changed=bool(diff) and diff.get("Type") != "None",
                         modify_index=answer.get("JobModifyIndex", 0))
        known.database = self.variable
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
        plan = make_plan(settings, replace(facts, job=known,
                                           takeover_copy=bool(self.found and self.found.backup_path)))
        steps = [change for change in plan if change.op.kind in JOB]
        if not steps:
            console.done(plan.reason)
            return DeployResult("unchanged", image, known.job_version, (known.latest or {}).get("ID"))
        if self.dry_run:  # the whole deploy, Nomad's diff shown above
            plans.show(plans.Plan(plan.title, [replace(change, diff="") for change in plan]), dry_run=True)
            console.err.print("[dim]dry run: nothing was registered[/]")
            return DeployResult("dry-run", image, known.job_version, None, diff=known.diff)
        written = registered = False  # store postgres: the Variable's new URL written; the job registered
        for change in steps:
            try:
                self.apply_one(change)
            except UserError as exc:
                if written:
                    _say_where_the_url_is(settings, n, self.variable, exc, registered)
                raise
            written = written or change.op.kind == "variable"
            registered = registered or change.op.kind == "register"
        url, outcome = self.url, self.outcome
        console.done(f"deployed v{version.text}: job version {outcome.job_version}" + (f", {url}" if url else ""))
        return DeployResult("deployed", image, outcome.job_version, outcome.deployment_id, url, known.diff)


def _say_where_the_url_is(settings, n, variable, exc: UserError, registered: bool) -> None:
    """A failure after deploy wrote a new database URL: add to the hint which URL the tasks read now."""
    from . import database_variable

    if exc.code == ExitCode.REVERTED:  # the version Nomad went back to reads its own revision's item, if any
        try:
            back = database_variable.registered_revision(jobfile.current(settings, n))
        except UserError:
            back = None
        if back and back != variable.new_revision and database_variable.item_for(back) in variable.items_to_write():
            said = (f"the version Nomad went back to reads its own database URL (revision {back}) from "
                    f"{variable.path}; the new one stays there unused: fix MSH_DATABASE_URL and `inv deploy`")
        else:
            said = (f"the version Nomad went back to reads the new database URL too: set MSH_DATABASE_URL to the "
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
    from .. import console

    try:
        return cluster.read(settings, n)
    except UserError as exc:
        if "token lacks permission" not in exc.message and "no token is set" not in exc.message:
            raise
        console.warn(f"cannot read the Nomad clients ({exc.message}): the image's architecture is checked by "
                     "the job's constraint only (give the token node:read)")
        return None


def _provider(settings, n, nodes):
    """Where the service is registered (service_provider.py), said on every deploy: the user's proxy reads
    one catalogue only."""
    from .. import console
    from . import service_provider

    choice = service_provider.wanted(settings, nodes=nodes, n=n,
                                     unreadable="" if nodes is not None else "the token lacks node:read")
    console.info(f"service provider: {choice.value} ({choice.source})")
    return choice


def _warn_provider_move(current: dict | None, provider) -> None:
    """A deploy that moves the service to the other catalogue takes it away from a proxy reading the old one
    (Nomad still reports the job healthy): said before the plan."""
    from .. import console
    from . import service_provider

    running = service_provider.provider_of(current) if current and not current.get("Stop") else ""
    if running and running != provider.value:
        console.warn(f"the running job's service is in {running}'s catalogue; this deploy moves it to "
                     f"{provider.value}'s, where a proxy reading {running}'s (Traefik's "
                     f"{'consulCatalog' if running == 'consul' else 'nomad'} provider) no longer finds it; "
                     f"set service_provider={running} to keep it there")


def _refuse_other_arch(settings, image: str, image_platforms, nodes, dry_run: bool, refusing: str) -> None:
    """Exit 10 when no client the job can go to runs the image's platform (a dry run only warns)."""
    from .. import console

    error = cluster.mismatch(image, image_platforms, nodes, settings, refusing)
    if error is None:
        return
    if not dry_run:
        raise error
    console.warn(error.message)


def _build_and_push(settings, version: Version, dry_run: bool, nodes):
    """Build v{version} when the engine lacks it, or has it for another platform than the one wanted
    (the platform setting, else the clients': image/platform.py); a version tag is a release, so `inv
    build` rebuilds on purpose. Refuse before the build and push an image no client can run; push unless
    the registry's tag already is this image: a re-run sends nothing (image/publish.py's plan; a dry run
    shows it). Returns the image's platform."""
    from ..image import publish

    choice = platform_mod.wanted(settings, nodes=nodes)
    facts, plan, platform = publish.release_image(settings, version, choice, dry_run=dry_run)
    if nodes is not None:
        _refuse_other_arch(settings, facts.ref, [platform], nodes, dry_run,
                           "refusing before the push; nothing was pushed or registered")
    publish.apply_release(settings, version, facts, plan, dry_run=dry_run)
    return platform


def _require_tag(settings, version: Version, would_push: bool):
    """The platforms of the registry's v{version} (None when a dry run would push it first)."""
    from ..image import publish

    return publish.registry_platforms(settings, version, would_push)


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
    """GET an MLflow API path through the URL users use (the proxy checks the Host header, MLflow too)."""
    import requests

    from .. import console

    url = deploy_url(settings)
    target = url + API_PATH
    console.step(f"checking {target}")
    last = ""

    def answers() -> str | None:
        nonlocal last
        try:
            response = requests.get(target, timeout=5)
            if response.status_code == 200 and "experiments" in response.text:
                return url
            last = f"HTTP {response.status_code}: {response.text.strip()[:120]}"
        except requests.RequestException as exc:
            last = first_line(exc)
        return None

    def unreachable(_):
        raise UserError(f"Nomad reports the job healthy, but {target} does not answer as MLflow ({last})",
                        hint="check DNS (`inv dns --check`), the proxy's route for the domain, and "
                             "MLFLOW_SERVER_ALLOWED_HOSTS; set deploy_url to check another URL, or "
                             "deploy_check=false to skip", code=ExitCode.SERVICE_UNREACHABLE)

    return poll.until(answers, timeout if timeout is not None else int(settings.deploy_check_timeout), interval=1,
                      on_timeout=unreachable)
