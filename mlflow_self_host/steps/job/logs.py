"""`inv logs`: the running allocation's task logs (GET /v1/client/fs/logs/:alloc_id, plain text)."""
from __future__ import annotations

import sys

from ...core.errors import ExitCode, UserError
from . import jobfile
from ...adapters import nomad_api

BYTES_PER_LINE = 400  # how far back from the end to read for the last N lines, at first
MAX_TAIL_BYTES = 16 << 20


def tail(settings, n, alloc_id: str, task: str, kind: str, lines: int) -> str:
    """The last ``lines`` lines of a task's stdout or stderr. Nomad sends plain logs as text/plain with
    no charset (fs_endpoint.go), which requests would read as ISO-8859-1: the bytes are UTF-8. It reads
    back ``lines`` x 400 bytes from the end, more when long lines leave fewer lines than asked for."""
    if lines <= 0:
        return ""
    offset = lines * BYTES_PER_LINE
    while True:
        params = {"task": task, "type": kind, "follow": False, "offset": offset, "origin": "end", "plain": True}
        data = nomad_api.call(settings, f"reading the {kind} of allocation {alloc_id[:8]}",
                              n.client.stream_logs.request, alloc_id, params=params, method="get").content
        whole = len(data) < offset
        if not whole:
            data = data.split(b"\n", 1)[1] if b"\n" in data else b""  # the first line is cut (maybe in a character)
        found = data.decode("utf-8", errors="replace").splitlines()
        if whole or len(found) >= lines or offset >= MAX_TAIL_BYTES:
            return "\n".join(found[-lines:]) + ("\n" if found else "")
        offset *= 4


def pick_allocation(settings, n) -> tuple[dict, bool]:
    """The running allocation (newest first), else the newest one; and whether it runs."""
    if jobfile.current(settings, n) is None:
        raise UserError(f"job {settings.job_name} is not registered in namespace "
                        f"{settings.nomad_namespace or 'default'}", hint="deploy it first: `inv deploy`")
    allocs = nomad_api.call(settings, "listing allocations", n.job.get_allocations, settings.job_name) or []
    if not allocs:
        raise UserError(f"job {settings.job_name} has no allocation", hint="see `inv status`")
    allocs = sorted(allocs, key=lambda a: a.get("CreateIndex", 0), reverse=True)
    for alloc in allocs:
        if alloc.get("ClientStatus") == "running" and alloc.get("DesiredStatus") == "run":
            return alloc, True
    return allocs[0], False


def line_count(value, default: int = 50) -> int:
    """``--lines``: a whole number of at least 0 (None: the default)."""
    if value is None:
        return default
    try:
        count = int(str(value).strip())
    except ValueError:
        count = -1
    if count < 0:
        raise UserError(f"--lines {value!r} is not a number of lines", hint="e.g. inv logs --lines 200", code=ExitCode.BAD_ARGUMENT)
    return count


def logs(settings, follow: bool = False, stderr: bool = False, lines: int = 50) -> None:
    from ...core import console

    n = nomad_api.client(settings)
    alloc, running = pick_allocation(settings, n)
    task = next(iter(alloc.get("TaskStates") or {}), None) or jobfile.task_name(jobfile.current(settings, n))
    kind = "stderr" if stderr else "stdout"
    note = "" if running else f" (not running: {alloc.get('ClientStatus')})"
    console.info(f"{kind} of task {task}, allocation {alloc['ID'][:8]}, job version {alloc.get('JobVersion')}{note}")
    sys.stdout.write(tail(settings, n, alloc["ID"], task, kind, lines))
    sys.stdout.flush()
    if follow:
        _follow(settings, n, alloc["ID"], task, kind)


def _follow(settings, n, alloc_id: str, task: str, kind: str) -> None:
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end inside a character
    params = {"task": task, "type": kind, "follow": True, "offset": 0, "origin": "end", "plain": True}
    response = nomad_api.call(settings, f"following the {kind} of allocation {alloc_id[:8]}",
                              n.client.stream_logs.request, alloc_id, params=params, method="get",
                              stream=True, timeout=None)
    try:
        for chunk in response.iter_content(chunk_size=None):
            text = decoder.decode(chunk)
            if text:
                sys.stdout.write(text)
                sys.stdout.flush()
        sys.stdout.write(decoder.decode(b"", final=True))
    finally:
        response.close()
