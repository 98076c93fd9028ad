"""Follow what a register or a revert started (evaluation, then deployment) until it ends, live.

Ends: successful (returned), placement failure (exit 10), failed (11), failed and rolled back by
Nomad's auto_revert (12; the revert is followed too and the version running now is named).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ...core.errors import ExitCode, UserError
from ...core.poll import Deadline, until
from . import jobfile
from ...adapters import nomad_api

TERMINAL = {"successful", "failed", "cancelled"}
_ROLLBACK = re.compile(r"- rolling back to job version (\d+)")
_NO_ROLLBACK = re.compile(r"- not rolling back to stable job version (\d+)")


@dataclass
class Outcome:
    status: str  # successful, or registered (no deployment to follow)
    job_version: int | None
    deployment_id: str | None
    image: str = ""


def _poll(settings) -> float:
    try:
        return max(0.05, float(settings.deploy_poll))
    except (TypeError, ValueError):
        return 1.0


def wait_eval(settings, n, eval_id: str, deadline: Deadline) -> dict:
    def evaluated():
        ev = nomad_api.evaluation(settings, n, eval_id)
        return ev if ev.get("Status") not in ("pending", "") else None

    def pending(_):
        raise UserError(f"Nomad did not evaluate the job in time (evaluation {eval_id[:8]} pending)",
                        hint="are the Nomad servers busy or without a leader? `nomad eval status " + eval_id + "`")

    return until(evaluated, deadline, interval=_poll(settings), on_timeout=pending)


MISSING_VOLUMES = "missing compatible host volumes"  # scheduler/feasible.go FilterConstraintHostVolumes
ARCH_CONSTRAINT = "${attr.cpu.arch} "  # the job's constraint, as Constraint.String() names it when it filters
CONSUL_CONSTRAINT = "${attr.consul.version} "  # Nomad's implicit one for a Consul service (job_endpoint_hooks.go)


def placement_error(settings, failed: dict, registered: bool, n=None, job: dict | None = None) -> UserError:
    """Exit 10. When host volumes filtered the nodes, ``n`` and ``job`` let it name the missing ones."""
    from .plan_view import placement_failures

    where = f"datacenter {settings.datacenter}"
    tail = (" The job is registered: Nomad places it as soon as a node has room (or `inv rollback`)."
            if registered else " Nothing was registered.")
    hint = ("free resources on the client, lower the cpu/memory settings, or check that the client's "
            "datacenter and host volumes match (`inv doctor`)")
    volumes = ""
    if any(key.startswith(ARCH_CONSTRAINT) for m in failed.values() for key in (m.get("ConstraintFiltered") or {})):
        hint = ("no client runs the image's architecture (the job's constraint on ${attr.cpu.arch}): build it for "
                "the clients' (`inv build --platform linux/…`, `inv doctor` shows theirs) and deploy again")
    if any(key.startswith(CONSUL_CONSTRAINT) for m in failed.values() for key in (m.get("ConstraintFiltered") or {})):
        hint = (f"the service is registered in Consul (service_provider {settings.service_provider}, "
                f"{settings.sources.get('service_provider', 'setting')}), and Nomad places such a job only on "
                "clients with a Consul agent: set service_provider=nomad (or auto) for Nomad's own catalogue, or "
                "run Consul on the client and restart Nomad (`inv doctor` shows whether it has Consul)")
    if n is not None and any(MISSING_VOLUMES in (m.get("ConstraintFiltered") or {}) for m in failed.values()):
        volumes = missing_volumes(settings, n, job)
        hint = ("`inv configure-host` adds the host volumes to the client's config and restarts Nomad; "
                "the job places as soon as the client has them")
    return UserError(f"Nomad cannot place the job in {where}: {placement_failures(failed)}{volumes}.{tail}",
                     hint=hint, code=ExitCode.PLACEMENT)


def missing_volumes(settings, n, job: dict | None) -> str:
    """'; node m700 lacks host volume mlflow-artifacts' for each node of the job's datacenters."""
    import fnmatch

    wanted = sorted({v.get("Source") for g in (job or {}).get("TaskGroups") or []
                     for v in (g.get("Volumes") or {}).values() if v.get("Type") == "host"})
    if not wanted:
        return ""
    datacenters = (job or {}).get("Datacenters") or ["*"]
    parts = []
    try:
        for stub in n.nodes.get_nodes() or []:
            if not any(fnmatch.fnmatch(stub.get("Datacenter", ""), dc) for dc in datacenters):
                continue
            node = n.node.get_node(stub["ID"])
            missing = [v for v in wanted if v not in (node.get("HostVolumes") or {})]
            if missing:
                parts.append(f"node {node.get('Name') or stub['ID'][:8]} lacks host volume"
                             f"{'s' if len(missing) != 1 else ''} {', '.join(missing)} in its client config")
    except Exception:  # noqa: BLE001 - a token without node:read: the placement failure alone still says it
        return ""
    return "; " + "; ".join(parts) if parts else ""


