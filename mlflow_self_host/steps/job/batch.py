"""The schema migration of a release, run once as its own Nomad batch job, before the new version serves.

``run(settings, n, service_job, image)``: a batch job ``{job_name}-migrate`` made from the service job as
parsed for the release (``spec``, pure): one group of count 1 with the service group's constraints and
volumes, no network, no services, no update block; its one task the service's MLflow task with the new
image and ``MLFLOW_DB_UPGRADE=only`` (docker/entrypoint.sh: `mlflow db upgrade`, then exit with its code,
never serving), restart and reschedule attempts 0. With store postgres the task's template reads the
database's URL as the service's does, from a Variable of its own (``nomad/jobs/{job_name}-migrate``: a
task may read only its own job's Variables), written before the register and destroyed after.

A previous ``{job_name}-migrate`` that is dead is purged first (one that still runs is refused: a
migration is never run twice at once). The allocation's stdout and stderr are shown as they come (read
every ``deploy_poll`` from where the last read ended, GET /v1/client/fs/logs as logs.py does), until the
task ends or ``migrate_timeout`` passes (then the job is stopped and its allocation waited for, bounded by the
task's kill timeout and a margin: exit 11; one that does not end is ``StillRunning``, the database left alone).
The result: the task's exit code and its last lines.
"""
from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass, field

from ...core.errors import ExitCode, UserError
from ...core.poll import Deadline
from ...adapters import nomad_api
from . import follow as follower
from . import jobfile

ENV = "MLFLOW_DB_UPGRADE"
ONLY = "only"  # docker/entrypoint.sh: upgrade the schema, exit with its code, do not serve
LAST_LINES = 20
_TERMINAL = ("complete", "failed", "lost")
# Group parts of a service that a one-off task has no use for (or that Nomad refuses in a batch job).
_GROUP_DROPPED = ("Services", "Update", "Networks", "Scaling", "Migrate", "ShutdownDelay", "Spreads",
                  "StopAfterClientDisconnect", "MaxClientDisconnect", "Consul")
_JOB_DROPPED = ("Update", "Periodic", "ParameterizedJob", "Multiregion", "Spreads", "Status", "StatusDescription",
                "Version", "Stable", "CreateIndex", "ModifyIndex", "JobModifyIndex", "SubmitTime", "Stop")
_VAR_IN_TEMPLATE = re.compile(r'nomadVar\s+"([^"]*)"')
STOP_MARGIN = 30.0  # seconds beyond the task's kill timeout for its allocation to end after a stop
_DEFAULT_KILL_TIMEOUT = 5.0  # Nomad's, when the task sets none


class StillRunning(UserError):
    """The migration job was stopped but its allocation did not end: the database may still be written to."""


@dataclass
class MigrateResult:
    exit_code: int | None  # None: the task never ran (its allocation failed before a start)
    lines: list = field(default_factory=list)  # its last lines, stdout and stderr as they came
    alloc_id: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def job_id(settings) -> str:
    return f"{settings.job_name}-migrate"


def variable_path(settings) -> str:
    """The Variable the migration task reads the database's URL from (store postgres)."""
    return f"nomad/jobs/{job_id(settings)}"


def _service_group(service_job: dict) -> dict:
    """The group whose task runs the MLflow image (the first with an image: jobfile.image_of's)."""
    for group in service_job.get("TaskGroups") or []:
        for task in group.get("Tasks") or []:
            if (task.get("Config") or {}).get("image"):
                return group
    raise UserError("the job has no task with a Docker image: nothing to run the migration with",
                    hint="check the job file (job_file)")


