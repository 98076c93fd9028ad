"""`inv rollback [--to VERSION]`: revert the job (check-and-set on its version), follow the deployment.

Facts (``read_facts``: the registered job, its versions, the version to go back to (``choose``),
Nomad's answer whether it has the current specification, and with store postgres the names of the database
Variable's items) → ``make_plan`` (pure: one ``revert`` change to that version, or an empty plan with its
reason; refused when that version's database URL item is gone) → ``runner.run`` (the revert, then the
deployment followed).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import ExitCode, UserError
from ..core.plan import Plan
from ..steps.job import follow as follower
from ..steps.job import database_variable, jobfile
from ..adapters import nomad_api


@dataclass(frozen=True)
class Revert:
    """The operation: revert the job to ``version``, refused by Nomad unless it is still at ``prior``."""

    version: int
    prior: int


@dataclass
class RollbackFacts:
    current: dict | None  # the registered job (None: not registered)
    versions: list = field(default_factory=list)  # the job's versions, as Nomad lists them
    same_specification: set = field(default_factory=set)  # versions Nomad's plan finds equal to the current
    target: dict | None = None  # the version to go back to (``choose``; None: no job)
    variable_items: frozenset = frozenset()  # store postgres: the names of the database Variable's items


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


def read_facts(settings, n, to=None) -> RollbackFacts:
    """The job, its versions, the version to go back to (``to``, or the one chosen) and whether it has
    the current specification (Nomad plans only that one: the choice is refused first when it cannot
    be made)."""
    current = jobfile.current(settings, n)
    if current is None:
        return RollbackFacts(None)
    versions = nomad_api.call(settings, "listing job versions", n.job.get_versions, settings.job_name)
    facts = RollbackFacts(current, (versions or {}).get("Versions") or [])
    target = facts.target = choose(current, facts.versions, to)
    if _same_specification(settings, n, target):
        facts.same_specification.add(target["Version"])
    if database_variable.registered_revision(target):  # it reads its database URL from the Variable
        facts.variable_items = frozenset((database_variable.fetch(settings, n) or {}).get("Items") or {})
    return facts


def make_plan(settings, facts: RollbackFacts) -> Plan:
    """The revert to the chosen version, or why not (UserError: no job; an empty plan: the same
    specification). Pure."""
    current, target = facts.current, facts.target
    if current is None:
        raise UserError(f"job {settings.job_name} is not registered in namespace "
                        f"{settings.nomad_namespace or 'default'}: nothing to roll back")
    plan = Plan(f"rollback job {settings.job_name}")
    if target["Version"] in facts.same_specification:
        plan.reason = (f"job version {target['Version']} has the same specification as the current version "
                       f"{current['Version']} ({jobfile.image_of(current)}): nothing to roll back")
        return plan
    detail = (f"version {current['Version']} ({jobfile.image_of(current)}) → version {target['Version']} "
              f"({jobfile.image_of(target)})")
    revision, now = database_variable.registered_revision(target), database_variable.registered_revision(current)
    if revision and not database_variable.holds_revision(facts.variable_items, revision):
        raise UserError(f"job version {target['Version']} reads its database URL at revision {revision}, which "
                        f"{jobfile.database_variable(settings)} no longer holds: its tasks would stop at start; "
                        "nothing was reverted",
                        hint="go back to a newer version (`inv rollback --to N`), or `inv deploy` the image you want")
    if revision and revision != now:
        detail += (f", with the database URL it ran with (revision {revision})"
                   if database_variable.item_for(revision) in facts.variable_items
                   else f", with the admin password and secret key it ran with (revision {revision})")
    plan.add("revert", f"job {settings.job_name}", detail, op=Revert(target["Version"], current["Version"]))
    return plan


def rollback(settings, to=None, dry_run: bool = False):
    """`inv rollback` through the runner, under the deploy lock (a dry run only says who holds it): the
    plan on a dry run; None when there is nothing to roll back; else the followed outcome."""
    from ..steps import runner

    n = nomad_api.client(settings)
    applying = Apply(settings, n)
    step = runner.Step("rollback", read=lambda: read_facts(settings, n, to), plan=lambda facts: make_plan(settings, facts),
                       apply_one=applying.apply_one)
    outcome = runner.run([step], dry_run=dry_run,
                         lock=runner.Lock(settings, f"rollback{' --to ' + str(to) if to is not None else ''}"))
    plan = outcome.plans["rollback"]
    if plan.empty:
        return None
    return applying.outcome if applying.outcome is not None else plan


class Apply:
    """The revert on Nomad client ``n``; ``outcome`` is the followed deployment's (None before)."""

    def __init__(self, settings, n):
        self.settings, self.n = settings, n
        self.outcome = None

    def apply_one(self, change) -> str:
        """Revert (check-and-set on the current version), then follow the deployment it starts."""
        import nomad.api.exceptions as nex

        settings, n, op = self.settings, self.n, change.op
        try:
            response = n.job.revert_job(settings.job_name, op.version, enforce_prior_version=op.prior)
        except nex.BaseNomadException as exc:
            code, text = nomad_api.status_and_text(exc)
            if "enforcing version" in text:
                raise UserError(f"job {settings.job_name} changed while rolling back ({text}); nothing was "
                                "reverted", hint="run `inv rollback` again to see the versions now") from None
            raise nomad_api.to_user_error(exc, settings, f"reverting job {settings.job_name}") from None
        outcome = self.outcome = follower.after_submit(settings, n, response, f"job version {op.version}")
        return (f"rolled back to job version {op.version} ({outcome.image}); now job version "
                f"{outcome.job_version}")