def after_submit(settings, n, response: dict, version_label: str) -> Outcome:
    """Follow a register/revert response: its evaluation, then the deployment it created (one deadline
    for all of it, the revert of a failed deployment included)."""
    deadline = Deadline(int(settings.deploy_timeout))
    eval_id = response.get("EvalID")
    job_index = response.get("JobModifyIndex")
    dep_id = None
    if eval_id:
        ev = wait_eval(settings, n, eval_id, deadline)
        if ev.get("FailedTGAllocs"):
            raise placement_error(settings, ev["FailedTGAllocs"], registered=True, n=n,
                                  job=jobfile.current(settings, n))
        dep_id = ev.get("DeploymentID") or None
    if not dep_id:
        dep_id = _deployment_for(settings, n, job_index, deadline)
    if not dep_id:
        job = jobfile.current(settings, n) or {}
        return Outcome("registered", job.get("Version"), None, jobfile.image_of(job))
    return follow(settings, n, dep_id, version_label, deadline)


def _deployment_for(settings, n, job_index, deadline: Deadline) -> str | None:
    """The deployment the register created: asked five times at most (a job without one has none)."""
    for _ in range(5):
        deps = nomad_api.call(settings, "listing deployments", n.job.get_deployments, settings.job_name) or []
        for dep in deps:
            if job_index is None or dep.get("JobModifyIndex") == job_index or dep.get("JobSpecModifyIndex") == job_index:
                return dep["ID"]
        if deadline.passed:
            break
        time.sleep(_poll(settings))
    return None


def follow(settings, n, dep_id: str, version_label: str, deadline: Deadline, reverting: bool = False) -> Outcome:
    """``deadline``: shared with the evaluation before, and with the revert of a failed deployment."""
    from rich.live import Live

    from ...core import console

    dep, allocs = _read(settings, n, dep_id)
    checks = 0
    with Live(render(dep, allocs), console=console.err, refresh_per_second=4, transient=False) as live:
        def ended() -> bool:
            nonlocal dep, allocs, checks
            if checks:  # the first check is on the read above
                dep, allocs = _read(settings, n, dep_id)
                live.update(render(dep, allocs))
            checks += 1
            return dep.get("Status") in TERMINAL

        def still_going(_):
            raise UserError(f"deployment {dep_id[:8]} is still {dep.get('Status')} after "
                            f"{settings.deploy_timeout}s: {dep.get('StatusDescription', '')}",
                            hint="watch it with `inv status`; raise deploy_timeout for slow starts")

        until(ended, deadline, interval=_poll(settings), on_timeout=still_going)
    if not console.err.is_terminal:
        console.err.line()
    status = dep.get("Status")
    if status == "successful":
        job = jobfile.current(settings, n) or {}
        console.done(f"deployment {dep_id[:8]} successful: job version {dep.get('JobVersion')} is healthy")
        return Outcome("successful", dep.get("JobVersion"), dep_id, jobfile.image_of(job))
    if reverting:
        show_failures(settings, n, allocs)
        raise UserError(f"the rollback deployment {dep_id[:8]} ended {status}: {dep.get('StatusDescription')}",
                        hint="the job has no healthy version now: `inv status`, `inv logs --stderr`",
                        code=ExitCode.DEPLOY_FAILED)
    show_failures(settings, n, allocs)
    description = dep.get("StatusDescription") or status
    m = _ROLLBACK.search(description)
    if status == "failed" and m:
        console.warn(f"deployment of {version_label} failed; Nomad is rolling back to job version {m.group(1)}")
        revert_id = _next_deployment(settings, n, dep, deadline)
        job = jobfile.current(settings, n) or {}
        if revert_id is None and not job.get("Stop"):
            raise UserError(f"{version_label} failed its health checks; Nomad is rolling back to job version "
                            f"{m.group(1)}, but its deployment did not start within {settings.deploy_timeout}s",
                            hint="watch it with `inv status`", code=ExitCode.REVERTED)
        outcome = follow(settings, n, revert_id, f"job version {m.group(1)}", deadline, reverting=True) \
            if revert_id else None
        job = jobfile.current(settings, n) or job
        if job.get("Stop"):
            raise UserError(f"{version_label} failed its health checks, and Nomad went back to job version "
                            f"{m.group(1)}, a stopped version: job {settings.job_name} is stopped now",
                            hint="deploy a working version (`inv deploy`), or `inv rollback --to N` to a running "
                                 "version (`inv status` lists them)", code=ExitCode.REVERTED)
        image = jobfile.image_of(job)
        running = f"job version {job.get('Version')} ({image})" + (" is healthy" if outcome else "")
        raise UserError(f"{version_label} failed its health checks and was rolled back: running {running}",
                        hint="see the task events and stderr above; `inv logs --stderr` for more",
                        code=ExitCode.REVERTED)
    same = _NO_ROLLBACK.search(description)
    if status == "failed" and same:
        raise UserError(f"deployment of {version_label} failed, and Nomad did not roll back: its last stable "
                        f"version, {same.group(1)}, has the same specification",
                        hint="see the task events and stderr above; fix and deploy a new version, or "
                             "`inv rollback --to N` to an older one (`inv status`)", code=ExitCode.DEPLOY_FAILED)
    if status == "cancelled":
        raise UserError(f"deployment {dep_id[:8]} was cancelled: {description}",
                        hint="another change replaced it: `inv status`", code=ExitCode.DEPLOY_FAILED)
    raise UserError(f"deployment of {version_label} failed: {description}",
                    hint="see the task events and stderr above; `inv logs --stderr`; `inv rollback` goes back "
                         "to the previous stable version", code=ExitCode.DEPLOY_FAILED)


