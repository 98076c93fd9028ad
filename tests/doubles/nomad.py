"""A Nomad HTTP API double on a free loopback port, following ../shared/reference/nomad/.

What it keeps: jobs per namespace with every version, evaluations, deployments, allocations with task
events, and task logs. What it answers: the paths, bodies and status codes of jobs.mdx, deployments.mdx,
allocations.mdx, evaluations.mdx, client.mdx (Stream Logs) and status.mdx; errors as text/plain
(NOTES.md), the "Enforcing job modify index" 500 of a check-and-set register, ``X-Nomad-Index`` on
reads, ACL tokens (X-Nomad-Token or Bearer) with per-namespace capabilities, namespaces.

HCL2 is parsed with python-hcl2 (tests/doubles/hcl_job.py) into the JSON job of json-jobs.mdx.

A test tells it how the next deployment ends: ``double.next_deployment("healthy" | "failed" |
"auto-reverted" | "unplaceable", stderr=...)``. As in Nomad, a failed deployment is rolled back only when
the job's update block has auto_revert and an earlier stable version exists ("auto-reverted" is "failed"
with that expectation). Deployments move on in time (``step`` seconds per stage), like the real thing.
"""
from __future__ import annotations

import base64
import copy
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from tests.doubles import hcl_job
from tests.services import free_port

# Fields the server owns: not part of the spec, not in diffs.
SERVER_FIELDS = {"Status", "StatusDescription", "Stable", "Version", "SubmitTime", "CreateIndex", "ModifyIndex",
                 "JobModifyIndex", "NomadTokenID", "Dispatched", "ConsulToken", "VaultToken", "Meta_"}
ALL_CAPS = {"list-jobs", "parse-job", "read-job", "submit-job", "read-logs", "read-fs"}
READ_CAPS = {"list-jobs", "parse-job", "read-job"}

FAILED_STDERR = ("mlflow-entrypoint: /mnt/backend_store is missing or not writable by uid 1000; "
                 "mount a folder owned by uid 1000 there\n")
HEALTHY_STDERR = ("mlflow-entrypoint: mlflow db upgrade\n"
                  "INFO:     Started server process [1]\nINFO:     Waiting for application startup.\n"
                  "INFO:     Application startup complete.\nINFO:     Uvicorn running on http://0.0.0.0:5000\n")


class HTTPError(Exception):
    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code, self.text = code, text


def _now_ns() -> int:
    return time.time_ns()


def _event(kind, message="", **extra) -> dict:
    event = {"Type": kind, "Time": _now_ns(), "FailsTask": False, "RestartReason": "", "SetupError": "",
             "DriverError": "", "ExitCode": 0, "Signal": 0, "Message": message, "KillTimeout": 0, "KillError": "",
             "KillReason": "", "StartDelay": 0, "DownloadError": "", "ValidationError": "", "DiskLimit": 0,
             "FailedSibling": "", "VaultError": "", "TaskSignalReason": "", "TaskSignal": "", "DriverMessage": "",
             "Details": {}, "DisplayMessage": message}
    event.update(extra)
    return event


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


