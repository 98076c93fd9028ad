"""Companion periodic jobs: Nomad batch jobs with a ``periodic`` block that `inv deploy` registers beside the
service job (the nightly backup, ``{job_name}-backup``; `mlflow gc`, steps/job/gc.py's ``gc_companion``).

A companion is a job file of its own (``Companion.jobfile``) with its own HCL variables (``Companion.variables``);
deploy adds the variables every companion shares (``shared_variables``: the image deploy registers, its
architectures, datacenters, region, the image's user, the store, the job's name and Variable path), each only
when the file declares it. Deploy treats each one as it treats the service job:

- ``read``: the file parsed by the agent (/v1/jobs/parse), planned by Nomad's plan endpoint with a diff, and the
  registered job; the companions turned off in the settings (``retired``) that Nomad still runs;
- ``make_plan`` (pure): one line per change, ``+ periodic job mlflow-backup: nightly at 03:00 UTC, ...`` (new),
  ``~`` (Nomad's plan has a diff, or it was stopped), ``-`` (retired: stopped, its history kept); Nomad's plan
  without a diff is no line, so a second deploy changes nothing;
- ``Apply.apply_one``: register (after the service job is healthy: deploy's last step), or stop.

**Never during a release** (``pause`` and ``resume``): a deploy whose service job changes, holding the deploy lock,
first stops every companion it runs (a stopped periodic job launches nothing: Nomad's launcher tracks only
running periodic jobs, and a force launch of a stopped one is refused), then waits for their running children
(``{id}/periodic-<epoch>`` jobs, listed with /v1/jobs?prefix=) to end, at most ``deploy_timeout`` seconds (one
still running then: the release is refused, nothing of it done, the companions registered again); after the
release its last step registers them again.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...core.errors import ExitCode, UserError
from ...core.plan import Plan
from ...core.poll import Deadline
from ...adapters import nomad_api
from . import jobfile

BACKUP_FILE = "nomad/mlflow-backup.nomad.hcl"
SUFFIXES = ("backup", "gc")  # the companions deploy knows: {job_name}-{suffix}
CHILD = "/periodic-"  # a launch's job ID: {parent}/periodic-{Unix seconds}


@dataclass(frozen=True)
class Companion:
    """A periodic job deploy registers beside the service job."""

    name: str  # the Nomad job ID, e.g. f"{settings.job_name}-backup"
    jobfile: Path  # nomad/mlflow-backup.nomad.hcl
    variables: dict  # HCL -var values of its own (the shared ones: ``shared_variables``)
    describe: str  # one plan line: "nightly at 03:00 UTC, kept 7 deep, copied to /mnt/usb/mlflow"
    secrets: dict = field(default_factory=dict, repr=False)  # items of its Variable nomad/jobs/{name} (never shown)


def backup_id(settings) -> str:
    return f"{settings.job_name}-backup"


def backup_companion(settings) -> Companion | None:
    """The nightly backup (nomad/mlflow-backup.nomad.hcl), None when ``backup_schedule`` is empty."""
    from ...core import database

    schedule = str(settings.backup_schedule or "").strip()
    if not schedule:
        return None
    zone = str(settings.backup_time_zone or "UTC")
    copy = str(settings.backup_copy_path or "").strip()
    variables = {"schedule": schedule, "time_zone": zone, "keep": int(settings.backup_keep),
                 "backups_path": str(settings.backups_path), "copy": bool(copy)}
    secrets = {}
    if database.kind(settings) == "postgres":
        if str(settings.pg_dump_image or "").strip():  # else deploy gives postgres:{the server's major}
            variables["pg_dump_image"] = str(settings.pg_dump_image).strip()
        if str(settings.database_url or "").strip():  # deploy refuses a missing one before any change
            secrets = pg_secrets(database.url(settings))
    where = f", copied to {copy}" if copy else ""
    return Companion(backup_id(settings), settings.path(BACKUP_FILE), variables,
                     f"{_when(schedule, zone)}, kept {int(settings.backup_keep)} deep{where}", secrets)


def pg_secrets(url: str) -> dict:
    """The items of the backup job's Variable with store postgres: libpq's URL without the password, and the
    password hex-encoded (an env file carries any character so; the job's script decodes it into PGPASSWORD, so it
    is on no command line)."""
    from ...adapters import postgres

    password = postgres._password(url) or ""
    return {"database_url": postgres.libpq_url(url), "password_hex": password.encode().hex()}


def _when(schedule: str, zone: str) -> str:
    """``0 3 * * *`` -> "nightly at 03:00 UTC"; any other cron said as it is."""
    match = re.fullmatch(r"(\d{1,2})\s+(\d{1,2})\s+\*\s+\*\s+\*", schedule.strip())
    if match:
        return f"nightly at {int(match[2]):02d}:{int(match[1]):02d} {zone}"
    return f"cron {schedule!r} ({zone})"


def companions(settings) -> list[Companion]:
    """The companions the settings turn on (backup; gc when steps/job/gc.py has it and it is on)."""
    import importlib

    found = [c for c in (backup_companion(settings),) if c is not None]
    try:  # the gc job's module (steps/job/gc.py), when this tree has it
        gc_companion = importlib.import_module(f"{__package__}.gc").gc_companion
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.gc":
            raise
        gc_companion = None
    if gc_companion is not None:
        gc = gc_companion(settings)
        if gc is not None:
            found.append(gc)
    return found


def retired(settings) -> list[str]:
    """The companions deploy knows that the settings turn off (deploy stops those Nomad still runs)."""
    on = {c.name for c in companions(settings)}
    return [name for name in (f"{settings.job_name}-{suffix}" for suffix in SUFFIXES) if name not in on]


# --- the variables -------------------------------------------------------------------------------
_DECLARED = re.compile(r'^\s*variable\s+"([A-Za-z0-9_-]+)"', re.M)


def declared(text: str) -> set[str]:
    """The variables a job file declares."""
    return set(_DECLARED.findall(text))


def shared_variables(settings, image: str, arch: str | None = None) -> dict:
    """What every companion may take from deploy: the service's own values (jobfile.variables) that a
    companion's task needs, and the service job's name."""
    service = jobfile.variables(settings, jobfile.version_of(image) or "0", arch=arch, provider="nomad")
    values = {key: service[key] for key in ("image", "arch", "datacenters", "region", "user", "store",
                                            "database_variable")}
    values["image"] = image
    values["job_name"] = settings.job_name
    return values


def variables_for(companion: Companion, text: str, shared: dict) -> dict:
    """The companion's variables: the shared ones its file declares, then its own."""
    names = declared(text)
    return {**{k: v for k, v in shared.items() if k in names}, **companion.variables}