def _read(settings, n, dep_id) -> tuple[dict, list]:
    dep = nomad_api.call(settings, "reading the deployment", n.deployment.get_deployment, dep_id)
    allocs = nomad_api.call(settings, "reading the deployment's allocations",
                            n.deployment.get_deployment_allocations, dep_id) or []
    return dep, allocs


def _next_deployment(settings, n, failed: dict, deadline: Deadline) -> str | None:
    """The deployment of the version Nomad reverted to; None when that version has none (a stopped job),
    or none started before the deadline."""
    if deadline.passed:
        return None

    def started():
        latest = nomad_api.call(settings, "reading the latest deployment", n.job.get_deployment, settings.job_name)
        if latest and latest.get("ID") != failed.get("ID") and \
                latest.get("JobVersion", -1) > failed.get("JobVersion", -1):
            return ("deployment", latest["ID"])
        job = jobfile.current(settings, n) or {}
        if job.get("Stop") and job.get("Version", -1) > failed.get("JobVersion", -1):
            return ("stopped", None)  # reverted to a stopped version: nothing is deployed
        return None

    found = until(started, deadline, interval=_poll(settings), on_timeout=lambda _last: None)
    return found[1] if found else None


def _health(alloc: dict) -> str:
    healthy = (alloc.get("DeploymentStatus") or {}).get("Healthy")
    return "healthy" if healthy else "unhealthy" if healthy is False else "checking"


def _last_event(alloc: dict) -> str:
    events = [e for state in (alloc.get("TaskStates") or {}).values() for e in state.get("Events") or []]
    if not events:
        return ""
    last = max(events, key=lambda e: e.get("Time", 0))
    return f"{last.get('Type')}: {last.get('DisplayMessage') or last.get('Message') or last.get('DriverMessage') or ''}".strip(": ")


def render(dep: dict, allocs: list):
    from rich.table import Table

    status = dep.get("Status", "?")
    style = {"successful": "green", "failed": "red", "cancelled": "red"}.get(status, "yellow")
    table = Table(title=f"deployment {dep.get('ID', '')[:8]} · job version {dep.get('JobVersion')} · "
                        f"[{style}]{status}[/] · {dep.get('StatusDescription', '')}",
                  title_justify="left")
    for column in ("group / alloc", "status", "desired", "placed", "healthy", "unhealthy", "last event"):
        table.add_column(column, overflow="fold")
    for name, group in (dep.get("TaskGroups") or {}).items():
        table.add_row(name, "", str(group.get("DesiredTotal", "")), str(group.get("PlacedAllocs", "")),
                      str(group.get("HealthyAllocs", "")), str(group.get("UnhealthyAllocs", "")), "")
    for alloc in allocs:
        table.add_row(f"  {alloc.get('ID', '')[:8]}", str(alloc.get("ClientStatus")), "", "", _health(alloc), "",
                      _last_event(alloc))
    return table


def failing(allocs: list) -> list:
    return [a for a in allocs if a.get("ClientStatus") in ("failed", "lost")
            or (a.get("DeploymentStatus") or {}).get("Healthy") is False]


def show_failures(settings, n, allocs: list, lines: int = 20) -> None:
    """The failing allocations' task events and the last lines of their stderr."""
    from ...core import console
    from . import logs as job_logs

    for alloc in failing(allocs):
        console.err.print(f"[bold red]allocation {alloc['ID'][:8]}[/] ({alloc.get('ClientStatus')}, "
                          f"job version {alloc.get('JobVersion')}) on {alloc.get('NodeName') or alloc.get('NodeID', '')[:8]}")
        for task, state in (alloc.get("TaskStates") or {}).items():
            console.err.print(f"  task {task}: {state.get('State')}" + (" (failed)" if state.get("Failed") else ""))
            for event in (state.get("Events") or [])[-8:]:
                message = event.get("DisplayMessage") or event.get("Message") or event.get("DriverError") \
                    or event.get("DriverMessage") or ""
                when = time.strftime("%H:%M:%S", time.localtime((event.get("Time") or 0) / 1e9))
                console.err.print(f"    {when}  {console.escape(event.get('Type', ''))}  "
                                  f"[dim]{console.escape(message)}[/]")
            try:
                text = job_logs.tail(settings, n, alloc["ID"], task, "stderr", lines)
            except UserError as exc:
                text = f"(stderr not readable: {exc.message})"
            if text.strip():
                console.err.print(f"  last stderr lines of {task}:")
                for line in text.rstrip("\n").splitlines():
                    console.err.print(f"    [red]{console.escape(line)}[/]")