# --- the double ------------------------------------------------------------------------------
class NomadDouble:
    def __init__(self, acl_tokens: dict | None = None, namespaces=("default",), region="global",
                 datacenter="DC0", step: float = 0.15, follow_limit: float = 3.0, tls: tuple | None = None):
        """``acl_tokens``: None disables ACLs; else {secret: "management" | {namespace: capabilities}}.
        ``tls``: (certfile, keyfile) to serve https instead of http."""
        self.acl_tokens = acl_tokens
        self.namespaces = set(namespaces)
        self.region, self.datacenter = region, datacenter
        self.step = step  # seconds per deployment stage
        self.follow_limit = follow_limit  # a followed log stream ends after this long without news
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.index = 1
        self.jobs: dict[tuple[str, str], list[dict]] = {}  # (namespace, id) -> versions, oldest first
        self.evals: dict[str, dict] = {}
        self.deployments: dict[str, dict] = {}
        self.allocs: dict[str, dict] = {}
        self.logs: dict[str, dict[str, str]] = {}
        self.timeline: list[tuple[float, object]] = []
        self.requests: list[tuple[str, str, dict, object]] = []  # (method, path, query, body)
        self.pending: tuple[str, str] | None = None
        self.after_plan = None  # a test's hook: called (outside the lock) after a plan is answered
        self.node_id = str(uuid.uuid4())
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # -- control from tests ----------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def next_deployment(self, outcome: str = "healthy", stderr: str | None = None):
        assert outcome in ("healthy", "failed", "auto-reverted", "unplaceable"), outcome
        with self.lock:
            self.pending = (outcome, stderr)

    def job(self, job_id="mlflow", namespace="default") -> dict | None:
        with self.lock:
            versions = self.jobs.get((namespace, job_id))
            return copy.deepcopy(versions[-1]) if versions else None

    def versions(self, job_id="mlflow", namespace="default") -> list[dict]:
        with self.lock:
            return copy.deepcopy(self.jobs.get((namespace, job_id), []))

    def registrations(self) -> list[tuple[str, dict]]:
        """(path, body) of every register call (POST /v1/jobs, POST /v1/job/:id)."""
        return [(p, b) for m, p, q, b in self.requests
                if m in ("POST", "PUT") and (p == "/v1/jobs" or (p.startswith("/v1/job/") and p.count("/") == 3))]

    def register_out_of_band(self, job: dict, namespace="default"):
        """Someone else's `nomad job run` (no check-and-set)."""
        with self.lock:
            self._register(namespace, copy.deepcopy(job), outcome="healthy", stderr=None)

    def wait_idle(self, timeout=10.0):
        """Wait until every deployment has ended (the timeline is empty)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                self._tick()
                if not self.timeline:
                    return
            time.sleep(0.05)
        raise TimeoutError("the Nomad double still has deployments running")

    # -- state changes ---------------------------------------------------------------------------
    def _bump(self) -> int:
        self.index += 1
        self.changed.notify_all()
        return self.index

    def _later(self, stages: float, action):
        self.timeline.append((time.monotonic() + stages * self.step, action))

    def _tick(self):
        now = time.monotonic()
        due = [item for item in self.timeline if item[0] <= now]
        if not due:
            return
        self.timeline = [item for item in self.timeline if item[0] > now]
        for _, action in sorted(due, key=lambda item: item[0]):
            action()
        self._bump()

    def _current(self, namespace, job_id) -> dict | None:
        versions = self.jobs.get((namespace, job_id))
        return versions[-1] if versions else None

    def _placeable(self, job) -> bool:
        return not (self.pending and self.pending[0] == "unplaceable")

    def _failed_tg(self, job) -> dict:
        return {g["Name"]: {"CoalescedFailures": 0, "AllocationTime": 41000, "Scores": None, "NodesEvaluated": 1,
                            "NodesFiltered": 0, "NodesAvailable": {self.datacenter: 1}, "NodesInPool": 1,
                            "ClassFiltered": None, "ConstraintFiltered": None, "NodesExhausted": 1,
                            "ClassExhausted": None, "DimensionExhausted": {"memory": 1}, "QuotaExhausted": None,
                            "ResourcesExhausted": None}
                for g in job.get("TaskGroups") or []}

    def _register(self, namespace, job, outcome, stderr, revert_of=None) -> dict:
        job = hcl_job.canonical(job)
        job["Namespace"] = namespace
        key = (namespace, job["ID"])
        versions = self.jobs.setdefault(key, [])
        current = versions[-1] if versions else None
        index = self._bump()
        if current is not None and spec(current) == spec(job):
            eval_id = self._eval(namespace, job["ID"], current["JobModifyIndex"], None, None)
            return {"EvalID": eval_id, "EvalCreateIndex": index, "JobModifyIndex": current["JobModifyIndex"],
                    "Warnings": "", "Index": index, "LastContact": 0, "KnownLeader": True}
        job.update({"Version": current["Version"] + 1 if current else 0, "Stable": False,
                    "Status": "dead" if job.get("Stop") else "pending", "StatusDescription": "",
                    "SubmitTime": _now_ns(), "CreateIndex": versions[0]["CreateIndex"] if versions else index,
                    "ModifyIndex": index, "JobModifyIndex": index, "NomadTokenID": ""})
        versions.append(job)
        live = [a for a in self.allocs.values()
                if a["Namespace"] == namespace and a["JobID"] == job["ID"] and a["DesiredStatus"] == "run"]
        for dep in self.deployments.values():
            if dep["Namespace"] == namespace and dep["JobID"] == job["ID"] and dep["Status"] == "running":
                dep.update(Status="cancelled", ModifyIndex=index,
                           StatusDescription="Cancelled because job is stopped" if job.get("Stop")
                           else "Cancelled due to newer version of job")
        if job.get("Stop"):
            for alloc in live:
                self._stop_alloc(alloc)
            eval_id = self._eval(namespace, job["ID"], index, None, None, triggered="job-deregister")
            return {"EvalID": eval_id, "EvalCreateIndex": index, "JobModifyIndex": index, "Warnings": "",
                    "Index": index}
        if outcome == "unplaceable":
            dep = self._deployment(job, index)
            blocked = self._eval(namespace, job["ID"], index, None, None, status="blocked")
            eval_id = self._eval(namespace, job["ID"], index, self._failed_tg(job), dep["ID"], blocked=blocked)
            return {"EvalID": eval_id, "EvalCreateIndex": index, "JobModifyIndex": index, "Warnings": "",
                    "Index": index}
        # Nomad creates a deployment only for task groups with an update strategy
        has_update = any((g.get("Update") or {}).get("MaxParallel") for g in job.get("TaskGroups") or [])
        dep = self._deployment(job, index) if has_update else None
        eval_id = self._eval(namespace, job["ID"], index, None, dep["ID"] if dep else None)
        for alloc in live:
            self._later(0.5, lambda alloc=alloc: self._stop_alloc(alloc))
        group = (job.get("TaskGroups") or [{}])[0]
        alloc = self._alloc(job, dep, eval_id, group, stderr if outcome != "healthy" else None,
                            previous=live[0]["ID"] if live else "")
        fails = outcome in ("failed", "auto-reverted")
        self._later(1, lambda: self._start(alloc))
        if fails:
            self._later(2, lambda: self._fail(job, dep, alloc))
        else:
            self._later(2, lambda: self._healthy(job, dep, alloc))
        return {"EvalID": eval_id, "EvalCreateIndex": index, "JobModifyIndex": index, "Warnings": "",
                "Index": index}

    def _eval(self, namespace, job_id, job_index, failed, deployment_id, status="complete", blocked="",
              triggered="job-register") -> str:
        eval_id = str(uuid.uuid4())
        self.evals[eval_id] = {
            "ID": eval_id, "Namespace": namespace, "Priority": 50, "Type": "service", "TriggeredBy": triggered,
            "JobID": job_id, "JobModifyIndex": job_index, "NodeID": "", "NodeModifyIndex": 0,
            "DeploymentID": deployment_id or "", "Status": status, "StatusDescription": "", "Wait": 0,
            "NextEval": "", "PreviousEval": "", "BlockedEval": blocked, "FailedTGAllocs": failed,
            "ClassEligibility": None, "EscapedComputedClass": False, "AnnotatePlan": False,
            "QueuedAllocations": {}, "SnapshotIndex": self.index, "CreateIndex": self.index,
            "ModifyIndex": self.index, "CreateTime": _now_ns(), "ModifyTime": _now_ns()}
        return eval_id

    def _deployment(self, job, index) -> dict:
        dep_id = str(uuid.uuid4())
        groups = {}
        for group in job.get("TaskGroups") or []:
            update = group.get("Update") or {}
            groups[group["Name"]] = {"AutoRevert": bool(update.get("AutoRevert")), "AutoPromote": False,
                                     "Promoted": False, "PlacedCanaries": None, "DesiredCanaries": 0,
                                     "DesiredTotal": group.get("Count", 1), "PlacedAllocs": 0, "HealthyAllocs": 0,
                                     "UnhealthyAllocs": 0, "ProgressDeadline": update.get("ProgressDeadline", 0),
                                     "RequireProgressBy": None}
        dep = {"ID": dep_id, "Namespace": job["Namespace"], "JobID": job["ID"], "JobVersion": job["Version"],
               "JobModifyIndex": index, "JobSpecModifyIndex": index, "JobCreateIndex": job["CreateIndex"],
               "IsMultiregion": False, "TaskGroups": groups, "Status": "running",
               "StatusDescription": "Deployment is running", "CreateIndex": index, "ModifyIndex": index}
        self.deployments[dep_id] = dep
        return dep

    def _alloc(self, job, dep, eval_id, group, stderr, previous="") -> dict:
        alloc_id = str(uuid.uuid4())
        task = (group.get("Tasks") or [{}])[0].get("Name", "task")
        alloc = {"ID": alloc_id, "EvalID": eval_id, "Name": f"{job['ID']}.{group.get('Name')}[0]",
                 "Namespace": job["Namespace"], "NodeID": self.node_id, "NodeName": "client-1",
                 "JobID": job["ID"], "JobType": job.get("Type", "service"), "JobVersion": job["Version"],
                 "TaskGroup": group.get("Name"), "DesiredStatus": "run", "DesiredDescription": "",
                 "ClientStatus": "pending", "ClientDescription": "No tasks have started",
                 "DeploymentID": dep["ID"] if dep else "", "DeploymentStatus": None, "FollowupEvalID": "",
                 "PreviousAllocation": previous, "NextAllocation": "", "RescheduleTracker": None,
                 "PreemptedAllocations": None, "PreemptedByAllocation": "",
                 "TaskStates": {task: {"State": "pending", "Failed": False, "Restarts": 0, "LastRestart": None,
                                       "StartedAt": None, "FinishedAt": None,
                                       "Events": [_event("Received", "Task received by client"),
                                                  _event("Task Setup", "Building Task Directory")]}},
                 "CreateIndex": self.index, "ModifyIndex": self.index, "CreateTime": _now_ns(),
                 "ModifyTime": _now_ns(), "_task": task, "_image": ((group.get("Tasks") or [{}])[0].get("Config")
                                                                    or {}).get("image", "")}
        self.allocs[alloc_id] = alloc
        self.logs[alloc_id] = {"stdout": "", "stderr": ""}
        if dep:
            dep["TaskGroups"][group.get("Name")]["PlacedAllocs"] += 1
        alloc["_stderr"] = stderr if stderr is not None else FAILED_STDERR
        return alloc

    def _touch(self, obj):
        obj["ModifyIndex"] = self.index + 1
        obj["ModifyTime"] = _now_ns()

    def _start(self, alloc):
        state = alloc["TaskStates"][alloc["_task"]]
        state["Events"].append(_event("Driver", "", DriverMessage=f"Downloading image {alloc['_image']}"))
        state["Events"].append(_event("Started", "Task started by client"))
        state.update(State="running", StartedAt=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        alloc.update(ClientStatus="running", ClientDescription="Tasks are running")
        self._touch(alloc)

    def _healthy(self, job, dep, alloc):
        if dep is None:
            self.logs[alloc["ID"]]["stderr"] += HEALTHY_STDERR
            job.update(Status="running", ModifyIndex=self.index + 1)
            return
        if dep["Status"] != "running":
            return
        self.logs[alloc["ID"]]["stderr"] += HEALTHY_STDERR
        alloc["DeploymentStatus"] = {"Healthy": True, "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                     "Canary": False, "ModifyIndex": self.index + 1}
        self._touch(alloc)
        for group in dep["TaskGroups"].values():
            group["HealthyAllocs"] += 1
        dep.update(Status="successful", StatusDescription="Deployment completed successfully",
                   ModifyIndex=self.index + 1)
        job.update(Stable=True, Status="running", ModifyIndex=self.index + 1)

    def _fail(self, job, dep, alloc):
        if dep is not None and dep["Status"] != "running":
            return
        self.logs[alloc["ID"]]["stderr"] += alloc["_stderr"]
        state = alloc["TaskStates"][alloc["_task"]]
        state["Events"].append(_event("Terminated", "Exit Code: 78", ExitCode=78))
        state["Events"].append(_event("Not Restarting", "Exceeded allowed attempts 5 in interval 30m0s and mode "
                                      "is \"fail\"", FailsTask=True))
        state.update(State="dead", Failed=True, Restarts=5,
                     FinishedAt=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        alloc.update(ClientStatus="failed", ClientDescription="Failed tasks",
                     DeploymentStatus={"Healthy": False, "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                       "Canary": False, "ModifyIndex": self.index + 1})
        self._touch(alloc)
        job["Status"] = "dead"
        if dep is None:
            alloc["DeploymentStatus"] = None
            return
        for group in dep["TaskGroups"].values():
            group["UnhealthyAllocs"] += 1
        dep["ModifyIndex"] = self.index + 1
        job["Status"] = "dead"
        versions = self.jobs[(job["Namespace"], job["ID"])]
        auto_revert = any(g["AutoRevert"] for g in dep["TaskGroups"].values())
        stable = [v for v in versions if v.get("Stable") and v["Version"] < job["Version"] and spec(v) != spec(job)]
        if auto_revert and stable:
            target = stable[-1]
            dep.update(Status="failed", StatusDescription="Failed due to unhealthy allocations - rolling back to "
                                                          f"job version {target['Version']}")
            self._register(job["Namespace"], copy.deepcopy(spec(target)), outcome="healthy", stderr=None)
        else:
            dep.update(Status="failed", StatusDescription="Failed due to unhealthy allocations")

    def _stop_alloc(self, alloc):
        if alloc["DesiredStatus"] != "run":
            return
        alloc.update(DesiredStatus="stop", DesiredDescription="alloc is being updated due to job update")
        if alloc["ClientStatus"] in ("pending", "running"):
            alloc.update(ClientStatus="complete", ClientDescription="All tasks have completed")
            state = alloc["TaskStates"][alloc["_task"]]
            state["Events"].append(_event("Killing", "Sent interrupt"))
            state["Events"].append(_event("Killed", "Task successfully killed"))
            state.update(State="dead", FinishedAt=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self._touch(alloc)

    # -- HTTP -------------------------------------------------------------------------------------
    def _check_acl(self, token: str | None, namespace: str, capability: str | None):
        if self.acl_tokens is None or capability is None:
            return
        if not token:
            raise HTTPError(403, "Permission denied")
        grant = self.acl_tokens.get(token)
        if grant is None:
            raise HTTPError(403, "ACL token not found")
        if grant == "management":
            return
        if capability not in (grant.get(namespace) or grant.get("*") or set()):
            raise HTTPError(403, "Permission denied")

    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, code, body, content_type=None, index=None):
                if isinstance(body, str):
                    data, ctype = body.encode(), content_type or "text/plain"
                else:
                    data, ctype = json.dumps(body).encode(), "application/json"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                if index is not None:
                    self.send_header("X-Nomad-Index", str(index))
                    self.send_header("X-Nomad-KnownLeader", "true")
                    self.send_header("X-Nomad-LastContact", "0")
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = None
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        return self._send(400, "Request body is not valid JSON")
                token = self.headers.get("X-Nomad-Token")
                auth = self.headers.get("Authorization", "")
                if not token and auth.startswith("Bearer "):
                    token = auth[len("Bearer "):]
                path = unquote(url.path)
                with double.lock:
                    double.requests.append((method, path, query, body))
                try:
                    if path.startswith("/v1/client/fs/logs/"):
                        return self._logs(path.rsplit("/", 1)[1], query, token)
                    code, result, index = double.route(method, path, query, body, token)
                except HTTPError as exc:
                    return self._send(exc.code, exc.text)
                self._send(code, result, index=index)
                if path.endswith("/plan") and method in ("POST", "PUT") and double.after_plan:
                    hook, double.after_plan = double.after_plan, None
                    hook()

            def _logs(self, alloc_id, query, token):
                with double.lock:
                    double._tick()
                    alloc = double.allocs.get(alloc_id)
                    if alloc is None:
                        raise_ = HTTPError(404, "Unknown allocation \"%s\"" % alloc_id)
                        return self._send(raise_.code, raise_.text)
                    try:
                        double._check_acl(token, alloc["Namespace"], "read-logs")
                    except HTTPError as exc:
                        return self._send(exc.code, exc.text)
                task = query.get("task")
                if not task:
                    return self._send(400, "must provide task name")
                if task != alloc["_task"]:
                    return self._send(400, f"unknown task name \"{task}\"")
                kind = query.get("type")
                if kind not in ("stdout", "stderr"):
                    return self._send(400, "must provide log type (stdout/stderr)")
                flags = {}
                for name in ("follow", "plain"):
                    value = query.get(name, "false")
                    if value.lower() not in ("1", "t", "true", "0", "f", "false"):
                        return self._send(400, f"failed to parse value of \"{name}\" ({value}) as bool")
                    flags[name] = value.lower() in ("1", "t", "true")
                origin = query.get("origin", "start")
                if origin not in ("start", "end"):
                    return self._send(400, "origin must be start or end")
                offset = int(query.get("offset") or 0)
                data = double.logs[alloc_id][kind].encode()
                start = max(0, len(data) - offset) if origin == "end" else min(offset, len(data))
                chunk = data[start:]
                file_name = f"alloc/logs/{task}.{kind}.0"

                def frame(part, at):
                    if flags["plain"]:
                        return part
                    return json.dumps({"File": file_name, "Offset": at,
                                       "Data": base64.b64encode(part).decode()}).encode()

                if not flags["follow"]:
                    payload = frame(chunk, len(data)) if chunk or flags["plain"] else b""
                    return self._send(200, payload.decode(), "text/plain" if flags["plain"] else "application/json")
                self.send_response(200)
                self.send_header("Content-Type", "text/plain" if flags["plain"] else "application/json")
                self.send_header("Connection", "close")
                self.end_headers()
                sent, quiet_since = len(data), time.monotonic()
                try:
                    if chunk:
                        self.wfile.write(frame(chunk, len(data)))
                        self.wfile.flush()
                    while time.monotonic() - quiet_since < double.follow_limit:
                        time.sleep(0.05)
                        with double.lock:
                            double._tick()
                            now = double.logs[alloc_id][kind].encode()
                        if len(now) > sent:
                            self.wfile.write(frame(now[sent:], len(now)))
                            self.wfile.flush()
                            sent, quiet_since = len(now), time.monotonic()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

            def do_DELETE(self):
                self._handle("DELETE")

        return Handler

    def append_log(self, alloc_id: str, text: str, kind="stderr"):
        with self.lock:
            self.logs[alloc_id][kind] += text

    def route(self, method, path, query, body, token):
        with self.lock:
            self._tick()
            if method == "GET" and query.get("index"):
                self._block(int(query["index"]), query.get("wait", "5m"))
            namespace = query.get("namespace") or "default"
            if path == "/v1/status/leader":
                return 200, '"127.0.0.1:4647"', None  # a JSON string (status.mdx "Sample Response")
            if path == "/v1/agent/health":
                return 200, {"client": {"ok": True, "message": "ok"}, "server": {"ok": True, "message": "ok"}}, None
            if query.get("region") and query["region"] != self.region:
                raise HTTPError(500, "No path to region")
            if path == "/v1/agent/self":
                self._check_acl(token, "default", "read-job")
                return 200, {"config": {"Version": {"Version": "1.11.1"}, "Region": self.region}}, None
            if path == "/v1/acl/token/self":
                if self.acl_tokens is None:
                    raise HTTPError(400, "ACL support disabled")
                self._check_acl(token, namespace, "read-job")
                return 200, {"Name": "test", "Type": "client", "Policies": ["mlflow"]}, None
            if path == "/v1/nodes":
                return 200, [{"ID": self.node_id, "Datacenter": self.datacenter, "Name": "client-1",
                              "Status": "ready"}], self.index
            parts = path.strip("/").split("/")[1:]
            if parts[:1] == ["jobs"]:
                return self._jobs(method, parts[1:], namespace, query, body, token)
            if parts[:1] == ["job"] and len(parts) >= 2:
                return self._job(method, parts[1], parts[2:], namespace, query, body, token)
            if parts[:1] == ["deployment"] and len(parts) >= 2:
                if parts[1] == "allocations" and len(parts) == 3:
                    dep = self._dep(parts[2], token)
                    allocs = [self._stub(a) for a in self.allocs.values() if a["DeploymentID"] == dep["ID"]]
                    return 200, allocs, self.index
                return 200, self._public(self._dep(parts[1], token)), self.index
            if parts == ["deployments"]:
                self._check_acl(token, namespace, "read-job")
                return 200, [self._public(d) for d in self.deployments.values()
                             if namespace == "*" or d["Namespace"] == namespace], self.index
            if parts[:1] == ["evaluation"] and len(parts) == 2:
                ev = self.evals.get(parts[1])
                if ev is None:
                    raise HTTPError(404, "eval not found")
                self._check_acl(token, ev["Namespace"], "read-job")
                return 200, copy.deepcopy(ev), self.index
            if parts[:1] == ["allocation"] and len(parts) == 2:
                alloc = self.allocs.get(parts[1])
                if alloc is None:
                    raise HTTPError(404, "alloc not found")
                self._check_acl(token, alloc["Namespace"], "read-job")
                return 200, self._public(alloc), self.index
            raise HTTPError(404, "Invalid URL")

    def _block(self, index: int, wait: str):
        """A blocking query (index.mdx): hold the answer until the state passes ``index`` or ``wait`` ends."""
        try:
            limit = min(hcl_job.duration(wait, "wait") / 1e9, 600.0)
        except hcl_job.ParseError:
            raise HTTPError(400, f"Invalid wait time: {wait}") from None
        deadline = time.monotonic() + limit
        while self.index <= index and time.monotonic() < deadline:
            self.changed.wait(0.05)
            self._tick()

    def _public(self, obj):
        return {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}

    def _stub(self, alloc):
        return self._public(alloc)

    def _dep(self, dep_id, token):
        dep = self.deployments.get(dep_id)
        if dep is None:
            raise HTTPError(404, "resource not found")
        self._check_acl(token, dep["Namespace"], "read-job")
        return dep

    def _known_namespace(self, namespace, job_id):
        if namespace not in self.namespaces:
            raise HTTPError(500, f"job \"{job_id}\" is in nonexistent namespace \"{namespace}\"")

    def _jobs(self, method, rest, namespace, query, body, token):
        if rest == ["parse"] and method in ("POST", "PUT"):
            self._check_acl(token, namespace, "parse-job")
            if not body or "JobHCL" not in body:
                raise HTTPError(400, "Job must be specified")
            try:
                job = hcl_job.parse(body["JobHCL"], body.get("Variables") or "", bool(body.get("Canonicalize")))
            except hcl_job.ParseError as exc:
                raise HTTPError(400, str(exc)) from None
            return 200, job, None
        if rest == [] and method == "GET":
            self._check_acl(token, namespace, "list-jobs")
            out = []
            for (ns, job_id), versions in self.jobs.items():
                if namespace in ("*", ns) and job_id.startswith(query.get("prefix", "")):
                    job = versions[-1]
                    out.append({k: job.get(k) for k in ("ID", "Name", "Namespace", "Type", "Priority", "Status",
                                                        "StatusDescription", "Stop", "Version", "Datacenters",
                                                        "CreateIndex", "ModifyIndex", "JobModifyIndex",
                                                        "SubmitTime")})
            return 200, out, self.index
        if rest == [] and method in ("POST", "PUT"):
            job = (body or {}).get("Job")
            if not job:
                raise HTTPError(400, "Job must be specified")
            return self._submit(job.get("ID") or "", namespace, body, token)
        raise HTTPError(404, "Invalid URL")

    def _submit(self, job_id, namespace, body, token):
        job = body.get("Job") or {}
        if not job.get("ID"):
            raise HTTPError(400, "Job ID does not match name" if job_id else "Missing job ID")
        if job_id and job["ID"] != job_id:
            raise HTTPError(400, "Job ID does not match name")
        namespace = job.get("Namespace") or namespace
        self._check_acl(token, namespace, "submit-job")
        self._known_namespace(namespace, job["ID"])
        if not job.get("TaskGroups"):
            raise HTTPError(500, "1 error occurred:\n\t* Missing job task groups\n\n")
        current = self._current(namespace, job["ID"])
        if body.get("EnforceIndex"):
            wanted = int(body.get("JobModifyIndex") or 0)
            prefix = f"Enforcing job modify index {wanted}"
            if wanted == 0 and current is not None:
                raise HTTPError(500, f"{prefix}: job already exists")
            if wanted != 0 and current is None:
                raise HTTPError(500, f"{prefix}: job does not exist")
            if current is not None and current["JobModifyIndex"] != wanted:
                raise HTTPError(500, f"{prefix}: job exists with conflicting job modify index: "
                                     f"{current['JobModifyIndex']}")
        outcome, stderr = self.pending or ("healthy", None)
        self.pending = None
        return 200, self._register(namespace, copy.deepcopy(job), outcome, stderr), None

    def _job(self, method, job_id, rest, namespace, query, body, token):
        current = self._current(namespace, job_id)
        if rest == [] and method in ("POST", "PUT"):
            return self._submit(job_id, namespace, body or {}, token)
        if rest == ["plan"] and method in ("POST", "PUT"):
            job = (body or {}).get("Job")
            if not job:
                raise HTTPError(400, "Job must be specified")
            ns = job.get("Namespace") or namespace
            self._check_acl(token, ns, "submit-job")
            self._known_namespace(ns, job_id)
            current = self._current(ns, job_id)
            new = hcl_job.canonical(job)
            new["Namespace"] = ns
            diff = job_diff(current, new)
            changed = diff["Type"] != "None"
            failed = self._failed_tg(new) if changed and not self._placeable(new) else None
            desired = {g["Name"]: {"DestructiveUpdate": int(changed and current is not None),
                                   "InPlaceUpdate": 0, "Stop": 0, "Migrate": 0,
                                   "Place": int(changed and current is None), "Ignore": int(not changed),
                                   "Canary": 0, "Preemptions": 0}
                       for g in new.get("TaskGroups") or []}
            return 200, {"Index": self.index, "NextPeriodicLaunch": "0001-01-01T00:00:00Z", "Warnings": "",
                         "Diff": diff if (body or {}).get("Diff") else None, "CreatedEvals": None,
                         "JobModifyIndex": current["JobModifyIndex"] if current else 0,
                         "FailedTGAllocs": failed, "Annotations": {"DesiredTGUpdates": desired,
                                                                   "PreemptedAllocs": None}}, None
        self._check_acl(token, namespace, "submit-job" if method in ("POST", "PUT", "DELETE") else "read-job")
        if rest == ["revert"] and method in ("POST", "PUT"):
            if current is None:
                raise HTTPError(404, "job not found")
            body = body or {}
            prior = body.get("EnforcePriorVersion")
            if prior is not None and int(prior) != current["Version"]:
                raise HTTPError(500, f"Current job has version {current['Version']}; enforcing version {prior}")
            wanted = int(body.get("JobVersion") or 0)
            if wanted == current["Version"]:
                raise HTTPError(500, f"can't revert to current version")
            target = [v for v in self.jobs[(namespace, job_id)] if v["Version"] == wanted]
            if not target:
                raise HTTPError(500, f"job \"{job_id}\" in namespace \"{namespace}\" at version {wanted} not found")
            outcome, stderr = self.pending or ("healthy", None)
            self.pending = None
            return 200, self._register(namespace, copy.deepcopy(spec(target[0])), outcome, stderr), None
        if current is None:
            raise HTTPError(404, "job versions not found" if rest == ["versions"] else "job not found")
        if rest == [] and method == "GET":
            return 200, self._public(current), self.index
        if rest == [] and method == "DELETE":
            if query.get("purge") in ("true", "True", "1"):
                del self.jobs[(namespace, job_id)]
                for alloc in self.allocs.values():
                    if alloc["JobID"] == job_id and alloc["Namespace"] == namespace:
                        self._stop_alloc(alloc)
                return 200, {"EvalID": "", "EvalCreateIndex": self._bump(), "JobModifyIndex": self.index}, None
            stopped = copy.deepcopy(spec(current))
            stopped["Stop"] = True
            return 200, self._register(namespace, stopped, "healthy", None), None
        if rest == ["versions"]:
            versions = [self._public(v) for v in reversed(self.jobs[(namespace, job_id)])]
            diffs = None
            if query.get("diffs") in ("true", "True", "1"):
                diffs = [job_diff(versions[i + 1], versions[i]) for i in range(len(versions) - 1)]
            return 200, {"Versions": versions, "Diffs": diffs, "Index": self.index, "KnownLeader": True,
                         "LastContact": 0}, self.index
        if rest == ["allocations"]:
            return 200, [self._stub(a) for a in sorted(self.allocs.values(), key=lambda a: a["CreateIndex"])
                         if a["JobID"] == job_id and a["Namespace"] == namespace], self.index
        if rest == ["evaluations"]:
            return 200, [copy.deepcopy(e) for e in self.evals.values()
                         if e["JobID"] == job_id and e["Namespace"] == namespace], self.index
        deps = sorted((d for d in self.deployments.values() if d["JobID"] == job_id and d["Namespace"] == namespace),
                      key=lambda d: d["CreateIndex"], reverse=True)
        if rest == ["deployments"]:
            return 200, [self._public(d) for d in deps], self.index
        if rest == ["deployment"]:
            return 200, self._public(deps[0]) if deps else None, self.index
        if rest == ["summary"]:
            summary = {}
            for alloc in self.allocs.values():
                if alloc["JobID"] == job_id and alloc["Namespace"] == namespace:
                    counts = summary.setdefault(alloc["TaskGroup"], {k: 0 for k in (
                        "Queued", "Complete", "Failed", "Running", "Starting", "Lost", "Unknown")})
                    key = {"pending": "Starting", "running": "Running", "complete": "Complete",
                           "failed": "Failed", "lost": "Lost"}.get(alloc["ClientStatus"], "Unknown")
                    counts[key] += 1
            return 200, {"JobID": job_id, "Namespace": namespace, "Summary": summary, "Children": None,
                         "CreateIndex": current["CreateIndex"], "ModifyIndex": current["ModifyIndex"]}, self.index
        raise HTTPError(404, "Invalid URL")
