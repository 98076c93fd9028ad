"""MLflow's garbage collection as a Nomad periodic job (issue 30): ``{job_name}-gc``, nomad/mlflow-gc.nomad.hcl.

MLflow only marks a deleted run; `mlflow gc` removes it, with its artifacts. With the setting ``gc_older_than``
(``30d``: MLflow's ``--older-than``; empty: off, the default) deploy registers the periodic job beside the service
job (periodic.py, which asks ``gc_companion``), at ``gc_schedule`` (``0 4 * * *``, UTC: after the nightly backup at
03:00, so a run gc removes is in the last backup). Each launch runs the image's docker/mlflow-gc.py: the runs gc is
to remove listed first, `mlflow gc`, then a check that their artifact folders are gone from the artifacts volume;
what is left is said and the launch fails.

``doctor_rows``: doctor's ``gc`` row, from the last launch (a child job ``{job_name}-gc/periodic-<epoch>``): its
outcome and, from its task's output (Nomad's logs API, as `inv logs` reads it), what it removed or left.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field

from ...core.doctor_row import Row
from ...core.errors import UserError
from ...adapters import nomad_api

GC_FILE = "nomad/mlflow-gc.nomad.hcl"
TASK = "gc"  # the task of the job file
TAIL_LINES = 40  # of the last launch's stdout, for doctor
_SHORTHANDS = {"@daily": "daily at 00:00", "@midnight": "daily at 00:00", "@hourly": "hourly",
               "@weekly": "weekly, Sunday at 00:00", "@monthly": "monthly, the 1st at 00:00"}


def gc_id(settings) -> str:
    return f"{settings.job_name}-gc"


def enabled(settings) -> bool:
    return bool(str(settings.gc_older_than or "").strip())


def when(schedule: str) -> str:
    """``0 4 * * *`` -> "daily at 04:00 UTC"; a shorthand in words; any other cron as it is."""
    text = " ".join(str(schedule).split())
    if text in _SHORTHANDS:
        return f"{_SHORTHANDS[text]} UTC"
    match = re.fullmatch(r"(\d{1,2}) (\d{1,2}) \* \* \*", text)
    if match:
        return f"daily at {int(match[2]):02d}:{int(match[1]):02d} UTC"
    return f"cron {text!r} (UTC)"


def describe(settings) -> str:
    """The plan's line: "daily at 04:00 UTC, runs deleted more than 30d ago"."""
    return f"{when(settings.gc_schedule)}, runs deleted more than {settings.gc_older_than} ago"


def gc_companion(settings):
    """The gc periodic job deploy registers (periodic.Companion), None when ``gc_older_than`` is empty."""
    if not enabled(settings):
        return None
    from ...core import database
    from .periodic import Companion

    variables = {"older_than": str(settings.gc_older_than).strip(), "schedule": str(settings.gc_schedule),
                 "artifacts_path": str(settings.artifacts_path)}
    secrets = {}
    if database.kind(settings) == "postgres" and str(settings.database_url or "").strip():
        from .database_variable import wanted  # the URL as the service job gets it (psycopg2 named)

        secrets = {"database_url": wanted(settings)}  # its Variable nomad/jobs/{job_name}-gc, read by the launches
    return Companion(gc_id(settings), settings.path(GC_FILE), variables, describe(settings), secrets=secrets)


# --- the last launch, for doctor --------------------------------------------------------------------
@dataclass
class Launch:
    """One launch of the gc job (a child job), as Nomad and its task's output tell it."""

    job_id: str
    at: _dt.datetime | None  # the launch time (from its ID)
    status: str  # pending, running, complete, failed (the allocation's client status; "pending" without one)
    exit_code: int | None = None
    alloc_id: str = ""
    said: dict = field(default_factory=dict)  # the script's last JSON line ({} when none)
    lines: list = field(default_factory=list)  # its "mlflow-gc: ..." lines


def launch_time(job_id: str) -> _dt.datetime | None:
    match = re.search(r"/periodic-(\d+)$", job_id)
    return _dt.datetime.fromtimestamp(int(match[1]), _dt.timezone.utc) if match else None


