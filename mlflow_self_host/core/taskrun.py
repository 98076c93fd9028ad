"""How a task fails: one red line and a non-zero exit, the traceback only with --debug.

Light on purpose (stdlib and invoke only): tasks.py imports it at load.
"""
from __future__ import annotations

import functools
import logging
import os

from invoke import Exit


def debug_enabled() -> bool:
    """``inv --debug``/``-d`` (Invoke turns on DEBUG logging), INVOKE_DEBUG or MSH_DEBUG."""
    return (
        logging.getLogger().isEnabledFor(logging.DEBUG)
        or bool(os.environ.get("INVOKE_DEBUG"))
        or bool(os.environ.get("MSH_DEBUG"))
    )


def guarded(body):
    """Wrap a task body so that failures become one red line and an exit code."""

    @functools.wraps(body)
    def wrapper(*args, **kwargs):
        try:
            return body(*args, **kwargs)
        except Exit:
            raise
        except KeyboardInterrupt:
            from . import console

            console.error("interrupted")
            raise Exit(code=130)
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
