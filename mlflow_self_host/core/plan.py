"""Plans: what a step would change, computed from facts, printed by --dry-run, then applied.

Every area that changes something has the same three parts (as pyinfra's facts and operations,
Kamal's commands as data):

- ``read_facts(...)``: what is there now (the only part that reads a host, an engine, an API);
- ``make_plan(settings, facts, ...)``: pure, no I/O: a ``Plan`` of ``Change``; each change carries
  the operation that makes it as plain data (``op``: a small frozen dataclass or a dict);
- ``Apply(...).apply_one(change)``: performs one change's ``op`` (the class holds what the changes
  share: the connection, and what one change hands the next). An area with two plans names them
  ``make_<what>_plan`` (local: ``make_up_plan``, ``make_down_plan``); the DNS backends are each one
  class with ``read_facts``, ``make_plan`` and ``apply_one`` (backends.py).

``execute(plan, apply_one, dry_run=...)`` shows the plan, stops there on a dry run or an empty
plan (which says why: ``Plan.reason``), else applies the changes in order and reports each one.
A task body is then one call to the area's ``run``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Change:
    action: str  # create, update, replace, delete, run, restart, register, push, ...
    target: str  # what is changed: a path, a record, a job
    detail: str = ""  # one line for the user
    diff: str = ""  # a unified diff, when there is one
    op: Any = None  # the operation that makes the change, as plain data (read by the area's apply_one)

    def describe(self) -> str:
        return f"{self.action} {self.target}" + (f": {self.detail}" if self.detail else "")


@dataclass
class Plan:
    title: str
    changes: list[Change] = field(default_factory=list)
    reason: str = ""  # why there is nothing to do, for an empty plan ("already deployed: v0.99")
    notes: list[str] = field(default_factory=list)  # what is kept as it is though it differs, and why

    def add(self, action: str, target: str, detail: str = "", diff: str = "", op: Any = None) -> Change:
        change = Change(action, target, detail, diff, op)
        self.changes.append(change)
        return change

    @property
    def empty(self) -> bool:
        return not self.changes

    @property
    def ops(self) -> list:
        return [change.op for change in self.changes]

    def __iter__(self):
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)


# What apply_one may return to report the change itself (a restart that says what it waited for).
QUIET = object()


def execute(plan: Plan, apply_one: Callable[[Change], Any], *, dry_run: bool = False) -> Plan:
    """Show ``plan``; unless ``dry_run`` or empty, apply each change in order with ``apply_one`` and
    report it ("✓ create /path: detail"; a string returned by ``apply_one`` is reported instead,
    ``QUIET`` reports nothing). The first failure stops the run (the changes before it stay made)."""
    from . import console

    show(plan, dry_run=dry_run)
    if dry_run or plan.empty:
        return plan
    for change in plan.changes:
        said = apply_one(change)
        if said is QUIET:
            continue
        console.done(said if isinstance(said, str) else change.describe())
    return plan


def show(plan: Plan, *, dry_run: bool = False) -> None:
    """Print a plan; with dry_run, say that nothing was changed."""
    from . import console

    for note in plan.notes:
        console.done(note)
    if plan.empty:
        console.done(f"{plan.title}: {plan.reason or 'no change'}")
        return
    head = "would change" if dry_run else "changes"
    console.err.print(f"[bold]{console.escape(plan.title)}[/]: {head} ({len(plan)})")
    for change in plan:
        line = f"  [yellow]{change.action:>8}[/] {console.escape(change.target)}"
        if change.detail:
            line += f"  [dim]{console.escape(change.detail)}[/]"
        console.err.print(line)
        if change.diff:
            _show_diff(change.diff)
    if dry_run:
        console.err.print("[dim]dry run: nothing was changed[/]")


def _show_diff(diff: str) -> None:
    from . import console

    for line in diff.splitlines():
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
        console.err.print(f"      [{style}]{console.escape(line)}[/]")
