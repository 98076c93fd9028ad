"""``inv dns``: check only, or read the backend's entries, plan, apply, then check the DNS answer.

The record is ``record.wanted_cname(settings)``; the backend (``backends.py``) reads its facts,
makes the plan and applies it change by change through ``runner.run``. After a change (and the
backend's session or connection is closed, so a Pi-hole's API seat is free again) the DNS server is
asked until it answers the new record (``check.verify``).
"""
from __future__ import annotations

from ...core import plan as plans
from ...adapters.dns.record import wanted_cname


def run(settings, check_only: bool = False, remove: bool = False, dry_run: bool = False) -> plans.Plan | None:
    """The task: ``check_only`` reports the answer; else sync the record, then check the answer."""
    from ...core import console
    from .. import runner
    from ...adapters.dns import backends, check

    wanted = wanted_cname(settings)
    if check_only:
        check.report(settings, wanted)
        return None
    with backends.backend(settings) as backend:
        made: list[plans.Plan] = []  # the backend's apply_one takes the whole plan too

        def make(facts) -> plans.Plan:
            made.append(backend.make_plan(facts, wanted, remove=remove))
            return made[-1]

        runner.run([runner.Step("dns", read=backend.read_facts, plan=make,
                                apply_one=lambda change: backend.apply_one(change, made[-1]))], dry_run=dry_run)
        plan = made[-1]
        changed = not dry_run and not plan.empty
        if changed:
            console.done(f"{backend.where}: " + ("removed " + wanted.names[0] if remove else wanted.describe()))
    if changed:
        check.verify(settings, wanted, present=not remove)
    return plan
