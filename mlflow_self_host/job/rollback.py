"""`inv rollback [--to VERSION]`: revert the job (check-and-set on its version), follow the deployment."""
from __future__ import annotations

from ..errors import ExitCode, UserError
from ..plan import Plan, show
from . import follow as follower
from . import jobfile, nomad_api


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


def rollback(settings, to=None, dry_run: bool = False):
    """`inv rollback`, under the deploy lock (a dry run only says who holds it)."""
    from . import lock

    if dry_run:
        lock.check_free(settings)
        return _rollback(settings, to, dry_run)
    with lock.hold(settings, f"rollback{' --to ' + str(to) if to is not None else ''}"):
        return _rollback(settings, to, dry_run)


def _rollback(settings, to, dry_run: bool):
    from .. import console

    n = nomad_api.client(settings)
    current = jobfile.current(settings, n)
    if current is None:
        raise UserError(f"job {settings.job_name} is not registered in namespace "
                        f"{settings.nomad_namespace or 'default'}: nothing to roll back")
    versions = nomad_api.call(settings, "listing job versions", n.job.get_versions, settings.job_name)
    target = choose(current, (versions or {}).get("Versions") or [], to)
    if _same_specification(settings, n, target):
        console.done(f"job version {target['Version']} has the same specification as the current version "
                     f"{current['Version']} ({jobfile.image_of(current)}): nothing to roll back")
        return None
    plan = Plan(f"rollback job {settings.job_name}")
    plan.add("revert", f"job {settings.job_name}",
             f"version {current['Version']} ({jobfile.image_of(current)}) → version {target['Version']} "
             f"({jobfile.image_of(target)})")
    show(plan, dry_run=dry_run)
    if dry_run:
        return plan
    import nomad.api.exceptions as nex

    try:
        response = n.job.revert_job(settings.job_name, target["Version"], enforce_prior_version=current["Version"])
    except nex.BaseNomadException as exc:
        code, text = nomad_api.status_and_text(exc)
        if "enforcing version" in text:
            raise UserError(f"job {settings.job_name} changed while rolling back ({text}); nothing was reverted",
                            hint="run `inv rollback` again to see the versions now") from None
        raise nomad_api.to_user_error(exc, settings, f"reverting job {settings.job_name}") from None
    outcome = follower.after_submit(settings, n, response, f"job version {target['Version']}")
    console.done(f"rolled back to job version {target['Version']} ({outcome.image}); now job version "
                 f"{outcome.job_version}")
    return outcome