# --- facts ---------------------------------------------------------------------------------------
@dataclass
class CompanionFacts:
    companion: Companion
    job: dict  # as parsed (the register's body)
    registered: dict | None  # Nomad's job now (None: never registered)
    changed: bool  # Nomad's plan has a diff
    diff: str = ""
    next_launch: str = ""
    secrets_differ: bool = False  # its Variable lacks or differs from ``companion.secrets``


@dataclass
class Facts:
    found: list = field(default_factory=list)  # CompanionFacts
    retiring: list = field(default_factory=list)  # names of retired companions Nomad runs (not stopped)
    paused: tuple = ()  # stopped by this deploy for its release (registered again whatever the plan)


def parse(settings, n, companion: Companion, shared: dict) -> dict:
    """The companion's job as the agent parses it with its variables, in the configured namespace."""
    try:
        text = companion.jobfile.read_text()
    except FileNotFoundError:
        raise UserError(f"job file {companion.jobfile} not found (periodic job {companion.name})",
                        hint="run from the project folder") from None
    body = {"JobHCL": text, "Variables": jobfile.var_file(variables_for(companion, text, shared)), "Canonicalize": True}
    response = nomad_api.call(settings, f"parsing {companion.jobfile.name}", n.jobs.request, "parse", json=body,
                              method="post", allow_redirects=True,
                              refused=lambda said: UserError(f"Nomad's job parser refuses {companion.jobfile}: "
                                                             f"{nomad_api.one_line(said)[:400]}",
                                                             code=ExitCode.BAD_ARGUMENT))
    job = response.json()
    job["ID"] = job["Name"] = companion.name
    job["Namespace"] = settings.nomad_namespace or "default"
    return job


