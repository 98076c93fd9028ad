"""Plans: what a step would change, computed from facts, printed by --dry-run, then applied.

A step returns a ``Plan`` (a list of ``Change``); an empty plan is a first-class "nothing to do".
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Change:
    action: str  # create, update, replace, delete, run, restart, register, push, ...
    target: str  # what is changed: a path, a record, a job
    detail: str = ""  # one line for the user
    diff: str = ""  # a unified diff, when there is one


@dataclass
class Plan:
    title: str
    changes: list[Change] = field(default_factory=list)

    def add(self, action: str, target: str, detail: str = "", diff: str = "") -> None:
        self.changes.append(Change(action, target, detail, diff))

    @property
    def empty(self) -> bool:
        return not self.changes

    def __iter__(self):
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)


def show(plan: Plan, *, dry_run: bool = False) -> None:
    """Print a plan; with dry_run, say that nothing was changed."""
    from . import console

    if plan.empty:
        console.done(f"{plan.title}: no change")
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
