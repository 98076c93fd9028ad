"""The client's ``template`` blocks: Nomad Variables rendered into the task's environment.

Rendering is the Go engine's (engine.py ``render``: Go's text/template with consul-template's ``nomadVar``,
missingkey=zero as Nomad's default error_on_missing_key = false, and go-envparse for env templates), as
Nomad's template hook does it (client/allocrunner/taskrunner/template/template.go, consul-template
underneath). What stays here is the client's side:
- which Variables the task may read (``allowed``): its workload identity may read ``nomad/jobs/<job>``,
  ``nomad/jobs/<job>/<group>`` and ``nomad/jobs/<job>/<group>/<task>`` by default (nomad/acl.go's implicit
  workload policy; ``<job>`` is a periodic launch's parent); only those are handed to the engine, so another path
  is as missing;
- ``{{ with nomadVar "path" }}`` of a Variable not there blocks the task before its first start, with the
  task event "Missing: nomad.var.block(path@namespace.region)" (``Missing``);
- a template that fails (Nomad's ``Template failed: ...``) or an env template go-envparse refuses
  (``Template failed to read environment variables: error parsing env template "<path>": error on line N:
  ...``) kills the task with that text, failed (``Failed``); go-envparse v0.1.0 (Nomad's) keeps an empty
  value (``KEY=`` sets KEY to "", over the task's ``env`` block's value);
- a template's env variables override the task's ``env`` block (taskenv/env.go: "Copy template env vars as
  they override task env vars");
- after the start, a change of what a template renders triggers its ``change_mode``: ``restart``
  restarts the task after a random wait up to ``splay`` (the restart does not count against the
  restart policy: restarts.go SetRestartTriggered), ``noop`` does nothing.

consul-template functions other than ``nomadVar`` and ``nomadVarExists`` are not in the engine: a template
using one fails here (``Unsupported``), where Nomad would render it.
"""
from __future__ import annotations

from . import engine

DATA_DIR = "/opt/nomad/data"  # the packaged agent's data_dir: the env file's path in Nomad's error text


class Missing(Exception):
    """The template cannot be rendered yet (Nomad keeps waiting): the message is the task event's."""


class Failed(Exception):
    """Nomad kills the task, failed: the message is the Killing event's DisplayMessage."""


class Unsupported(Failed):
    """The template needs a consul-template function the engine lacks (the double's limit, not Nomad's)."""


def allowed(path: str, job: str, group: str, task: str) -> bool:
    return path in (f"nomad/jobs/{job}", f"nomad/jobs/{job}/{group}", f"nomad/jobs/{job}/{group}/{task}")


def client_path(alloc_id: str, task: str, destination: str) -> str:
    """The template's destination on the client (taskEnv.ClientPath): <data_dir>/alloc/<alloc>/<task>/<dest>."""
    return f"{DATA_DIR}/alloc/{alloc_id}/{task}/{destination.lstrip('/')}"


def render(spec: dict, variables: dict, namespace: str, dest: str = "") -> tuple[str, dict | None]:
    """One template block (the api Template: EmbeddedTmpl, Envvars, LeftDelim...) with the Variables the task
    may read ({path: items}): (the text, its env variables when Envvars, else None)."""
    out = engine.render(spec.get("EmbeddedTmpl") or "", variables, namespace, bool(spec.get("Envvars")),
                        dest or spec.get("DestPath") or "", spec.get("LeftDelim") or "",
                        spec.get("RightDelim") or "", bool(spec.get("ErrMissingKey")))
    if out.missing:
        raise Missing(f"Missing: {out.missing}")
    if out.unsupported:
        raise Unsupported(f"{out.error} (consul-template's {out.unsupported} is not in the Nomad double's "
                          "template engine)")
    if out.error:
        raise Failed(out.error)
    return out.text or "", out.env