def registered(settings, n, job_id: str) -> dict | None:
    import nomad.api.exceptions as nex

    try:
        return n.job.get_job(job_id)
    except nex.URLNotFoundNomadException:
        return None
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        raise nomad_api.to_user_error(exc, settings, f"reading job {job_id}") from None


def read(settings, n, image: str, arch: str | None = None, paused=(), more: dict | None = None,
         without=()) -> Facts:
    """Each companion parsed and planned by Nomad, and the retired ones Nomad still runs (no change made).
    ``more``: shared variables deploy read (store postgres: ``pg_dump_image`` of the server's major); ``without``:
    companions left as they are (not planned: what they need could not be read)."""
    from . import plan_view

    shared = {**shared_variables(settings, image, arch), **(more or {})}
    facts = Facts(paused=tuple(paused))
    for companion in companions(settings):
        if companion.name in without:
            continue
        job = parse(settings, n, companion, shared)
        answer = nomad_api.call(settings, f"planning job {companion.name}", n.job.plan_job, companion.name,
                                {"Job": job}, diff=True)
        diff = answer.get("Diff")
        facts.found.append(CompanionFacts(
            companion, job, registered(settings, n, companion.name),
            changed=bool(diff) and diff.get("Type") != "None", diff=plan_view.text(diff),
            next_launch=str(answer.get("NextPeriodicLaunch") or ""),
            secrets_differ=bool(companion.secrets) and _secrets_differ(settings, n, companion)))
    for name in retired(settings):
        job = registered(settings, n, name)
        if job is not None and not job.get("Stop"):
            facts.retiring.append(name)
    return facts


def variable_path(name: str) -> str:
    """A companion's Variable: its tasks (and its launches') may read nomad/jobs/{its ID}."""
    return f"nomad/jobs/{name}"


def _secrets_differ(settings, n, companion: Companion) -> bool:
    import nomad.api.exceptions as nex

    try:
        now = n.variable.get_variable(variable_path(companion.name), namespace=settings.nomad_namespace or "default")
    except nex.URLNotFoundNomadException:
        return True
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        raise nomad_api.to_user_error(exc, settings, f"reading the Nomad Variable {variable_path(companion.name)}") \
            from None
    return (now or {}).get("Items") != companion.secrets


# --- the plan ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Op:
    kind: str  # register, stop
    name: str
    job: dict | None = None
    secrets: dict | None = field(default=None, repr=False)  # register: write the Variable first (never shown)
    describe: str = ""


def make_plan(settings, facts: Facts) -> Plan:
    """One line per companion that changes (pure): ``+`` new, ``~`` changed or started again, ``-`` retired."""
    plan = Plan("periodic jobs", reason="no change" if facts.found or facts.retiring else "none turned on")
    for found in facts.found:
        c = found.companion
        stopped = found.registered is not None and bool(found.registered.get("Stop"))
        if found.registered is None:
            action, detail = "+", c.describe
        elif c.name in facts.paused:
            action, detail = "~", f"{c.describe} (started again after the release)"
        elif stopped:
            action, detail = "~", f"{c.describe} (stopped in Nomad: started again)"
        elif found.changed or found.secrets_differ:
            action, detail = "~", c.describe
        else:
            continue
        plan.add(action, f"periodic job {c.name}", detail, diff=found.diff if found.registered is not None else "",
                 op=Op("register", c.name, found.job, dict(c.secrets) if c.secrets else None, c.describe))
    for name in facts.retiring:
        plan.add("-", f"periodic job {name}", "turned off in the settings: stopped (its past runs kept in Nomad)",
                 op=Op("stop", name))
    return plan


