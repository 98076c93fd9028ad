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
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import ExitCode, UserError
from ..version import Version
from ..image import platform as platform_mod
from . import cluster
from . import follow as follower
from . import jobfile, nomad_api, plan_view

API_PATH = "api/2.0/mlflow/experiments/search?max_results=1"


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
    from ..backup import SSHHost
    from ..host import ssh
    from ..migrate import takeover

    from ..migrate.store import NoPython

    console.step(f"reading the MLflow store on {settings.host}")
    host = SSHHost(settings, ssh.connect(settings))
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
    from .. import console

    image = settings.image_ref(version.text)
    n = nomad_api.client(settings)
    store_host, found = (None, None) if skip_host else _read_takeover(settings, n, dry_run, migrate)
    if skip_host:
        _warn_not_ours(settings, n)

    # 1. the host, the image (with --skip-build the registry must have the tag: asked before any change)
    pushed = _require_tag(settings, version, would_push=False) if skip_build else None
    if not skip_host:
        from ..host import configure

        configure.run(settings, dry_run=dry_run)
    nodes = _clients(settings, n)
    if not skip_build:
        local = _build_and_push(settings, version, dry_run, nodes)
        pushed = _require_tag(settings, version, would_push=dry_run)
    else:
        local = None
    # what the registry holds (a dry run: what it would hold after the push)
    image_platforms = [local] if dry_run and local else pushed or ([local] if local else None)
    if image_platforms and nodes is not None and image_platforms != [local]:  # else checked before the push
        _refuse_other_arch(settings, image, image_platforms, nodes, dry_run,
                           "refusing before the register; nothing was registered")

    # the takeover's changes, now that the image is in the registry (the job is stopped there)
    if found is not None and found.needed and not dry_run:
        from ..migrate import takeover

        takeover.apply(settings, store_host, n, found)
    try:
        result = _plan_and_register(settings, n, version, image, image_platforms, dry_run,
                                    backup and not (found and found.backup_path), nodes=nodes)
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


def _plan_and_register(settings, n, version: Version, image: str, image_platforms, dry_run: bool,
                       backup: bool, nodes=None) -> DeployResult:
    """2-6. ``nodes``: the client nodes read before (None: the token may not read them)."""
    from .. import console

    # 2. parse and plan on the agent
    console.step(f"planning job {settings.job_name} with {image} on {nomad_api.address(settings)}")
    provider = _provider(settings, n, nodes)
    job = jobfile.parse(settings, n, version.text,
                        arch=platform_mod.archs(image_platforms) if image_platforms else None, provider=provider.value)
    current = jobfile.current(settings, n)
    _warn_provider_move(current, provider)
    plan = nomad_api.call(settings, f"planning job {settings.job_name}", n.job.plan_job, settings.job_name,
                          {"Job": job}, diff=True)
    diff = plan.get("Diff")
    if not diff or diff.get("Type") == "None":
        running = current.get("Version") if current else None
        latest = nomad_api.call(settings, "reading the latest deployment", n.job.get_deployment, settings.job_name)
        if latest and latest.get("JobVersion") == running and latest.get("Status") == "running" and not dry_run:
            console.info(f"v{version.text} is registered (job version {running}) and its deployment "
                         f"{latest['ID'][:8]} is still running: following it")
            outcome = follower.follow(settings, n, latest["ID"], f"v{version.text}",
                                      time.monotonic() + int(settings.deploy_timeout))
            return _finish(settings, version, image, outcome)
        if latest and latest.get("JobVersion") == running and latest.get("Status") == "failed":
            raise UserError(f"v{version.text} is already registered (job version {running}), but its deployment "
                            f"failed: {latest.get('StatusDescription')}",
                            hint="`inv logs --stderr` shows why; deploy a fixed version, or `inv rollback`",
                            code=ExitCode.DEPLOY_FAILED)
        console.done(f"already deployed: v{version.text} (job version {running}); nothing registered")
        return DeployResult("unchanged", image, running, latest.get("ID") if latest else None)
    console.err.print(f"[bold]job {settings.job_name}[/]: {'would change' if dry_run else 'changes'}")
    plan_view.show(diff)
    if plan.get("FailedTGAllocs"):
        error = follower.placement_error(settings, plan["FailedTGAllocs"], registered=False, n=n, job=job)
        if not dry_run:
            raise error
        console.warn(error.message)
    if dry_run:
        console.err.print("[dim]dry run: nothing was registered[/]")
        return DeployResult("dry-run", image, current.get("Version") if current else None, None,
                            diff=plan_view.text(diff))

    # backup before an image version change of a running job
    running_version = jobfile.version_of(jobfile.image_of(current)) if current and not current.get("Stop") else None
    if backup and running_version and running_version != version.text:
        from .. import backup as backups

        backups.before_deploy(settings, running_version, version.text)

    # 3. register, check-and-set against the plan
    console.step(f"registering job {settings.job_name} (check-and-set at index {plan.get('JobModifyIndex', 0)})")
    response = register(settings, n, job, plan.get("JobModifyIndex", 0))

    # 4-5. follow to the end
    outcome = follower.after_submit(settings, n, response, f"v{version.text}")

    return _finish(settings, version, image, outcome, plan_view.text(diff))