def spec(service_job: dict, image: str, migrate_id: str, variable: str | None = None) -> dict:
    """The batch job (JSON, as /v1/jobs takes it) made from the parsed ``service_job``. Pure.

    ``variable``: store postgres, the Variable its template reads instead of the service's."""
    job = {key: value for key, value in copy.deepcopy(service_job).items() if key not in _JOB_DROPPED}
    job.update(ID=migrate_id, Name=migrate_id, Type="batch")
    group = {key: value for key, value in _service_group(job).items() if key not in _GROUP_DROPPED}
    group["Count"] = 1
    group["RestartPolicy"] = {**(group.get("RestartPolicy") or {}), "Attempts": 0, "Mode": "fail"}
    group["ReschedulePolicy"] = {**(group.get("ReschedulePolicy") or {}), "Attempts": 0, "Unlimited": False}
    task = next(t for t in group.get("Tasks") or [] if (t.get("Config") or {}).get("image"))
    task = {key: value for key, value in task.items() if key != "Services"}
    if task.get("RestartPolicy") is not None:  # a task's own (Canonicalize copies the group's) overrides the group's
        task["RestartPolicy"] = {**task["RestartPolicy"], "Attempts": 0, "Mode": "fail"}
    config = {key: value for key, value in (task.get("Config") or {}).items() if key != "ports"}
    config["image"] = image
    task["Config"] = config
    task["Env"] = {**(task.get("Env") or {}), ENV: ONLY}
    # Only the database URL's template: the migration needs no other secret (auth's admin password and key), and
    # a task may read only its own job's Variables (store postgres: ``variable``, written for it).
    task["Templates"] = [_read_from(t, variable) for t in _database_templates(task) if variable is not None]
    group["Tasks"] = [task]
    group["Name"] = group.get("Name") or "migrate"
    job["TaskGroups"] = [group]
    return job


def _read_from(template: dict, variable: str) -> dict:
    text = template.get("EmbeddedTmpl") or ""
    return {**template, "EmbeddedTmpl": _VAR_IN_TEMPLATE.sub(f'nomadVar "{variable}"', text)}


def _database_templates(task: dict) -> list[dict]:
    return [t for t in task.get("Templates") or [] if ".database_url" in (t.get("EmbeddedTmpl") or "")]


def template_items(service_job: dict) -> list[str]:
    """The Variable items the service's database template reads (``database_url_<revision>``)."""
    group = _service_group(service_job)
    names = []
    for task in group.get("Tasks") or []:
        for template in _database_templates(task):
            names += re.findall(r"\.([A-Za-z0-9_]+)", template.get("EmbeddedTmpl") or "")
    return names


# --- running it ---------------------------------------------------------------------------------
def run(settings, n, service_job: dict, image: str, url: str | None = None,
        timeout: float | None = None) -> MigrateResult:
    """Run the migration job to its end; its exit code and last lines (a failure to run it: UserError).

    ``url``: store postgres, the database's URL (written to the migration's own Variable, removed after)."""
    from ...core import console

    migrate_id = job_id(settings)
    _purge_dead(settings, n, migrate_id)
    variable = None
    if url is not None:
        variable = variable_path(settings)
        items = {name: url for name in template_items(service_job) if name.startswith("database_url")}
        _write_variable(settings, n, variable, items or {"database_url": url})
    try:
        job = spec(service_job, image, migrate_id, variable)
        console.step(f"running the migration: batch job {migrate_id} with {image} ({ENV}={ONLY})")
        response = nomad_api.call(settings, f"registering job {migrate_id}", n.jobs.register_job, {"Job": job})
        deadline = Deadline(timeout if timeout is not None else float(settings.migrate_timeout))
        alloc = _allocation(settings, n, migrate_id, response, deadline)
        return _follow(settings, n, migrate_id, alloc, task_of(job), deadline, kill_timeout(job))
    finally:
        if variable is not None:
            _delete_variable(settings, n, variable)


def task_of(job: dict) -> str:
    return jobfile.task_name(job)


def _purge_dead(settings, n, migrate_id: str) -> None:
    """Remove a previous migration job; one that still runs is refused (never two at once)."""
    import nomad.api.exceptions as nex

    try:
        previous = n.job.get_job(migrate_id)
    except nex.URLNotFoundNomadException:
        return
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        raise nomad_api.to_user_error(exc, settings, f"reading job {migrate_id}") from None
    allocs = nomad_api.call(settings, f"listing the allocations of {migrate_id}", n.job.get_allocations,
                            migrate_id) or []
    live = [a for a in allocs if a.get("ClientStatus") in ("pending", "running")]
    if live and not previous.get("Stop"):
        raise UserError(f"a migration job {migrate_id} is still running (allocation {live[0]['ID'][:8]}); "
                        "nothing was changed by this deploy's migration",
                        hint=f"wait for it (`nomad alloc logs -f {live[0]['ID'][:8]}`) or stop it "
                             f"(`nomad job stop -purge {migrate_id}`), then deploy again")
    nomad_api.call(settings, f"purging job {migrate_id}", n.job.deregister_job, migrate_id, purge=True)


