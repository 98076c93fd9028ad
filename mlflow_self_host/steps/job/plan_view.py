"""Nomad's structured plan diff as the readable lines `nomad job plan` prints."""
from __future__ import annotations

_MARK = {"Added": "+", "Deleted": "-", "Edited": "+/-", "None": " "}
_STYLE = {"Added": "green", "Deleted": "red", "Edited": "yellow", "None": "dim"}


def _field(field: dict, indent: str) -> tuple[str, str] | None:
    kind = field.get("Type")
    if kind == "None":
        return None
    name, old, new = field.get("Name"), field.get("Old", ""), field.get("New", "")
    if kind == "Added":
        text = f'{name}: "{new}"'
    elif kind == "Deleted":
        text = f'{name}: "{old}"'
    else:
        text = f'{name}: "{old}" => "{new}"'
    return _STYLE[kind], f"{indent}{_MARK[kind]} {text}"


def _object(obj: dict, indent: str, out: list):
    kind = obj.get("Type")
    if kind == "None":
        return
    out.append((_STYLE[kind], f"{indent}{_MARK[kind]} {obj.get('Name')} {{"))
    for field in obj.get("Fields") or []:
        line = _field(field, indent + "  ")
        if line:
            out.append(line)
    for inner in obj.get("Objects") or []:
        _object(inner, indent + "  ", out)
    out.append(("dim", f"{indent}  }}"))


def lines(diff: dict | None) -> list[tuple[str, str]]:
    """(style, text) lines; empty when nothing changes."""
    if not diff or diff.get("Type") == "None":
        return []
    kind = diff.get("Type", "Edited")
    out = [(_STYLE[kind], f'{_MARK[kind]} Job: "{diff.get("ID")}"')]
    for field in diff.get("Fields") or []:
        line = _field(field, "")
        if line:
            out.append(line)
    for obj in diff.get("Objects") or []:
        _object(obj, "", out)
    for group in diff.get("TaskGroups") or []:
        gkind = group.get("Type")
        if gkind == "None":
            continue
        updates = ", ".join(f"{n} {what}" for what, n in (group.get("Updates") or {}).items())
        out.append((_STYLE[gkind], f'{_MARK[gkind]} Task Group: "{group.get("Name")}"'
                    + (f" ({updates})" if updates else "")))
        for field in group.get("Fields") or []:
            line = _field(field, "  ")
            if line:
                out.append(line)
        for obj in group.get("Objects") or []:
            _object(obj, "  ", out)
        for task in group.get("Tasks") or []:
            tkind = task.get("Type")
            if tkind == "None":
                continue
            notes = ", ".join(task.get("Annotations") or [])
            out.append((_STYLE[tkind], f'  {_MARK[tkind]} Task: "{task.get("Name")}"' + (f" ({notes})" if notes else "")))
            for field in task.get("Fields") or []:
                line = _field(field, "    ")
                if line:
                    out.append(line)
            for obj in task.get("Objects") or []:
                _object(obj, "    ", out)
    return out


def text(diff: dict | None) -> str:
    return "\n".join(line for _, line in lines(diff))


def show(diff: dict | None) -> None:
    from ...core import console

    for style, line in lines(diff):
        console.err.print(f"  [{style}]{console.escape(line)}[/]")


def placement_failures(failed: dict | None) -> str:
    """FailedTGAllocs (plan or evaluation) in one line: why no node could take the group."""
    parts = []
    for group, metric in (failed or {}).items():
        why = []
        for dim, count in (metric.get("DimensionExhausted") or {}).items():
            why.append(f"{dim} exhausted on {count} node{'s' if count != 1 else ''}")
        for constraint, count in (metric.get("ConstraintFiltered") or {}).items():
            why.append(f"constraint {constraint} filtered {count} node{'s' if count != 1 else ''}")
        for cls, count in (metric.get("ClassFiltered") or {}).items():
            why.append(f"class {cls} filtered {count}")
        available = metric.get("NodesAvailable") or {}
        if not available or not any(available.values()):
            why.append("no node available in the datacenter(s)")
        evaluated = metric.get("NodesEvaluated", 0)
        parts.append(f"group {group}: {evaluated} node{'s' if evaluated != 1 else ''} evaluated"
                     + (f", {'; '.join(why)}" if why else ""))
    return "; ".join(parts)