def _finish(settings, version: Version, image: str, outcome, diff: str = "") -> DeployResult:
    """6. the service answers through the proxy; the one line that says it is deployed."""
    from .. import console

    url = check_service(settings) if settings.deploy_check else None
    console.done(f"deployed v{version.text}: job version {outcome.job_version}" + (f", {url}" if url else ""))
    return DeployResult("deployed", image, outcome.job_version, outcome.deployment_id, url, diff)


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
    build` rebuilds on purpose. Refuse before the push an image no client can run; push unless the
    registry's tag already is this image: a re-run sends nothing. Returns the image's platform."""
    from .. import console
    from ..image import build, engine, push

    ref = settings.image_ref(version.text)
    docker = engine.client(required=not dry_run)
    choice = platform_mod.wanted(settings, nodes=nodes)
    have = engine.image_platform(docker, ref) if docker is not None and engine.has_image(docker, ref) else None
    try:
        target = choice.single()
    except UserError:
        if have is None:
            raise
        target = have  # the clients do not decide: the image there is checked against them below
    building = have is None or not have.same(target)
    if not building:
        console.info(f"{ref} is built for {have} (`inv build` rebuilds it)")
    else:
        if have is not None:
            console.info(f"{ref} here is built for {have}, and {target} is wanted ({choice.source}): "
                         "building it again")
        build.build(settings, version, dry_run=dry_run, choice=choice)
        have = target
    if nodes is not None:
        _refuse_other_arch(settings, ref, [have], nodes, dry_run,
                           "refusing before the push; nothing was pushed or registered")
    if dry_run and building:
        # push --dry-run plans for the image the engine has; here the build comes first
        console.info(f"push {ref}: after the build")
        return have
    push.push(settings, version, dry_run=dry_run)
    return have


def _require_tag(settings, version: Version, would_push: bool):
    """The platforms of the registry's v{version} (None when a dry run would push it first)."""
    from .. import console
    from ..image import registry

    found = registry.platforms(settings, version.tag)
    if found is not None:
        return found
    ref = settings.image_ref(version.text)
    if would_push:
        console.info(f"{ref} is not in the registry yet: the deploy pushes it first")
        return None
    raise UserError(f"the registry has no {ref}: refusing to deploy an image Nomad cannot pull",
                    hint="build and push it (`inv deploy` without --skip-build, or `inv build push`)", code=ExitCode.BAD_ARGUMENT)


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
                                               "the new plan", code=1) from None
        raise nomad_api.to_user_error(exc, settings, f"registering job {settings.job_name}") from None


def deploy_url(settings) -> str:
    return (settings.deploy_url or settings.service_url()).rstrip("/") + "/"


def check_service(settings, timeout: float | None = None) -> str:
    """GET an MLflow API path through the URL users use (the proxy checks the Host header, MLflow too)."""
    import requests

    from .. import console

    url = deploy_url(settings)
    target = url + API_PATH
    console.step(f"checking {target}")
    deadline = time.monotonic() + (timeout if timeout is not None else int(settings.deploy_check_timeout))
    last = ""
    while True:
        try:
            response = requests.get(target, timeout=5)
            if response.status_code == 200 and "experiments" in response.text:
                return url
            last = f"HTTP {response.status_code}: {response.text.strip()[:120]}"
        except requests.RequestException as exc:
            last = str(exc).splitlines()[0][:200]
        if time.monotonic() > deadline:
            raise UserError(f"Nomad reports the job healthy, but {target} does not answer as MLflow ({last})",
                            hint="check DNS (`inv dns --check`), the proxy's route for the domain, and "
                                 "MLFLOW_SERVER_ALLOWED_HOSTS; set deploy_url to check another URL, or "
                                 "deploy_check=false to skip", code=ExitCode.SERVICE_UNREACHABLE)
        time.sleep(1)