def read_launch(settings, n, job_id: str) -> Launch:
    """A launch's outcome: its newest allocation, its task's exit code, its output's last lines."""
    from . import logs

    allocs = nomad_api.call(settings, f"listing the allocations of {job_id}", n.job.get_allocations, job_id) or []
    launch = Launch(job_id, launch_time(job_id), "pending")
    if not allocs:
        return launch
    alloc = sorted(allocs, key=lambda a: a.get("CreateIndex", 0))[-1]
    launch.alloc_id, launch.status = alloc["ID"], str(alloc.get("ClientStatus") or "pending")
    state = (alloc.get("TaskStates") or {}).get(TASK) or {}
    for event in reversed(state.get("Events") or []):
        if event.get("Type") == "Terminated":
            launch.exit_code = int(event.get("ExitCode") or 0)
            break
    if state.get("StartedAt") and not str(state.get("StartedAt")).startswith("0001"):
        try:
            text = logs.tail(settings, n, launch.alloc_id, TASK, "stdout", TAIL_LINES)
        except UserError:
            text = ""
        launch.lines, launch.said = output_of(text)
    return launch


def output_of(text: str) -> tuple[list, dict]:
    """(its ``mlflow-gc: `` lines without the prefix, its last JSON line) of the script's stdout."""
    said, lines = {}, []
    for line in text.splitlines():
        if line.startswith("mlflow-gc: "):
            lines.append(line[len("mlflow-gc: "):])
        elif line.startswith("{"):
            try:
                said = json.loads(line)
            except ValueError:
                pass
    return lines, said


def doctor_rows(settings, timeout: float):
    """Yield doctor's ``gc`` row (only asked when gc is on)."""
    n = nomad_api.client(settings, timeout=max(1, int(timeout * 0.75)))
    yield gc_row(settings, n, _dt.datetime.now(_dt.timezone.utc))


def gc_row(settings, n, now: _dt.datetime) -> Row:
    from .periodic import children, registered

    name = gc_id(settings)
    job = registered(settings, n, name)
    what = describe(settings)
    if job is None:
        from . import jobfile

        if jobfile.current(settings, n) is None:  # nothing deployed yet: the first deploy registers both
            return Row("gc", True, f"{what}; no job registered yet: `inv deploy` registers it")
        return Row("gc", False, f"on ({what}), but the periodic job {name} is not registered",
                   "`inv deploy` registers it")
    if job.get("Stop"):
        return Row("gc", False, f"the periodic job {name} is stopped in Nomad: nothing is removed",
                   "`inv deploy` starts it again (a release stops it while it runs, then starts it)")
    found = children(settings, n, name)
    if not found:
        return Row("gc", True, f"{what}; no run yet (`nomad job periodic force {name}` runs one now)")
    launch = read_launch(settings, n, found[-1]["ID"])
    return launch_row(launch, now)


def launch_row(launch: Launch, now: _dt.datetime) -> Row:
    """The row for the last launch (pure)."""
    ago = _ago(launch.at, now)
    alloc = launch.alloc_id[:8]
    said = launch.said
    if launch.status in ("pending", "running"):
        return Row("gc", True, f"a run is {launch.status} (launched {ago})")
    if launch.status == "complete" and launch.exit_code in (0, None) and not said.get("left") and not said.get("error"):
        summary = launch.lines[-1] if launch.lines else "done"
        return Row("gc", True, f"last run {ago}: {summary}")
    left = [line[len("left: "):] for line in launch.lines if line.startswith("left: ")]
    reasons = [line for line in launch.lines if line.startswith(("mlflow gc failed", "MLFLOW_BACKEND_STORE_URI"))]
    parts = reasons + (["left " + "; ".join(left[:3]) + (f" (and {len(left) - 3} more)" if len(left) > 3 else "")]
                       if left else [])
    code = f" (exit {launch.exit_code})" if launch.exit_code is not None else ""
    found = f"last run {ago} failed{code}" + (": " + "; ".join(parts) if parts else "")
    fix = (f"`nomad alloc logs {alloc}` has its whole output" if alloc else
           f"`nomad job status {launch.job_id}` says why it did not run")
    if said.get("still_in_store"):
        fix += "; fix what stopped gc (a folder's owner: `sudo chown -R` the image's user), the next run tries again"
    elif left:
        fix += "; what is left belongs to no run any more: check it, then remove it by hand (docs/day-two.md#gc)"
    return Row("gc", False, found, fix)


def _ago(at: _dt.datetime | None, now: _dt.datetime) -> str:
    if at is None:
        return "at an unknown time"
    seconds = max(0, int((now - at).total_seconds()))
    span = (f"{seconds}s" if seconds < 120 else f"{seconds // 60} min" if seconds < 7200
            else f"{seconds // 3600} h" if seconds < 172800 else f"{seconds // 86400} days")
    return f"{at:%Y-%m-%d %H:%M} UTC, {span} ago"
