"""The client's ``template`` blocks, the part our job uses: Nomad Variables rendered into the task's environment.

As Nomad's template hook (client/allocrunner/taskrunner/template/template.go, consul-template underneath):
- ``{{ with nomadVar "path" }}...{{ end }}`` reads the Variable at ``path`` in the allocation's namespace
  with the task's workload identity, which may read ``nomad/jobs/<job>``, ``nomad/jobs/<job>/<group>`` and
  ``nomad/jobs/<job>/<group>/<task>`` by default (nomad/acl.go's implicit workload policy); ``{{ .item }}``
  is one of its items (a missing item renders empty: missingkey=zero on a map of items). A missing
  Variable blocks the task before its first start ("Missing: nomad.var.block(path@namespace.region)"); so
  does a path the identity may not read;
- a template with ``env = true`` is read as an env file (go-envparse: ``KEY=value`` lines, ``#``
  comments, optional quotes) and its variables override the task's ``env`` block (taskenv/env.go:
  "Copy template env vars as they override task env vars");
- after the start, a change of what a template renders triggers its ``change_mode``: ``restart``
  restarts the task after a random wait up to ``splay`` (the restart does not count against the
  restart policy: restarts.go SetRestartTriggered), ``noop`` does nothing.

Only this subset of Go's text/template is understood; anything else is refused, so a job that needs
more fails loudly here instead of passing untested.
"""
from __future__ import annotations

import re

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_WITH = re.compile(r'with\s+nomadVar\s+"([^"]+)"$')
_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)$")


class Missing(Exception):
    """The template cannot be rendered yet (Nomad keeps waiting): the message is the task event's."""


class Unsupported(Exception):
    pass


def allowed(path: str, job: str, group: str, task: str) -> bool:
    return path in (f"nomad/jobs/{job}", f"nomad/jobs/{job}/{group}", f"nomad/jobs/{job}/{group}/{task}")


def render(text: str, read_variable, where: str) -> str:
    """``read_variable(path)``: the items of the Variable the task may read, None when missing or not
    allowed. ``where``: ``namespace.region``, for the message."""
    out, stack, i = [], [], 0  # stack: the items of each open ``with`` (None: skipped)
    pieces = list(_ACTION.finditer(text))
    for m in pieces:
        literal = text[i:m.start()]
        if m.group(1) == "-":
            literal = literal.rstrip()
        if all(frame is not None for frame in stack):
            out.append(literal)
        i = m.end()
        action = m.group(2)
        if m.group(3) == "-":
            rest = text[i:]
            i += len(rest) - len(rest.lstrip())
        with_var = _WITH.match(action)
        if with_var:
            path = with_var.group(1)
            items = read_variable(path)
            if items is None:
                raise Missing(f"Missing: nomad.var.block({path}@{where})")
            stack.append(items)
        elif action == "end":
            if not stack:
                raise Unsupported("{{ end }} without a with")
            stack.pop()
        elif _FIELD.match(action):
            if not stack:
                raise Unsupported(f"{{{{ {action} }}}} outside a with nomadVar")
            if stack[-1] is not None:
                # a missing item renders empty: consul-template's missingkey=zero (Nomad's default,
                # error_on_missing_key = false) on NomadVarItems, a map of items whose String() is their value
                out.append(str(stack[-1].get(_FIELD.match(action).group(1), "")))
        else:
            raise Unsupported(f"template action {{{{ {action} }}}} is not supported by this double")
    if stack:
        raise Unsupported("a with without its {{ end }}")
    out.append(text[i:])
    return "".join(out)


def env_file(text: str) -> dict:
    """go-envparse, the parts a rendered env file of ours uses."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):]
        key, sep, value = line.partition("=")
        if not sep:
            raise Unsupported(f"env template line without '=': {line[:40]!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env