# --- applying it ---------------------------------------------------------------------------------
class Apply:
    def __init__(self, settings, n):
        self.settings, self.n = settings, n

    def apply_one(self, change):
        op = change.op
        if op.kind == "register":
            if op.secrets:
                self._write_variable(op.name, op.secrets)
            nomad_api.call(self.settings, f"registering job {op.name}", self.n.jobs.register_job, {"Job": op.job})
            return f"registered periodic job {op.name}: {op.describe}"
        if op.kind == "stop":
            nomad_api.call(self.settings, f"stopping job {op.name}", self.n.job.deregister_job, op.name)
            self._delete_variable(op.name)  # its copy of the database URL (store postgres), if it has one
            return f"stopped periodic job {op.name}"
        raise ValueError(f"unknown periodic op {op.kind!r}")

    def _delete_variable(self, name: str) -> None:
        import nomad.api.exceptions as nex

        from ...core import console

        path = variable_path(name)
        try:
            self.n.variable.delete_variable(path, namespace=self.settings.nomad_namespace or "default")
        except nex.URLNotFoundNomadException:
            pass
        except Exception as exc:  # noqa: BLE001 - the job is stopped; its Variable is said, not fatal
            console.warn(f"could not remove the Nomad Variable {path} (the stopped job's copy of the database URL): "
                         f"{nomad_api.one_line(str(exc))[:200]}; `nomad var purge {path}` removes it")

    def _write_variable(self, name: str, items: dict) -> None:
        from . import database_variable

        path = variable_path(name)
        try:
            self.n.variable.create_variable(path, {"Items": items}, namespace=self.settings.nomad_namespace or "default")
        except Exception as exc:  # noqa: BLE001 - mapped to one line
            raise database_variable._error(exc, self.settings, f"writing the Nomad Variable {path}") from None


# --- never during a release ------------------------------------------------------------------------
def running(settings, n) -> list[str]:
    """The companions Nomad runs now (registered, not stopped), enabled or not."""
    names = [c.name for c in companions(settings)] + retired(settings)
    return [name for name in names if (job := registered(settings, n, name)) is not None and not job.get("Stop")]


def children(settings, n, parent: str) -> list[dict]:
    """The launches of ``parent`` (jobs ``{parent}/periodic-<epoch>``), oldest first."""
    stubs = nomad_api.call(settings, f"listing the launches of {parent}", n.jobs.get_jobs,
                           prefix=parent + CHILD) or []
    return sorted((j for j in stubs if j.get("ParentID") == parent), key=lambda j: j.get("ID", ""))


def pause(settings, n, timeout: float | None = None) -> dict:
    """Before a release: stop every companion Nomad runs, then wait until none of their launches runs (at most
    ``timeout``, deploy_timeout by default). The companions stopped, name -> the job before the stop (``resume``
    registers them again as they were). A launch still running at the deadline: the companions registered again
    and a UserError (nothing of the release done). Anything else that stops it part-way (Nomad's error, Ctrl-C)
    registers again what it had stopped, then goes on up. A launch not started yet (pending: blocked on a volume,
    a drained node) is stopped, not waited for: it would never end."""
    jobs: dict = {}
    try:
        return _pause(settings, n, timeout, jobs)
    except BaseException:
        resume(settings, n, jobs)
        raise


def _pause(settings, n, timeout, jobs: dict) -> dict:
    from ...core import console

    names = running(settings, n)
    if not names:
        return {}
    for name in names:
        job = registered(settings, n, name)
        nomad_api.call(settings, f"stopping job {name}", n.job.deregister_job, name)
        jobs[name] = job
    deadline = Deadline(float(timeout if timeout is not None else settings.deploy_timeout))
    said = False
    while True:
        for parent in names:  # pending launches: nothing of theirs runs yet, stopped rather than waited for
            for child in children(settings, n, parent):
                if child.get("Status") == "pending" and not child.get("Stop"):
                    nomad_api.call(settings, f"stopping job {child['ID']}", n.job.deregister_job, child["ID"])
        live = [j["ID"] for parent in names for j in children(settings, n, parent) if j.get("Status") == "running"]
        if not live:
            return jobs
        if not said:
            console.info(f"waiting for {', '.join(live)} to end (at most {deadline.seconds:g}s)")
            said = True
        if deadline.passed:
            raise UserError(f"the periodic job {live[0]} still ran {deadline.seconds:g}s after its parent was stopped; "
                            "nothing of the release was done (the periodic jobs run again as before)",
                            hint=f"wait for it (`nomad job status {live[0]}`), then deploy again",
                            code=ExitCode.FAILED)
        time.sleep(min(float(settings.deploy_poll), max(deadline.left(), 0.01)))