def _allocation(settings, n, migrate_id: str, response: dict, deadline: Deadline) -> dict:
    """The migration's allocation once placed (a placement failure is exit 10, the job stopped)."""
    eval_id = response.get("EvalID")
    if eval_id:
        ev = follower.wait_eval(settings, n, eval_id, deadline)
        if ev.get("FailedTGAllocs"):
            _stop(settings, n, migrate_id)
            error = follower.placement_error(settings, ev["FailedTGAllocs"], registered=False)
            error.message = f"the migration job {migrate_id} cannot be placed: {error.message}"
            raise error
    while True:
        allocs = nomad_api.call(settings, f"listing the allocations of {migrate_id}", n.job.get_allocations,
                                migrate_id) or []
        if allocs:
            return sorted(allocs, key=lambda a: a.get("CreateIndex", 0))[-1]
        if deadline.passed:
            _stop(settings, n, migrate_id)
            raise UserError(f"the migration job {migrate_id} got no allocation in {deadline.seconds:g}s",
                            hint="see `nomad job status " + migrate_id + "`", code=ExitCode.DEPLOY_FAILED)
        time.sleep(min(float(settings.deploy_poll), deadline.left()))


def _follow(settings, n, migrate_id: str, alloc: dict, task: str, deadline: Deadline,
            kill_timeout: float = _DEFAULT_KILL_TIMEOUT) -> MigrateResult:
    """Show the task's output as it comes until the allocation ends; its exit code and last lines."""
    alloc_id = alloc["ID"]
    seen = {"stdout": 0, "stderr": 0}
    lines: list[str] = []
    started = False
    while True:
        alloc = nomad_api.call(settings, f"reading allocation {alloc_id[:8]}", n.allocation.get_allocation, alloc_id)
        state = (alloc.get("TaskStates") or {}).get(task) or {}
        started = started or bool(state.get("StartedAt")) and not str(state.get("StartedAt")).startswith("0001")
        done = alloc.get("ClientStatus") in _TERMINAL
        if started or done:
            lines += _read_new(settings, n, alloc_id, task, seen)
        if done:
            return MigrateResult(_exit_code(state), lines[-LAST_LINES:], alloc_id)
        if deadline.passed:
            stop_and_wait(settings, n, migrate_id, kill_timeout)
            raise UserError(f"the migration job {migrate_id} did not end in {deadline.seconds:g}s (setting "
                            "migrate_timeout); it was stopped", hint=f"`nomad alloc logs {alloc_id[:8]}` shows its "
                            "output; raise migrate_timeout for a large database", code=ExitCode.DEPLOY_FAILED)
        time.sleep(min(float(settings.deploy_poll), max(deadline.left(), 0.01)))


def _read_new(settings, n, alloc_id: str, task: str, seen: dict) -> list[str]:
    """What stdout and stderr gained since the last read, shown (on stderr, as progress); its lines. A Python
    traceback in it is shown as its last line (the exception) and where to read it whole."""
    from ...core import console

    out = []
    for kind in ("stdout", "stderr"):
        params = {"task": task, "type": kind, "follow": False, "offset": seen[kind], "origin": "start",
                  "plain": True}
        try:
            data = n.client.stream_logs.request(alloc_id, params=params, method="get").content
        except Exception:  # noqa: BLE001 - no log file yet (the task not started): read again next time
            continue
        if not data:
            continue
        seen[kind] += len(data)
        for line in data.decode("utf-8", errors="replace").splitlines():
            if _in_traceback(seen, kind, line, alloc_id):
                continue
            console.info(f"  | {line}")
            out.append(line)
    return out


