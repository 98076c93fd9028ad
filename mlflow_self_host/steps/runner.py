"""The one runner of every task that changes something: facts -> a pure plan -> apply, step by step.

A task is a sequence of ``Step``: each reads its facts (``read``: no side effect, also on a dry run),
makes its plan from them (``plan``: pure) and applies the plan's changes one at a time (``apply_one``).
``run(steps, dry_run=..., lock=...)`` is the only place that knows

- **the deploy lock**: taken once for the whole sequence when the task needs it (``lock=Lock(settings,
  "deploy v1.2.0")``); a dry run only checks that no one holds it (adapters/lock.py);
- **dry run**: every step is read and planned and its plan shown, nothing is applied. A step that cannot
  read its part (an unreachable cluster) or whose plan refuses is said where it happens ("would stop
  here"), and the later steps are still read and shown, so the dry run shows the whole task; it then
  ends with the first refusal's error (and its exit code): the real run would stop there.
- **nothing to do**: a step whose plan is empty says why (``Plan.reason``) and applies nothing.

Steps may come from a generator: a step made after the earlier ones ran (or, on a dry run, were planned)
uses what they hand on, e.g. the image's platform for the job's constraint.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..core.errors import UserError
from ..core.plan import Change, Plan, execute


@dataclass
class Step:
    """One part of a task. ``plan(facts)`` must be pure; ``read()`` must not change anything."""

    name: str
    plan: Callable[[Any], Plan]
    read: Callable[[], Any] = lambda: None
    apply_one: Callable[[Change], Any] | None = None
    show: bool = True  # False: the step shows its own plan (a diff it prints itself)


@dataclass(frozen=True)
class Lock:
    """The deploy lock for ``what`` (the command it is held for, shown to whoever finds it taken)."""

    settings: Any
    what: str


@dataclass
class Outcome:
    plans: dict[str, Plan] = field(default_factory=dict)  # step name -> its plan (also on a dry run)
    refusals: list[tuple[str, UserError]] = field(default_factory=list)  # dry run: (step, error) in order


def _held(lock: Lock | None, dry_run: bool):
    if lock is None:
        return contextlib.nullcontext()
    from ..adapters import lock as locks

    if dry_run:
        locks.check_free(lock.settings)
        return contextlib.nullcontext()
    return locks.hold(lock.settings, lock.what)


def run(steps: Iterable[Step], *, dry_run: bool = False, lock: Lock | None = None, inside=None) -> Outcome:
    """Read, plan and (unless ``dry_run``) apply each step in order, under ``lock`` when given; ``inside``: a
    context manager entered once the lock is held and left before it is released (steps/job/periodic.Paused:
    what a step paused runs again while the lock still keeps others out)."""
    outcome = Outcome()
    with _held(lock, dry_run), (inside if inside is not None else contextlib.nullcontext()):
        for step in steps:
            try:
                plan = step.plan(step.read())
            except UserError as exc:
                if not dry_run:
                    raise
                seen = any(exc is said for _, said in outcome.refusals)  # one refusal that stops two steps
                _would_stop(step, exc, first=not outcome.refusals or exc is outcome.refusals[0][1])
                if not seen:
                    outcome.refusals.append((step.name, exc))
                continue
            outcome.plans[step.name] = plan
            if step.show:
                execute(plan, step.apply_one or _nothing, dry_run=dry_run)
            elif not dry_run and not plan.empty:
                for change in plan:
                    (step.apply_one or _nothing)(change)
    if outcome.refusals:
        raise outcome.refusals[0][1]
    return outcome


def _would_stop(step: Step, exc: UserError, first: bool) -> None:
    """Where a dry run would stop. The first refusal is the task's one red line at the end (said once: here
    only its step); a later step's refusal is not raised, so its message is said here."""
    from ..core import console

    said = "would stop here (the error below)" if first else f"would stop here too: {exc.message}"
    console.err.print(f"[yellow]✗ {console.escape(step.name)}: {console.escape(said)}[/]")


def _nothing(change: Change) -> None:
    raise RuntimeError(f"a step without apply_one has a change: {change.describe()}")
