"""The Nomad double's Go engine (engine/): Nomad's job parser and template rendering on Nomad's own libraries.

What the Python double cannot imitate faithfully is done by a small Go program built from engine/ (its
go.mod and go.sum pin hashicorp/hcl/v2 as Nomad builds it, go-cty, go-cty-funcs, nomad/api, go-envparse):
- ``parse``: /v1/jobs/parse (jobspec2 with Nomad's HCL function table, variable types and validations,
  dynamic blocks, locals, durations, the api structs' schema, then api.Job.Canonicalize);
- ``render``: a template block as Nomad's template hook renders it (text/template with consul-template's
  ``nomadVar``, missingkey=zero), and an env template read with go-envparse;
- ``cron``: a periodic block's next launch (hashicorp/cronexpr, the library Nomad uses), in its time zone.

The binary is built once per test session, into a cache keyed by the sha256 of the engine's sources, go.mod,
go.sum and ``go version`` (``TEST_CACHE/nomad-engine/<key>/``: tests/services/__init__.py), so a later
session reuses it: a file, no process (tests/services/leftovers.py looks at processes, ports, accounts,
interfaces and mounts). Each call runs the binary once (stdin: a JSON request, stdout: a JSON answer);
nothing stays running. ``go`` must be on PATH or in /usr/local/go/bin (CI installs it).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .jobspec import ParseError

SOURCE = Path(__file__).resolve().parent / "engine"
BUILD_TIMEOUT = 300  # a cold module download and build takes well under a minute; a hung proxy must not hang CI
CALL_TIMEOUT = 60


class EngineUnavailable(RuntimeError):
    """The engine cannot be built here (no ``go`` on PATH, or the build failed): the message says why."""


_lock = threading.Lock()
_binary: Path | None = None


def _go() -> str:
    go = shutil.which("go") or next((p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.access(p, os.X_OK)),
                                    None)
    if go is None:
        raise EngineUnavailable(
            "the Nomad double needs Go to build its engine (tests/doubles/nomad/engine/): `go` is not on PATH; "
            "install Go >= 1.25 (https://go.dev/dl/) or put its bin folder on PATH")
    return go


def _key(go: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCE.iterdir()):
        if path.suffix == ".go" or path.name in ("go.mod", "go.sum"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    version = subprocess.run([go, "version"], capture_output=True, text=True, timeout=60).stdout.strip()
    digest.update(version.encode())
    return digest.hexdigest()[:20]


def _cache_root() -> Path:
    from tests.services import TEST_CACHE

    return TEST_CACHE / "nomad-engine"


def binary() -> Path:
    """The engine's binary, built (once per session, reused across sessions) if the cache lacks it."""
    global _binary
    with _lock:
        if _binary is not None and _binary.exists():
            return _binary
        go = _go()
        folder = _cache_root() / _key(go)
        target = folder / "nomadengine"
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            fd, partial = tempfile.mkstemp(prefix=".nomadengine-", dir=folder)
            os.close(fd)
            env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"}
            try:
                done = subprocess.run([go, "build", "-trimpath", "-o", partial, "."], cwd=SOURCE, env=env,
                                      capture_output=True, text=True, timeout=BUILD_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.unlink(partial)
                raise EngineUnavailable(f"building the Nomad double's engine took over {BUILD_TIMEOUT}s "
                                        f"(go build in {SOURCE})") from None
            if done.returncode != 0:
                os.unlink(partial)
                raise EngineUnavailable(f"building the Nomad double's engine failed (go build in {SOURCE}):\n"
                                        f"{done.stderr.strip()}")
            os.replace(partial, target)  # atomic: a concurrent session sees the whole binary or none
        _binary = target
        return target


def _call(command: str, request: dict) -> dict:
    done = subprocess.run([str(binary()), command], input=json.dumps(request), capture_output=True, text=True,
                          timeout=CALL_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"nomadengine {command} exited {done.returncode}: {done.stderr.strip()}")
    return json.loads(done.stdout)


# --- parse ---------------------------------------------------------------------------------------------
def parse(job_hcl: str, variables: str = "", canonicalize: bool = False, arg_vars: list[str] | None = None,
          strict: bool = False) -> dict:
    """The job (api.Job's JSON, as /v1/jobs/parse answers it), or ParseError with the text of the agent's
    400 ("Failed to parse job: input.hcl:12,3-9: Unsupported argument; ..."). ``variables``: the request's
    Variables (var-file HCL); ``arg_vars``: ``nomad job run -var k=v`` values ("k=v"), ``strict``: -strict."""
    request = {"JobHCL": job_hcl, "Variables": variables or "", "Canonicalize": bool(canonicalize)}
    if arg_vars:
        request["ArgVars"] = list(arg_vars)
    if strict:
        request["Strict"] = True
    answer = _call("parse", request)
    if answer.get("Error"):
        raise ParseError(answer["Error"])
    return answer["Job"]


def functions() -> list[str]:
    """The names of the job parser's HCL function table (Nomad's jobspec2/functions.go)."""
    return _call("functions", {})["Functions"]


# --- render --------------------------------------------------------------------------------------------
@dataclass
class Rendered:
    """What ``render`` gives: ``text``, and with envvars ``env`` (go-envparse's map; None otherwise). Or one of
    ``missing`` (the "Missing: ..." event's list: the task waits), ``error`` (the text of the event with which
    Nomad kills the task: "Template failed: ..." or, with ``text``, "Template failed to read environment
    variables: ..."), ``unsupported`` (a consul-template function the engine lacks: the double's limit)."""
    text: str | None = None
    env: dict | None = None
    missing: str | None = None
    error: str | None = None
    unsupported: str | None = None


def render(template: str, variables: dict, where: str = "default", envvars: bool = False, dest: str = "",
           left_delim: str = "", right_delim: str = "", error_on_missing_key: bool = False) -> Rendered:
    """One template block. ``variables``: {path: {item: value}}, the Variables the task's identity may read
    (in its namespace; another namespace's as "path@namespace"). ``where``: the task's namespace (a
    "namespace.region" is taken for its namespace only: consul-template names a missing Variable with region
    "global" unless the template's path gives one). ``dest``: the env file's client path for the error."""
    answer = _call("render", {"Template": template, "Variables": variables or {}, "Where": where,
                              "Envvars": bool(envvars), "Dest": dest, "LeftDelim": left_delim or "",
                              "RightDelim": right_delim or "", "ErrMissingKey": bool(error_on_missing_key)})
    env = (answer.get("Env") or {}) if envvars and "Text" in answer and not answer.get("Error") else None
    return Rendered(text=answer.get("Text"), env=env,
                    missing=answer.get("Missing"), error=answer.get("Error"), unsupported=answer.get("Unsupported"))


# --- cron ----------------------------------------------------------------------------------------------
class CronError(ValueError):
    """A periodic block Nomad refuses: the text of its validation error ("Invalid cron spec ...")."""


def cron_next(periodic: dict, after: float) -> int | None:
    """The first launch of a job's ``Periodic`` (Spec, Specs, TimeZone) strictly after ``after`` (epoch
    seconds), as Unix seconds; None when no instant matches. CronError when the block is invalid."""
    answer = _call("cron", {"Spec": periodic.get("Spec") or "", "Specs": list(periodic.get("Specs") or []),
                            "TimeZone": periodic.get("TimeZone") or "UTC", "From": int(after)})
    if answer.get("Error"):
        raise CronError(answer["Error"])
    return answer.get("Next") or None


def cron_next_time(periodic: dict, after: float) -> str | None:
    """The same launch as Go's JSON writes a time.Time in the block's time zone ("2026-12-08T03:00:00+01:00"),
    as the plan's NextPeriodicLaunch carries it."""
    answer = _call("cron", {"Spec": periodic.get("Spec") or "", "Specs": list(periodic.get("Specs") or []),
                            "TimeZone": periodic.get("TimeZone") or "UTC", "From": int(after)})
    if answer.get("Error"):
        raise CronError(answer["Error"])
    return answer.get("Time") or None