def _in_traceback(seen: dict, kind: str, line: str, alloc_id: str) -> bool:
    """Whether ``line`` belongs to a Python traceback's frames (left out of what is shown)."""
    from ...core import console

    key = f"{kind}-traceback"
    if line.startswith("Traceback (most recent call last):"):
        seen[key] = True
        console.info(f"  | (a Python traceback: `nomad alloc logs -{kind} {alloc_id[:8]}` shows it whole)")
        return True
    if seen.get(key) and (line.startswith((" ", "\t")) or not line.strip()):
        return True
    seen[key] = False
    return False


def failure_line(lines: list[str]) -> str:
    """The line that says why the migration failed: the last exception or error line, else the last one."""
    said = [line.strip() for line in lines if line.strip()]
    errors = [line for line in said if re.match(r"^[\w.]+(Error|Exception)\b", line) or "error" in line.lower()
              and not line.startswith("(Background on this error")]
    return (errors or said or [""])[-1]


def _exit_code(state: dict) -> int | None:
    """The task's exit code from its events (Terminated), None when it never ran."""
    for event in reversed(state.get("Events") or []):
        if event.get("Type") == "Terminated":
            return int(event.get("ExitCode") or 0)
    return None if state.get("Failed") else 0


def kill_timeout(job: dict) -> float:
    """The migration task's kill timeout in seconds (the job's JSON has nanoseconds; Nomad's 5 s when unset)."""
    for group in job.get("TaskGroups") or []:
        for task in group.get("Tasks") or []:
            if task.get("KillTimeout"):
                return float(task["KillTimeout"]) / 1e9
    return _DEFAULT_KILL_TIMEOUT


def stop_and_wait(settings, n, migrate_id: str, kill_timeout: float = _DEFAULT_KILL_TIMEOUT) -> None:
    """Stop the migration job and wait until none of its allocations is pending or running (at most its kill
    timeout plus ``STOP_MARGIN``): before the backup is put back, nothing may still write to the database (a
    dying SQLite writer leaves a journal beside the restored file). One that does not end: ``StillRunning``."""
    import nomad.api.exceptions as nex

    _stop(settings, n, migrate_id)
    deadline = Deadline(kill_timeout + STOP_MARGIN)
    live: list = [{"ID": "?"}]  # not known to have ended until read
    while True:
        try:
            allocs = n.job.get_allocations(migrate_id) or []
            live = [a for a in allocs if a.get("ClientStatus") in ("pending", "running")]
        except nex.URLNotFoundNomadException:  # never registered (Ctrl-C before it): nothing runs
            return
        except Exception:  # noqa: BLE001 - unreadable now: read again until the deadline
            pass
        else:
            if not live:
                return
        if deadline.passed:
            alloc = (live[0].get("ID") or "?")[:8]
            raise StillRunning(
                f"the migration job {migrate_id} was stopped but its allocation {alloc} had not ended "
                f"{deadline.seconds:g}s later: the backup was not put back (the migration may still write to the "
                "database)",
                hint=f"wait for it to end (`nomad alloc status {alloc}`; `nomad alloc stop {alloc}`), then "
                     "finish by hand", code=ExitCode.DEPLOY_FAILED)
        time.sleep(min(float(settings.deploy_poll), max(deadline.left(), 0.01)))


def _stop(settings, n, migrate_id: str) -> None:
    try:
        n.job.deregister_job(migrate_id)
    except Exception:  # noqa: BLE001 - the error said is the one that made us stop it
        pass


def _write_variable(settings, n, path: str, items: dict) -> None:
    try:
        n.variable.create_variable(path, {"Items": items}, namespace=settings.nomad_namespace or "default")
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        from . import database_variable

        raise database_variable._error(exc, settings, f"writing the Nomad Variable {path}") from None


def _delete_variable(settings, n, path: str) -> None:
    from ...core import console

    try:
        n.variable.delete_variable(path, namespace=settings.nomad_namespace or "default")
    except Exception as exc:  # noqa: BLE001 - the migration's own outcome is what matters
        console.warn(f"could not remove the Nomad Variable {path} (the migration's copy of the database URL): "
                     f"{nomad_api.one_line(str(exc))[:200]}; `nomad var purge {path}` removes it")
