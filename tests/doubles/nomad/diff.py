"""The structured job diff of `/v1/job/:id/plan` and `/versions?diffs=true` (jobs.mdx "Create Job Plan":
Job Diff > Task Group Diffs > Task Diffs), between two JSON jobs."""
from __future__ import annotations

# Fields the server owns: not part of the spec, not in diffs.
SERVER_FIELDS = {"Status", "StatusDescription", "Stable", "Version", "SubmitTime", "CreateIndex", "ModifyIndex",
                 "JobModifyIndex", "NomadTokenID", "Dispatched", "ConsulToken", "VaultToken", "Meta_"}


def spec(job: dict) -> dict:
    return {k: v for k, v in job.items() if k not in SERVER_FIELDS}


# --- structured diff (jobs.mdx "Create Job Plan": Job Diff > Task Group Diffs > Task Diffs) ------
def _scalar(v) -> bool:
    return not isinstance(v, (dict, list))


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _flatten(prefix: str, value, out: dict):
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}[{k}]" if prefix else k, v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    elif value is not None:
        out[prefix] = value


def _fields(old: dict | None, new: dict | None, keys=None) -> list[dict]:
    old, new = old or {}, new or {}
    fo, fn = {}, {}
    for k in keys if keys is not None else sorted(set(old) | set(new)):
        if _scalar(old.get(k)) and _scalar(new.get(k)):
            if old.get(k) is not None:
                fo[k] = old.get(k)
            if new.get(k) is not None:
                fn[k] = new.get(k)
        elif k in ("Env", "Meta"):
            _flatten(k, old.get(k) or {}, fo)
            _flatten(k, new.get(k) or {}, fn)
    out = []
    for name in sorted(set(fo) | set(fn)):
        a, b = fo.get(name), fn.get(name)
        kind = "None" if a == b else "Added" if a is None else "Deleted" if b is None else "Edited"
        out.append({"Type": kind, "Name": name, "Old": _fmt(a), "New": _fmt(b), "Annotations": None})
    return out


def _object(name: str, old, new) -> dict | None:
    fo, fn = {}, {}
    _flatten("", old, fo)
    _flatten("", new, fn)
    fields = []
    for key in sorted(set(fo) | set(fn)):
        a, b = fo.get(key), fn.get(key)
        kind = "None" if a == b else "Added" if a is None else "Deleted" if b is None else "Edited"
        fields.append({"Type": kind, "Name": key, "Old": _fmt(a), "New": _fmt(b), "Annotations": None})
    kinds = {f["Type"] for f in fields}
    kind = "None" if kinds <= {"None"} else "Added" if old is None else "Deleted" if new is None else "Edited"
    return {"Type": kind, "Name": name, "Fields": fields, "Objects": None}


SKIP_OBJECTS = {"TaskGroups", "Tasks"}


def _objects(old: dict | None, new: dict | None) -> list[dict]:
    old, new = old or {}, new or {}
    out = []
    for key in sorted(set(old) | set(new)):
        if key in SKIP_OBJECTS or key in ("Env", "Meta"):
            continue
        a, b = old.get(key), new.get(key)
        if _scalar(a) and _scalar(b):
            continue
        if isinstance(a, list) or isinstance(b, list):
            singular = key[:-1] if key.endswith("s") else key
            la, lb = a or [], b or []
            for i in range(max(len(la), len(lb))):
                obj = _object(singular, la[i] if i < len(la) else None, lb[i] if i < len(lb) else None)
                out.append(obj)
        else:
            out.append(_object(key, a, b))
    return [o for o in out if o]


def _kind(old, new, parts) -> str:
    if old is None:
        return "Added"
    if new is None:
        return "Deleted"
    return "Edited" if any(p["Type"] != "None" for p in parts) else "None"


def job_diff(old: dict | None, new: dict) -> dict:
    old_spec = spec(old) if old else None
    new_spec = spec(new)
    groups = []
    old_groups = {g["Name"]: g for g in (old_spec or {}).get("TaskGroups") or []}
    for group in new_spec.get("TaskGroups") or []:
        og = old_groups.pop(group["Name"], None)
        tasks = []
        old_tasks = {t["Name"]: t for t in (og or {}).get("Tasks") or []}
        for task in group.get("Tasks") or []:
            ot = old_tasks.pop(task["Name"], None)
            fields, objects = _fields(ot, task), _objects(ot, task)
            kind = _kind(ot, task, fields + objects)
            annotations = {"Added": ["forces create"], "Edited": ["forces create/destroy update"]}.get(kind)
            tasks.append({"Type": kind, "Name": task["Name"], "Fields": fields, "Objects": objects,
                          "Annotations": annotations})
        for ot in old_tasks.values():
            tasks.append({"Type": "Deleted", "Name": ot["Name"], "Fields": _fields(ot, None),
                          "Objects": _objects(ot, None), "Annotations": ["forces destroy"]})
        fields, objects = _fields(og, group), _objects(og, group)
        kind = _kind(og, group, fields + objects + tasks)
        count = group.get("Count", 1)
        updates = ({"create": count} if kind == "Added" else
                   {"create/destroy update": count} if kind == "Edited" else {"ignore": count})
        groups.append({"Type": kind, "Name": group["Name"], "Fields": fields, "Objects": objects, "Tasks": tasks,
                       "Updates": updates})
    for og in old_groups.values():
        groups.append({"Type": "Deleted", "Name": og["Name"], "Fields": [], "Objects": [], "Tasks": [],
                       "Updates": {"destroy": og.get("Count", 1)}})
    fields, objects = _fields(old_spec, new_spec), _objects(old_spec, new_spec)
    return {"Type": _kind(old_spec, new_spec, fields + objects + groups), "ID": new["ID"], "Fields": fields,
            "Objects": objects, "TaskGroups": groups}
