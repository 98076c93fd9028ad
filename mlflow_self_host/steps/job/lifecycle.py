"""Stop and start the Nomad job around work on its data (restore, the takeover of a recipe's setup).

- ``stop``: like `nomad job stop` (no purge), then wait until no allocation is pending or running;
- ``start``: register the stopped job's last definition again, like `nomad job start` (``start_running``: and
  follow it until it runs);
- ``wait_running``: for a job Nomad makes no deployment for, wait until an allocation of a version runs.
"""
from __future__ import annotations

from ...core.errors import ExitCode, UserError
from ...core.poll import Deadline, until
from ...adapters import nomad_api

_LIVE = ("pending", "running")
# What Nomad sets on a registered job, dropped from the definition that is registered again.
_SERVER_FIELDS = ("CreateIndex", "ModifyIndex", "JobModifyIndex", "SubmitTime", "Status", "StatusDescription",
                  "Version", "Stable")


class StillRunning(UserError):
    """The stop's allocations did not end by the deadline; ``job``: the job as it was before the stop."""

    def __init__(self, message: str, hint: str, job: dict):
        super().__init__(message, hint)
        self.job = job


def _allocations(settings, n) -> list[dict]:
    return nomad_api.call(settings, "listing allocations", lambda: n.job.get_allocations(settings.job_name) or [])


def stop(settings, n, timeout: float | None = None) -> dict:
    """Stop the job and wait until no allocation runs; the job as it was before the stop (one still running at
    the deadline: ``StillRunning``, the job left stopped, with the job as it was for a ``start``)."""
    job = nomad_api.call(settings, f"reading job {settings.job_name}", n.job.get_job, settings.job_name)
    nomad_api.call(settings, f"stopping job {settings.job_name}", n.job.deregister_job, settings.job_name)
    stopped = nomad_api.call(settings, f"reading job {settings.job_name}", n.job.get_job, settings.job_name)
    if stopped.get("Stop") and stopped.get("Stable"):
        # the stopped copy keeps the Stable flag (fsm.go): Nomad's auto_revert could go back to it
        nomad_api.set_stable(settings, n, stopped["Version"], False)

    def none_live():
        return not [a for a in _allocations(settings, n) if a.get("ClientStatus") in _LIVE]

    def still_running(_):
        raise StillRunning(f"job {settings.job_name} still has running allocations after the stop",
                           "check `nomad job status`; the database was not touched", job)

    until(none_live, Deadline(timeout or settings.deploy_timeout), on_timeout=still_running)
    return job


def start(settings, n, job: dict) -> dict:
    """Register the stopped ``job``'s definition again, running; Nomad's answer (with its EvalID)."""
    job = {key: value for key, value in job.items() if key not in _SERVER_FIELDS}
    job["Stop"] = False
    return nomad_api.call(settings, f"starting job {settings.job_name}", n.job.register_job, settings.job_name,
                          {"Job": job})


def start_running(settings, n, job: dict, label: str):
    """``start`` the stopped ``job``, then follow it until it runs (its deployment, or with no update block an
    allocation of its version); follow's Outcome. A failure is a UserError."""
    from . import follow

    response = start(settings, n, job)
    outcome = follow.after_submit(settings, n, response, label)
    if outcome.status != "successful":  # no update block: no deployment to follow
        wait_running(settings, n, outcome.job_version)
    return outcome


def wait_running(settings, n, job_version, timeout: float | None = None) -> dict:
    """Wait until an allocation of ``job_version`` (None: any) runs; its allocation. A failed or lost one
    is exit 11, as is none running by the deadline."""

    def running():
        allocs = [a for a in _allocations(settings, n) if job_version is None or a.get("JobVersion") == job_version]
        if any(a.get("ClientStatus") == "running" for a in allocs):
            return allocs[-1]
        failed = [a for a in allocs if a.get("ClientStatus") in ("failed", "lost")]
        if failed:
            raise UserError(f"job {settings.job_name}: allocation {failed[-1]['ID'][:8]} {failed[-1]['ClientStatus']}",
                            code=ExitCode.DEPLOY_FAILED)
        return None

    def none_running(_):
        raise UserError(f"job {settings.job_name} has no running allocation after {settings.deploy_timeout}s",
                        hint="see `inv status`", code=ExitCode.DEPLOY_FAILED)

    return until(running, Deadline(timeout or settings.deploy_timeout), on_timeout=none_running)
