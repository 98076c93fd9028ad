"""How a task fails: one red line and a non-zero exit, the traceback only with --debug.

Light on purpose (stdlib and invoke only): tasks.py imports it at load.
"""
from __future__ import annotations

import functools
import logging
import os

from invoke import Exit
from invoke.exceptions import ParseError


def debug_enabled() -> bool:
    """``inv --debug``/``-d`` (Invoke turns on DEBUG logging), INVOKE_DEBUG or MSH_DEBUG."""
    return (
        logging.getLogger().isEnabledFor(logging.DEBUG)
        or bool(os.environ.get("INVOKE_DEBUG"))
        or bool(os.environ.get("MSH_DEBUG"))
    )


# Short flags that meant another flag of the same task until December 2026, when each letter got one meaning
# in every task (tasks.py's SHORT_FLAGS). Where the new meaning would quietly do something other than what the
# old one asked for (a cron's `inv backup -d` would take no backup), the letter is refused for now; else said.
MOVED_SHORT_FLAGS = {
    ("backup", "d"): ("--download", "-x", True),
    ("configure-host", "a"): ("--ansible", "--ansible", True),
    ("up", "d"): ("--docker", "-D", False),
    ("release", "a"): ("--allow-dirty", "-A", False),
}


def short_letters(task: str, argv: list[str], task_names: set[str]) -> set[str]:
    """The one-letter flags given to ``task`` on this command line (``-dx`` is d and x)."""
    letters: set[str] = set()
    inside = False
    for token in argv[1:]:
        if token in task_names:
            inside = token == task
        elif inside and token.startswith("-") and not token.startswith("--") and len(token) > 1:
            letters.update(token[1:])
    return letters


def check_moved_short_flags(task: str, argv: list[str], task_names: set[str]) -> None:
    """Refuse (exit 2) or warn about a short flag whose meaning in ``task`` moved (MOVED_SHORT_FLAGS)."""
    for letter in sorted(short_letters(task, argv, task_names)):
        moved = MOVED_SHORT_FLAGS.get((task, letter))
        if moved is None:
            continue
        old, now, refuse = moved
        meaning = "--dry-run" if letter == "d" else "--accept-host-key"
        was = f"{old} (now {now})" if now != old else f"{old} (now without a short form)"
        said = f"-{letter} is {meaning} in every task since December 2026; in `inv {task}` it was {was}"
        if refuse:
            from .errors import ExitCode, UserError

            raise UserError(said, hint=f"write {meaning} or {old}, so the command means one thing",
                            code=ExitCode.BAD_ARGUMENT)
        from . import console

        console.warn(said)


class BadFlag(ParseError, Exit):
    """invoke's ParseError (printed as invoke prints it, caught as one by whoever parses) that exits 2 (an Exit)."""

    def __init__(self, error: ParseError):
        ParseError.__init__(self, str(error), error.context)
        self.message, self._code = None, 2


def bad_flags_exit_2() -> None:
    """A task flag invoke cannot parse (unknown, a value missing) exits 2, as every bad flag value does (invoke
    says 1). Patches invoke's parser once; tasks.py calls it at load, so it covers the tasks' flags."""
    from invoke import parser

    if getattr(parser.Parser.parse_argv, "_exit_2", False):
        return
    parse_argv = parser.Parser.parse_argv

    @functools.wraps(parse_argv)
    def parse(self, argv):
        try:
            return parse_argv(self, argv)
        except parser.ParseError as exc:
            raise BadFlag(exc) from None

    parse._exit_2 = True
    parser.Parser.parse_argv = parse


# Positional arguments a task may be given without (invoke requires every positional one): an absent one is "".
OPTIONAL_POSITIONALS = {"restore": {"backup"}}  # `inv restore --verify` drills the newest backup


def optional_positionals() -> None:
    """Let the positional arguments of OPTIONAL_POSITIONALS be left out (their value then ""). Patches invoke's
    parser once; tasks.py calls it at load."""
    from invoke import parser

    if getattr(parser.ParseMachine.complete_context, "_optional", False):
        return
    complete_context = parser.ParseMachine.complete_context

    @functools.wraps(complete_context)
    def complete(self):
        context = self.context
        if context is not None:
            for arg in context.missing_positional_args:
                if arg.name in OPTIONAL_POSITIONALS.get(context.name, ()):
                    arg.set_value("")
        return complete_context(self)

    complete._optional = True
    parser.ParseMachine.complete_context = complete


def guarded(body, task_names=None):
    """Wrap a task body so that failures become one red line and an exit code. ``task_names`` (a callable giving
    the collection's task names) turns on the check of short flags whose meaning moved."""

    @functools.wraps(body)
    def wrapper(*args, **kwargs):
        try:
            if task_names is not None:
                import sys

                check_moved_short_flags(body.__name__.replace("_", "-"), sys.argv, task_names())
            return body(*args, **kwargs)
        except Exit:
            raise
        except KeyboardInterrupt:
            from . import console

            from .errors import INTERRUPTED

            console.error("interrupted")
            raise Exit(code=INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - the whole point: no traceback for users
            if debug_enabled():
                raise
            from . import console
            from .errors import UserError

            if isinstance(exc, UserError):
                console.error(exc.message, exc.hint)
                raise Exit(code=exc.code)
            first = (str(exc).strip().splitlines() or [""])[0]
            console.error(
                f"unexpected {type(exc).__name__}: {first}",
                "run again as `inv --debug ...` for the traceback, and report it",
            )
            raise Exit(code=1)

    return wrapper
