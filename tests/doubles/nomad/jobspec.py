"""What the Nomad double's server keeps of job specifications, now that the Go engine parses them.

HCL2 job files are parsed by the engine (engine.py ``parse``, on Nomad's own libraries). What stays in Python:
- ``ParseError``: a job the agent refuses; its text is the 400's;
- ``duration``: a Go duration string in nanoseconds (the ``?wait=`` of blocking queries);
- ``canonical``: the defaults the server fills in at register and plan of a JSON job (api/jobs.go
  Canonicalize, the parts our jobs use; the server's structs.Job.Canonicalize differs in details): the
  restart and reschedule defaults of the job's type (service or batch), the periodic block's.
"""
from __future__ import annotations

import copy
import re

SECOND = 1_000_000_000


class ParseError(Exception):
    pass


# --- durations --------------------------------------------------------------------------------
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": SECOND, "m": 60 * SECOND, "h": 3600 * SECOND}


def duration(text, where: str) -> int:
    if isinstance(text, (int, float)):
        return int(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ParseError(f"{where}: time: invalid duration \"{text}\"")
    return int(sum(float(n) * _UNITS[u] for n, u in parts))


# --- canonicalize (api/jobs.go Canonicalize, the parts our jobs use) ---------------------------
def _fill(obj: dict | None, defaults: dict) -> dict:
    out = dict(obj or {})
    for key, value in defaults.items():
        if out.get(key) is None:
            out[key] = copy.deepcopy(value)
    return out


SERVICE_RESTART = {"Attempts": 2, "Interval": 1800 * SECOND, "Delay": 15 * SECOND, "Mode": "fail",
                   "RenderTemplates": False}
SERVICE_RESCHEDULE = {"Attempts": 0, "Interval": 0, "Delay": 30 * SECOND, "DelayFunction": "exponential",
                      "MaxDelay": 3600 * SECOND, "Unlimited": True}  # api/tasks.go, service jobs
# batch jobs (api/tasks.go defaultBatchJobRestartPolicy, NewDefaultReschedulePolicy("batch"); the same values as
# structs.go DefaultBatchJobRestartPolicy / DefaultBatchJobReschedulePolicy)
BATCH_RESTART = {"Attempts": 3, "Interval": 24 * 3600 * SECOND, "Delay": 15 * SECOND, "Mode": "fail",
                 "RenderTemplates": False}
BATCH_RESCHEDULE = {"Attempts": 1, "Interval": 24 * 3600 * SECOND, "Delay": 5 * SECOND, "DelayFunction": "constant",
                    "MaxDelay": 0, "Unlimited": False}
PERIODIC_DEFAULTS = {"Enabled": True, "Spec": "", "Specs": [], "SpecType": "cron", "ProhibitOverlap": False,
                     "TimeZone": "UTC"}  # api/jobs.go PeriodicConfig.Canonicalize
DEFAULT_UPDATE = {"Stagger": 30 * SECOND, "MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 10 * SECOND,
                  "HealthyDeadline": 300 * SECOND, "ProgressDeadline": 600 * SECOND, "Canary": 0,
                  "AutoRevert": False, "AutoPromote": False}


TEMPLATE_DEFAULTS = {"SourcePath": "", "DestPath": "", "EmbeddedTmpl": "", "ChangeMode": "restart", "ChangeSignal": "",
                     "Splay": 5 * SECOND, "Perms": "0644", "LeftDelim": "{{", "RightDelim": "}}", "Envvars": False,
                     "VaultGrace": 0, "ErrMissingKey": False}  # api/tasks.go Template.Canonicalize


def canonical(job: dict) -> dict:
    job = copy.deepcopy(job)
    job = _fill(job, {"Region": "global", "Namespace": "default", "Type": "service", "Priority": 50,
                      "AllAtOnce": False, "Datacenters": ["*"], "NodePool": "default", "Stop": False,
                      "ParentID": "", "Status": "", "StatusDescription": "", "Stable": False, "Version": 0,
                      "CreateIndex": 0, "ModifyIndex": 0, "JobModifyIndex": 0})
    # api.Job.Canonicalize (the parse endpoint's) leaves NodePool ""; the server's register hook
    # (job_endpoint_hooks.go jobNodePoolMutatingHook) makes "" the namespace's default pool
    job["NodePool"] = job["NodePool"] or "default"
    job_update = job.get("Update")
    if job_update is not None:
        job["Update"] = _fill(job_update, {k: DEFAULT_UPDATE[k] for k in ("Stagger", "MaxParallel")})
    if job.get("Periodic") is not None:
        job["Periodic"] = _fill(job["Periodic"], PERIODIC_DEFAULTS)
        job["Periodic"]["TimeZone"] = job["Periodic"]["TimeZone"] or "UTC"
    batch = job["Type"] == "batch"
    for group in job.get("TaskGroups") or []:
        group["Count"] = 1 if group.get("Count") is None else group["Count"]
        group["RestartPolicy"] = _fill(group.get("RestartPolicy"), BATCH_RESTART if batch else SERVICE_RESTART)
        group["EphemeralDisk"] = _fill(group.get("EphemeralDisk"), {"Sticky": False, "Migrate": False, "SizeMB": 300})
        group["ReschedulePolicy"] = _fill(group.get("ReschedulePolicy") or job.get("Reschedule"),
                                          BATCH_RESCHEDULE if batch else SERVICE_RESCHEDULE)
        if not batch or group.get("Migrate") is not None:  # api TaskGroup.Canonicalize: a default for service only
            group["Migrate"] = _fill(group.get("Migrate"), {"MaxParallel": 1, "HealthCheck": "checks",
                                                            "MinHealthyTime": 10 * SECOND,
                                                            "HealthyDeadline": 300 * SECOND})
        if group.get("Update") is not None or job_update is not None:
            merged = dict(job_update or {})
            merged.update({k: v for k, v in (group.get("Update") or {}).items() if v is not None})
            group["Update"] = _fill(merged, DEFAULT_UPDATE)
        for network in group.get("Networks") or []:
            for port in (network.get("DynamicPorts") or []) + (network.get("ReservedPorts") or []):
                port["HostNetwork"] = port.get("HostNetwork") or "default"
        for service in group.get("Services") or []:
            service["Provider"] = service.get("Provider") or "consul"
            service["AddressMode"] = service.get("AddressMode") or "auto"
        for task in group.get("Tasks") or []:
            for key in ("Env", "Meta"):  # structs Task.Canonicalize: an empty map is nil (env = {} in a job file)
                task[key] = task.get(key) or None
            for service in task.get("Services") or []:  # api/services.go Canonicalize, task services too
                service["Provider"] = service.get("Provider") or "consul"
                service["AddressMode"] = service.get("AddressMode") or "auto"
            task["Resources"] = _fill(task.get("Resources"), {"CPU": 100, "MemoryMB": 300})
            task["KillTimeout"] = 5 * SECOND if task.get("KillTimeout") is None else task["KillTimeout"]
            task["LogConfig"] = _fill(task.get("LogConfig"), {"MaxFiles": 10, "MaxFileSizeMB": 10, "Disabled": False})
            task["RestartPolicy"] = _fill(task.get("RestartPolicy"), group["RestartPolicy"])
            for mount in task.get("VolumeMounts") or []:
                mount["PropagationMode"] = mount.get("PropagationMode") or "private"
            task["Templates"] = [_fill(t, TEMPLATE_DEFAULTS) for t in task.get("Templates") or []] or None
    return job
