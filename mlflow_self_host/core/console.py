"""The one way to talk to the user: rich on stderr for messages, stdout for results.

Import this module only inside task bodies: rich costs time at load, and ``inv --list`` must not
pay for it.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable

from rich.console import Console
from rich.markup import escape as _rich_escape
from rich.table import Table

# Results (tables, JSON, the version) go to stdout; progress and messages to stderr.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _quiet() -> bool:
    return bool(os.environ.get("MSH_QUIET"))


def error(message: str, hint: str | None = None) -> None:
    """The one red line of a failure, and what to do next."""
    err.print(f"[bold red]error:[/] [red]{escape(message)}[/]")
    if hint:
        err.print(f"  [dim]→ {escape(hint)}[/]")


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}")


def step(message: str) -> None:
    if not _quiet():
        err.print(f"[bold cyan]▸[/] {escape(message)}")


def done(message: str) -> None:
    err.print(f"[green]✓[/] {escape(message)}")


def info(message: str) -> None:
    if not _quiet():
        err.print(escape(message))


def result(message: str) -> None:
    """A plain result line on stdout (scripts read it)."""
    out.print(escape(message))


def json(data) -> None:
    import json as _json

    sys.stdout.write(_json.dumps(data, indent=2, default=str) + "\n")


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable], *, to_err: bool = False) -> None:
    t = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*[escape(str(cell)) for cell in row])
    (err if to_err else out).print(t)


def escape(text: str) -> str:
    """Text shown as is: rich markup in it (e.g. `[bold]` in a log line) is not interpreted."""
    return _rich_escape(str(text))
