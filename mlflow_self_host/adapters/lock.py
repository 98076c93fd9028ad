"""The deploy lock: one release, deploy, rollback or restore at a time, as Kamal's `kamal lock`.

It is a Nomad Variable, ``mlflow-self-host/lock/{job_name}`` in the job's namespace, where every
deployer sees it (they all talk to the same Nomad): taken with a check-and-set create (``?cas=0``: only
if no one holds it), released with a check-and-set delete of the very version we wrote, so a lock
someone else took meanwhile is never removed by mistake. It holds who (user@host, pid), since when,
and for what (the command). A lock older than ``lock_stale_after`` seconds is called stale (its
holder was killed, or is hanging): `inv lock --release` breaks any lock, saying whose it was.

The holder releases it on success, on failure and on Ctrl-C (``hold`` is a context manager). Within
one process the lock is re-entrant: `inv release` holds it and its deploy step runs inside.
"""
from __future__ import annotations

import contextlib
import getpass
import os
import socket
import time
from dataclasses import dataclass

from ..core.errors import ExitCode, UserError
from ..core.settings import LOCK_VARIABLE_PREFIX
from . import nomad_api

_held: dict[str, int] = {}  # variable path -> ModifyIndex of the lock this process holds


@dataclass
class Holder:
    who: str
    since: float  # epoch seconds
    what: str
    pid: str = ""
    modify_index: int = 0

    def age(self) -> float:
        return max(0.0, time.time() - self.since)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"{self.who} since {when} ({_ago(self.age())} ago) for `{self.what}`"


def path(settings) -> str:
    return f"{LOCK_VARIABLE_PREFIX}{settings.job_name}"


def _namespace(settings) -> str:
    return settings.nomad_namespace or "default"


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _holder(variable: dict | None) -> Holder | None:
    if not variable:
        return None
    items = variable.get("Items") or {}
    try:
        since = float(items.get("since", "0"))
    except ValueError:
        since = 0.0
    return Holder(items.get("who", "?"), since, items.get("what", "?"), items.get("pid", ""),
                  int(variable.get("ModifyIndex") or 0))


def read(settings, n=None) -> Holder | None:
    """Who holds the lock now, or None."""
    import nomad.api.exceptions as nex

    n = n or nomad_api.client(settings)
    try:
        variable = n.variable.get_variable(path(settings), namespace=_namespace(settings))
    except nex.URLNotFoundNomadException:
        return None
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        raise _error(exc, settings, "reading the deploy lock") from None
    return _holder(variable)


def stale(settings, holder: Holder) -> bool:
    return holder.age() > float(settings.lock_stale_after)


def refused(settings, holder: Holder) -> UserError:
    if stale(settings, holder):
        return UserError(f"the deploy lock of job {settings.job_name} is held by {holder.describe()}, older than "
                         f"lock_stale_after ({settings.lock_stale_after}s): its holder was probably killed",
                         hint="if nothing is deploying, break it with `inv lock --release`, then run again",
                         code=ExitCode.LOCKED)
    return UserError(f"job {settings.job_name} is being deployed by {holder.describe()}; nothing was changed",
                     hint="wait for it to end (`inv lock` shows the lock), or, if you are sure nothing runs, "
                          "`inv lock --release`", code=ExitCode.LOCKED)


def acquire(settings, what: str, n=None) -> int:
    """Take the lock for ``what``; refused at once (exit 14) when someone holds it. Its ModifyIndex."""
    import nomad.api.exceptions as nex

    n = n or nomad_api.client(settings)
    items = {"who": f"{getpass.getuser()}@{socket.gethostname()}", "pid": str(os.getpid()),
             "since": f"{time.time():.3f}", "what": what}
    try:
        created = n.variable.create_variable(path(settings), {"Items": items}, namespace=_namespace(settings), cas=0)
    except nex.VariableConflict as exc:
        holder = _holder(_json(exc)) or read(settings, n)
        if holder is None:  # released between the two calls: try once more
            return acquire(settings, what, n)
        raise refused(settings, holder) from None
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        raise _error(exc, settings, "taking the deploy lock") from None
    index = int(created.get("ModifyIndex") or 0)
    _held[path(settings)] = index
    return index


def release(settings, index: int | None = None, n=None) -> Holder | None:
    """Delete the lock: the version ``index`` only (ours), or whichever is there. Returns what was released."""
    import nomad.api.exceptions as nex

    n = n or nomad_api.client(settings)
    holder = None
    if index is None:
        holder = read(settings, n)
        if holder is None:
            return None
        index = holder.modify_index
    try:
        n.variable.delete_variable(path(settings), namespace=_namespace(settings), cas=index)
    except nex.VariableConflict:
        return None  # not ours any more (broken and taken by someone else): leave it
    except nex.URLNotFoundNomadException:
        return None
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        raise _error(exc, settings, "releasing the deploy lock") from None
    finally:
        if _held.get(path(settings)) == index:
            del _held[path(settings)]
    return holder


@contextlib.contextmanager
def hold(settings, what: str):
    """Hold the lock for the block (re-entrant in one process); released on any exit, Ctrl-C included."""
    if path(settings) in _held:
        yield
        return
    n = nomad_api.client(settings)
    index = acquire(settings, what, n)
    try:
        yield
    finally:
        try:
            release(settings, index, n)
        except UserError as exc:
            from ..core import console

            console.warn(f"the deploy lock was not released ({exc.message}): `inv lock --release`")


def check_free(settings, n=None) -> None:
    """For dry runs: say who holds the lock, without taking it (a Nomad that does not answer is only a
    warning here: the real run stops there)."""
    from ..core import console

    try:
        holder = read(settings, n)
    except UserError as exc:
        console.warn(f"cannot read the deploy lock: {exc.message}")
        return
    if holder is not None:
        console.warn(refused(settings, holder).message + " (a real run would stop here)")


def _json(exc) -> dict | None:
    try:
        return exc.nomad_resp.json()
    except Exception:  # noqa: BLE001 - a conflict without a body
        return None


def _error(exc, settings, what: str) -> UserError:
    error = nomad_api.to_user_error(exc, settings, what)
    code, text = nomad_api.status_and_text(exc)
    if code == 404 and "variable" not in text.lower():  # no /v1/var at all
        error.hint = "the deploy lock is a Nomad Variable: Nomad 1.4 or newer"
    return error


def command(settings, take: bool = False, release_lock: bool = False, message: str | None = None) -> Holder | None:
    """`inv lock`: show the lock; ``take`` it by hand (kept until released), or ``release_lock`` it."""
    from ..core import console

    if take and release_lock:
        raise UserError("--take and --release: one at a time", code=ExitCode.BAD_ARGUMENT)
    if take:
        acquire(settings, message or "inv lock --take (by hand)")
        _held.clear()  # kept after this process: `inv lock --release` ends it
        console.done(f"took the deploy lock of job {settings.job_name}: deploys are refused until "
                     "`inv lock --release`")
        return read(settings)
    if release_lock:
        holder = release(settings)
        if holder is None:
            console.done(f"the deploy lock of job {settings.job_name} is free: nothing to release")
        else:
            console.done(f"released the deploy lock held by {holder.describe()}")
        return holder
    holder = read(settings)
    if holder is None:
        print(f"deploy lock of job {settings.job_name}: free")
    else:
        note = " (stale: older than lock_stale_after)" if stale(settings, holder) else ""
        print(f"deploy lock of job {settings.job_name}: held by {holder.describe()}{note}")
    return holder