def resume(settings, n, jobs: dict) -> None:
    """Register stopped companions again as they were (``jobs``: name -> the job before the stop). One that
    cannot be registered is a warning (the error said is the one that stopped the change, if any)."""
    from ...core import console
    from . import lifecycle

    for name, job in jobs.items():
        if job is None:
            continue
        spec = {k: v for k, v in job.items() if k not in lifecycle._SERVER_FIELDS}
        spec["Stop"] = False
        try:
            n.jobs.register_job({"Job": spec})
        except Exception as exc:  # noqa: BLE001 - said, and the next deploy registers it
            console.warn(f"the periodic job {name} was stopped for this change and could not be registered again "
                         f"({type(exc).__name__}): `inv deploy` registers it")


class Paused:
    """The companions paused once for a change to the service other than a deploy's (a rollback, a restore), and
    run again when it ends, done or failed: ``with paused: ...`` around the runner, ``paused.now()`` before the
    first change (under the lock). Nothing is read or stopped on a dry run (``now`` is never called)."""

    def __init__(self, settings, n=None):
        self.settings, self.n, self.jobs = settings, n, None

    def now(self, n=None) -> None:
        if self.jobs is not None:
            return
        from ...core import console

        try:
            if self.n is None:
                self.n = n or nomad_api.client(self.settings)
            running(self.settings, self.n)
        except UserError as exc:  # no Nomad to ask (a restore of a store whose job is not there): said, not fatal
            console.warn(f"the periodic jobs were not read ({exc.message}): if Nomad runs them, one may run "
                         "during this")
            self.jobs = {}
            return
        self.jobs = pause(self.settings, self.n)
        if self.jobs:
            console.info(f"paused periodic job{'s' if len(self.jobs) != 1 else ''} {', '.join(self.jobs)} "
                         "until this is done")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        if self.jobs:
            resume(self.settings, self.n, self.jobs)
        self.jobs = None
        return False


# --- doctor ------------------------------------------------------------------------------------------
def nightly_row(settings):
    """Doctor's `nightly backup` row: the schedule and the outcome of the latest launch of ``{job_name}-backup``
    (its child's allocation: complete, or failed with where to read why)."""
    from ...core.doctor_row import Row

    name = "nightly backup"
    companion = backup_companion(settings)
    n = nomad_api.client(settings)
    job = registered(settings, n, backup_id(settings))
    if companion is None:
        said = "off (backup_schedule is empty)"
        if job is not None and not job.get("Stop"):
            return Row(name, False, f"{said}, but Nomad still runs {backup_id(settings)}",
                       "`inv deploy` stops it")
        return Row(name, True, said)
    when = _when(str(settings.backup_schedule), str(settings.backup_time_zone or "UTC"))
    if job is None:
        if jobfile.current(settings, n) is None:
            return Row(name, True, f"{when}; no job registered yet: `inv deploy` registers it")
        return Row(name, False, f"{when}, but {backup_id(settings)} is not registered in Nomad",
                   "`inv deploy` registers it")
    if job.get("Stop"):
        return Row(name, False, f"{when}, but {backup_id(settings)} is stopped in Nomad: nothing is launched",
                   "`inv deploy` registers it again")
    launches = children(settings, n, backup_id(settings))
    if not launches:
        return Row(name, True, f"{when}; no run yet")
    last = launches[-1]
    allocs = nomad_api.call(settings, f"reading the allocations of {last['ID']}", n.job.get_allocations,
                            last["ID"]) or []
    alloc = sorted(allocs, key=lambda a: a.get("CreateIndex", 0))[-1] if allocs else {}
    status = alloc.get("ClientStatus") or last.get("Status") or "?"
    at = _launched_at(last["ID"])
    if status == "failed":
        return Row(name, False, f"{when}; the last run ({at}) failed",
                   f"`nomad alloc logs -stderr {alloc.get('ID', '')[:8]}` says why; `nomad job periodic force "
                   f"{backup_id(settings)}` runs it again")
    return Row(name, True, f"{when}; last run {at}: {status}")


def _launched_at(child_id: str) -> str:
    import datetime as _dt

    try:
        epoch = int(child_id.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return child_id
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
