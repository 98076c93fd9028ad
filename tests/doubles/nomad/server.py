"""A Nomad agent double (server and one client) on a free loopback port, following ../shared/reference/nomad/.

What it answers: the paths, bodies and status codes of jobs.mdx, deployments.mdx, allocations.mdx,
evaluations.mdx, client.mdx (Stream Logs), status.mdx, the node and service catalogue reads; errors as
text/plain (NOTES.md), the "Enforcing job modify index" 500 of a check-and-set register, ``X-Nomad-Index``
and blocking queries on reads, ACL tokens (X-Nomad-Token or Bearer) with per-namespace capabilities.
HCL2 job files are parsed by the Go engine (engine.py, engine/): Nomad's job parser rebuilt on Nomad's own
libraries (hashicorp/hcl/v2 as Nomad builds it, its HCL function table, the nomad/api structs and
api.Job.Canonicalize), so /v1/jobs/parse answers the JSON job of json-jobs.mdx or Nomad's own 400 text.

What it does over time, as Nomad does (BEHAVIOUR.md; the source files are named where each part is):
- a register creates an evaluation (pending, then complete) that the scheduler processes: it checks
  each node in feasible.go's order (job constraints, docker driver, group and task constraints such as
  ``${attr.cpu.arch}``, host volumes, then memory and cpu left), counts the filtered ones in the
  ``AllocationMetric`` (``ConstraintFiltered`` keyed by ``Constraint.String()``), places allocations on
  the best fit (rank.go ScoreFitBinPack) or reports ``FailedTGAllocs`` with a blocked evaluation, retried
  when a node changes (``add_node``, a restart);
- client nodes (client.py) report ``cpu.arch``/``kernel.arch`` in ``/v1/node/<id>`` only; the first is
  this machine's unless the test sets it (a Raspberry Pi: ``add_node("pi4", cpu_arch="arm64")``), and a
  node's docker driver runs an image of another architecture as that node's kernel would: the
  container exits 1 with "exec <path>: exec format error" (docker_driver.py);
- allocations run for real on the client (client.py: the test Docker engine through
  docker_driver.py), with restarts, checks, deployment health and service registrations;
- ``template`` blocks: ``{{ with nomadVar "nomad/jobs/<job>" }}`` rendered from the Variables store into
  the task's environment (templates.py), re-rendered while the task runs and restarted on a change;
- a rolling update replaces ``max_parallel`` allocations at a time: an old one is stopped as its
  replacement is placed, and the next only once a replacement is healthy (reconcile.go);
- the deployment watcher (nomad/deploymentwatcher) counts healthy and unhealthy allocations, fails a
  deployment at the first unhealthy allocation that cannot be rescheduled (or at its progress
  deadline), and with ``auto_revert`` registers the latest stable version again; a deployment whose
  allocations are all healthy succeeds and marks its job version stable;
- failed allocations are rescheduled by the group's reschedule policy (delay, exponential);
- batch jobs (``type = "batch"``): the batch restart and reschedule defaults (api/tasks.go), no update
  block (refused, as structs.go TaskGroup.Validate does) and no deployment; a task runs to its end, exit 0
  ``complete``, else failed by its restart policy; a finished allocation of the current version counts
  toward the group's count (reconciler filters.go), so it is not replaced, while those of an older version
  (or of a purged job of the same ID) are ignored, so a changed job runs again; the job is ``running``
  while an allocation runs, ``pending`` while an evaluation is, then ``dead`` (state_store.go
  getJobStatus); ``/allocations`` lists those of the job's CreateIndex unless ``all=true``; the summary
  counts allocations by client status and the children of a periodic job; a job's type cannot change;
- periodic jobs (a batch job with ``periodic { crons, prohibit_overlap, time_zone }``): the parent is
  ``running`` until stopped and gets no evaluation; the launcher (nomad/periodic.go) registers a child
  ``<parent>/periodic-<launch Unix seconds>`` (ParentID set, no periodic block, evaluation triggered by
  ``periodic-job``) at each cron instant (hashicorp/cronexpr in the Go engine, in the block's time zone),
  skipping a launch while a child still runs with ``prohibit_overlap``; ``POST /v1/job/<id>/periodic/force``
  launches one now whatever prohibit_overlap says, answering {EvalID, EvalCreateIndex, Index};
  ``/v1/job/`` paths are split by their endpoint's suffix, so a child's ID keeps its slash;
- ``POST /_double/agent/restart`` is the test's ``systemctl restart nomad``: the API goes away for
  ``restart_seconds`` and the client reads its client.hcl again (running allocations keep running);
  a client.hcl it cannot read keeps the agent down, as Nomad refuses to start.

Consul (tests/doubles/consul.py) when a node is given one: the node reports the ``consul.*`` attributes,
a Consul service (``provider = "consul"``, Nomad's default) gets the implicit constraint
``${attr.consul.version} semver >= 1.8.0`` at plan and register (admission.py, with the Nomad
provider's own), so a node without Consul filters the group, and it is registered in Consul's catalogue
instead of Nomad's, with its checks run as the Consul agent runs them.

Left out (our jobs do not use them, or one test machine cannot have them): node drain and lost nodes, canaries and promotion, Consul Connect and Consul's own ACLs, CSI volumes, preemption, parameterized
(dispatch) and sysbatch jobs, a periodic job's launches missed while the double was down,
a task's own ``shutdown_delay`` (the group's is modelled: services deregistered, then the wait, then the kill), the eval broker's queueing and its nack/retry, template functions other than ``nomadVar``
(``key``, ``secret``, ``env``...: a task whose template uses one is killed with "Template failed" here;
templates are rendered by the Go engine, text/template with consul-template's ``nomadVar``).
"""
from __future__ import annotations

import base64
import copy
import fnmatch
import json
import random
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from . import engine, jobspec
from .admission import implied_constraints
from .client import SECOND, NomadClient, go_duration, now_ns, rfc3339, task_event
from .diff import job_diff, spec

ALL_CAPS = {"list-jobs", "parse-job", "read-job", "submit-job", "read-logs", "read-fs",
            "variables:read", "variables:write", "variables:destroy"}  # the last: a `variables` rule's
READ_CAPS = {"list-jobs", "parse-job", "read-job"}
ACTIVE = {"running", "paused", "pending", "blocked", "unblocking", "initializing"}
DYNAMIC_PORTS = (20000, 32000)  # client.min_dynamic_port / max_dynamic_port defaults

ALLOC_UPDATING = "alloc is being updated due to job update"
ALLOC_NOT_NEEDED = "alloc not needed due to job update"
ALLOC_RESCHEDULED = "alloc was rescheduled because it failed"


class HTTPError(Exception):
    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code, self.text = code, text


def _free_dynamic_port(taken: set) -> int:
    for _ in range(200):
        port = random.randint(*DYNAMIC_PORTS)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free dynamic port")


def _group_spec(job: dict, group: str) -> dict:
    for g in job.get("TaskGroups") or []:
        if g["Name"] == group:
            return g
    return {}


class NomadDouble:
    def __init__(self, acl_tokens: dict | None = None, namespaces=("default",), region="global",
                 datacenter="DC0", engine=None, network: str | None = None, client_config=None,
                 node_memory_mb: int = 8192, tls: tuple | None = None,
                 eval_delay: float = 0.05, restart_seconds: float = 1.0, cpu_arch: str | None = None,
                 consul=None):
        """``acl_tokens``: None disables ACLs; else {secret: "management" | {namespace: capabilities}}, where
        the key "node" holds the token's node rule ("read", "write"; none: node reads are refused).
        ``engine``: a docker.DockerClient to run tasks on (None: the node has no docker driver, so docker
        jobs cannot be placed); ``network``: the bridge network for the containers; ``client_config``:
        the client.hcl the node reads its host volumes from. ``tls``: (certfile, keyfile) for https.
        ``cpu_arch``: the first node's Go architecture (default: this machine's); ``add_node`` adds more.
        ``consul``: a ConsulDouble (tests/doubles/consul.py) whose agent runs on the first node (None: no Consul)."""
        from .docker_driver import DockerDriver

        self.acl_tokens = acl_tokens
        self.namespaces = set(namespaces)
        self.region, self.datacenter = region, datacenter
        self.eval_delay, self.restart_seconds = eval_delay, restart_seconds
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.index = 1
        self.jobs: dict[tuple[str, str], list[dict]] = {}  # (namespace, id) -> versions, oldest first
        self.evals: dict[str, dict] = {}
        self.deployments: dict[str, dict] = {}
        self.allocs: dict[str, dict] = {}
        self.services: dict[str, dict] = {}  # registration ID -> registration
        self.variables: dict[tuple[str, str], dict] = {}  # (namespace, path) -> Nomad Variable
        self.purged_children: dict[tuple[str, str], int] = {}  # (namespace, parent ID) -> children purged
        self.periodic: dict[tuple[str, str], int | None] = {}  # tracked periodic jobs -> next launch (Unix s)
        self.timeline: list[tuple[float, object]] = []
        self.requests: list[tuple[str, str, dict, object]] = []  # (method, path, query, body)
        self.after_plan = None  # a test's hook: called (outside the lock) after a plan is answered
        self.session = uuid.uuid4().hex[:12]
        self._engine, self._network = engine, network
        self.client = NomadClient(self, None, client_config, datacenter, memory_mb=node_memory_mb, cpu_arch=cpu_arch,
                                  consul=consul)
        self.client.driver = DockerDriver(engine, network, self.session, arch=self.client.cpu_arch) \
            if engine is not None else None
        self.nodes: list[NomadClient] = [self.client]
        self.port = 0
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.server = None
        self._agent = threading.Lock()  # one restart at a time
        self._stopping = threading.Event()
        self._listen()
        self._ticker = threading.Thread(target=self._tick_loop, daemon=True, name="nomad-double-servers")
        self._ticker.start()

    # -- control from tests ----------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def node_id(self) -> str:
        return self.client.id

    def _listen(self):
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        if self.tls:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self.server = server
        threading.Thread(target=server.serve_forever, daemon=True, name="nomad-double-http").start()

    def stop(self):
        """Stop the API, then every allocation's container (also those of a failing test): the tasks of all
        nodes first, then their containers (the nodes share one engine and one session label)."""
        self._stopping.set()
        self._go_down()
        runners = [runner for node in self.nodes for runner in list(node.runners.values())]
        for runner in runners:
            runner.killed.set()
        for runner in runners:
            runner.join(timeout=30)
        for node in self.nodes:
            node.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def restart_agent(self, seconds: float | None = None):
        """``systemctl restart nomad``: the API is down for ``seconds``; the client reads client.hcl again."""
        self._go_down()
        self._come_back(self.restart_seconds if seconds is None else seconds)

    def _go_down(self):
        with self._agent:
            old, self.server = self.server, None
            if old is not None:
                old.shutdown()  # no new connection is accepted; one being answered can still be
                old.server_close()

    def _come_back(self, seconds: float):
        """The agent starts again after ``seconds``, unless the double was stopped or client.hcl is
        invalid (Nomad refuses to start: `restart_agent()` once it is fixed)."""
        if self._stopping.wait(seconds):
            return
        with self._agent:
            with self.lock:
                for node in self.nodes:
                    node.reload()
                if any(node.config_error for node in self.nodes):
                    return
                self._unblock()
            if self.server is None and not self._stopping.is_set():
                self._listen()

    def job(self, job_id="mlflow", namespace="default") -> dict | None:
        with self.lock:
            versions = self.jobs.get((namespace, job_id))
            return self._public_job(versions[-1]) if versions else None

    def versions(self, job_id="mlflow", namespace="default") -> list[dict]:
        with self.lock:
            return [self._public_job(v) for v in self.jobs.get((namespace, job_id), [])]

    def registrations(self, periodic: bool = False) -> list[tuple[str, dict]]:
        """(path, body) of every register call (POST /v1/jobs, POST /v1/job/:id) of a job that is not periodic
        (``periodic``: of periodic jobs only, such as the nightly backup deploy registers beside the service)."""
        return [(p, b) for m, p, q, b in self.requests
                if m in ("POST", "PUT") and (p == "/v1/jobs" or (p.startswith("/v1/job/") and p.count("/") == 3))
                and bool(((b or {}).get("Job") or {}).get("Periodic")) == periodic]

    def register_out_of_band(self, job: dict, namespace="default"):
        """Someone else's `nomad job run` (no check-and-set)."""
        with self.lock:
            self._register(namespace, copy.deepcopy(job))

    def running_allocs(self, job_id="mlflow", namespace="default") -> list[dict]:
        with self.lock:
            return [self._public(a) for a in self.allocs.values()
                    if a["JobID"] == job_id and a["Namespace"] == namespace and a["ClientStatus"] == "running"
                    and a["DesiredStatus"] == "run"]

    def container_of(self, alloc_id: str):
        """The running container of an allocation (docker SDK object) or None."""
        runner = next((node.runners[alloc_id] for node in self.nodes if alloc_id in node.runners), None)
        running = runner._running if runner else None
        return runner.client.driver.client.containers.get(running.container_id) if running else None

    def add_node(self, name: str, cpu_arch: str | None = None, datacenter: str | None = None,
                 client_config=None, docker: bool = True, memory_mb: int = 8192, cpu_mhz: int = 8000,
                 consul=None):
        """Another client node joins (a Raspberry Pi: ``cpu_arch="arm64"``). With ``docker`` it runs tasks on
        the same test engine, but as a node of its own architecture would (docker_driver.py); with
        ``consul`` (a ConsulDouble) a Consul agent runs on it."""
        from .docker_driver import DockerDriver

        node = NomadClient(self, None, client_config, datacenter or self.datacenter, name=name,
                           memory_mb=memory_mb, cpu_mhz=cpu_mhz, cpu_arch=cpu_arch, consul=consul)
        if docker and self._engine is not None:
            node.driver = DockerDriver(self._engine, self._network, self.session, arch=node.cpu_arch)
        with self.lock:
            self.nodes.append(node)
            self._bump()
            self._unblock()  # node_endpoint.go: a new node unblocks the blocked evaluations
        return node

    def _node(self, node_id: str) -> NomadClient | None:
        return next((node for node in self.nodes if node.id == node_id), None)

    def wait_idle(self, timeout=60.0):
        """Wait until no evaluation is pending and no deployment runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                busy = [e for e in self.evals.values() if e["Status"] == "pending"] + \
                       [d for d in self.deployments.values() if d["Status"] == "running"]
                if not busy:
                    return
            time.sleep(0.05)
        raise TimeoutError("the Nomad double still has evaluations or deployments running")

    # -- time ------------------------------------------------------------------------------------
    def _bump(self) -> int:
        self.index += 1
        self.changed.notify_all()
        return self.index

    def _later(self, seconds: float, action):
        self.timeline.append((time.monotonic() + seconds, action))

    def _tick_loop(self):
        while not self._stopping.wait(0.05):
            with self.lock:
                now = time.monotonic()
                due = sorted((item for item in self.timeline if item[0] <= now), key=lambda item: item[0])
                if due:
                    self.timeline = [item for item in self.timeline if item[0] > now]
                    for _, action in due:
                        action()
                    self._bump()
                self._progress_deadlines()
                self._periodic_launches()

    def alloc_changed(self, alloc: dict):
        """The client changed an allocation (events, states): a new index for blocking queries."""
        alloc["ModifyIndex"] = self._bump()
        alloc["ModifyTime"] = now_ns()

    # -- jobs ------------------------------------------------------------------------------------
    def _current(self, namespace, job_id) -> dict | None:
        versions = self.jobs.get((namespace, job_id))
        return versions[-1] if versions else None

    def _public_job(self, job: dict) -> dict:
        out = copy.deepcopy(job)
        out["Status"] = self._job_status(job)
        return out

    def _job_status(self, job: dict) -> str:
        """state_store.go getJobStatus: a periodic parent runs until stopped; then non-terminal allocations
        (running), a pending evaluation (pending), terminal allocations (dead)."""
        if job.get("Periodic") is not None:
            return "dead" if job.get("Stop") else "running"
        allocs = [a for a in self.allocs.values() if a["JobID"] == job["ID"] and a["Namespace"] == job["Namespace"]]
        if any(a["ClientStatus"] in ("pending", "running") and a["DesiredStatus"] == "run" for a in allocs):
            return "running"
        if not job.get("Stop") and any(e["Status"] == "pending" and e["JobID"] == job["ID"]
                                       and e["Namespace"] == job["Namespace"] for e in self.evals.values()):
            return "pending"
        if job.get("Stop") or (allocs and all(a["ClientStatus"] in ("complete", "failed", "lost") for a in allocs)
                               and not any(self._awaiting_reschedule(a) for a in allocs)):
            return "dead"
        return "pending"

    def _register(self, namespace, job, triggered="job-register") -> dict:
        job = implied_constraints(jobspec.canonical(job))  # job_endpoint.go Register: admission controllers
        job["Namespace"] = namespace
        key = (namespace, job["ID"])
        versions = self.jobs.setdefault(key, [])
        current = versions[-1] if versions else None
        index = self._bump()
        periodic = job.get("Periodic") is not None  # job_endpoint.go Register: no evaluation for a periodic job
        if current is not None and spec(current) == spec(job):
            if periodic:
                return {"EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": current["JobModifyIndex"],
                        "Warnings": "", "Index": current["ModifyIndex"], "LastContact": 0, "KnownLeader": True}
            eval_id = self._eval(namespace, job["ID"], current["JobModifyIndex"], triggered)
            return {"EvalID": eval_id, "EvalCreateIndex": index, "JobModifyIndex": current["JobModifyIndex"],
                    "Warnings": "", "Index": index, "LastContact": 0, "KnownLeader": True}
        job.update({"Version": current["Version"] + 1 if current else 0,
                    "Stable": bool(job.pop("_stable", False)), "Status": "pending", "StatusDescription": "",
                    "SubmitTime": now_ns(), "CreateIndex": versions[0]["CreateIndex"] if versions else index,
                    "ModifyIndex": index, "JobModifyIndex": index, "NomadTokenID": ""})
        versions.append(job)
        for dep in self.deployments.values():
            if dep["Namespace"] == namespace and dep["JobID"] == job["ID"] and dep["Status"] in ACTIVE:
                dep.update(Status="cancelled", ModifyIndex=index,
                           StatusDescription="Cancelled because job is stopped" if job.get("Stop")
                           else "Cancelled due to newer version of job")
        if periodic:
            self._track(job)
            return {"EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": index, "Warnings": "",
                    "Index": index, "LastContact": 0, "KnownLeader": True}
        eval_id = self._eval(namespace, job["ID"], index, "job-deregister" if job.get("Stop") else triggered)
        return {"EvalID": eval_id, "EvalCreateIndex": index, "JobModifyIndex": index, "Warnings": "",
                "Index": index, "LastContact": 0, "KnownLeader": True}

    # -- the periodic launcher (nomad/periodic.go PeriodicDispatch) ---------------------------------
    def _track(self, job: dict):
        """PeriodicDispatch.Add: an active periodic job (enabled, not stopped) is tracked with its next
        launch after now, in its time zone; any other version of it stops the tracking."""
        key = (job["Namespace"], job["ID"])
        periodic = job.get("Periodic")
        if periodic is None or not periodic.get("Enabled", True) or job.get("Stop"):
            self.periodic.pop(key, None)
            return
        try:
            self.periodic[key] = engine.cron_next(periodic, time.time())
        except engine.CronError:
            self.periodic[key] = None  # validated at register: cannot happen

    def _periodic_launches(self):
        """PeriodicDispatch.run/dispatch: each tracked job whose launch time has come is launched, and its
        next launch is the next instant after that one; with ``prohibit_overlap`` a launch is skipped while
        a child still runs (Server.RunningChildren)."""
        now = time.time()
        for key, at in list(self.periodic.items()):
            if at is None or at > now:
                continue
            job = self._current(*key)
            if job is None:
                self.periodic.pop(key, None)
                continue
            try:
                self.periodic[key] = engine.cron_next(job["Periodic"], at)
            except engine.CronError:
                self.periodic[key] = None
            if job["Periodic"].get("ProhibitOverlap") and self._running_children(job):
                continue  # "skipping launch of periodic job because job prohibits overlap"
            self._launch(job, at)

    def _running_children(self, job: dict) -> bool:
        """Server.RunningChildren: a child (ID ``<parent>/periodic-...``, ParentID the parent) with an
        evaluation not terminal, or an allocation not terminal (desired run, client pending or running)."""
        prefix = job["ID"] + "/periodic-"
        for (namespace, child_id), versions in self.jobs.items():
            if namespace != job["Namespace"] or not child_id.startswith(prefix) \
                    or versions[-1].get("ParentID") != job["ID"]:
                continue
            if any(e["JobID"] == child_id and e["Namespace"] == namespace and e["Status"] in ("pending", "blocked")
                   for e in self.evals.values()):
                return True
            if any(a["JobID"] == child_id and a["Namespace"] == namespace and a["DesiredStatus"] == "run"
                   and a["ClientStatus"] in ("pending", "running") for a in self.allocs.values()):
                return True
        return False

    def _launch(self, parent: dict, at: int) -> dict:
        """PeriodicDispatch.createEval/deriveJob + Server.DispatchJob: the child job (a copy of the parent
        named ``<parent>/periodic-<launch Unix seconds>``, ParentID set, no periodic block) registered with
        an evaluation triggered by ``periodic-job``. Returns the register answer."""
        child = copy.deepcopy(spec(parent))
        child_id = f"{parent['ID']}/periodic-{int(at)}"
        child.update(ID=child_id, Name=child_id, ParentID=parent["ID"], Periodic=None, Status="",
                     StatusDescription="", Stop=False)
        return self._register(parent["Namespace"], child, triggered="periodic-job")

    # -- evaluations and the scheduler -------------------------------------------------------------
    def _eval(self, namespace, job_id, job_index, triggered, status="pending", previous="") -> str:
        eval_id = str(uuid.uuid4())
        job = self._current(namespace, job_id) or {}
        self.evals[eval_id] = {  # job_endpoint.go Register: the eval has the job's type and priority
            "ID": eval_id, "Namespace": namespace, "Priority": job.get("Priority", 50),
            "Type": job.get("Type", "service"), "TriggeredBy": triggered,
            "JobID": job_id, "JobModifyIndex": job_index, "NodeID": "", "NodeModifyIndex": 0,
            "DeploymentID": "", "Status": status, "StatusDescription": "", "Wait": 0,
            "NextEval": "", "PreviousEval": previous, "BlockedEval": "", "FailedTGAllocs": None,
            "ClassEligibility": None, "EscapedComputedClass": False, "AnnotatePlan": False,
            "QueuedAllocations": {}, "SnapshotIndex": self.index, "CreateIndex": self.index,
            "ModifyIndex": self.index, "CreateTime": now_ns(), "ModifyTime": now_ns()}
        if status == "pending":
            self._later(self.eval_delay, lambda: self._process(eval_id))
        return eval_id

    def _process(self, eval_id: str):
        """The scheduler (scheduler/generic_sched.go, reconciler.go) for one evaluation."""
        ev = self.evals[eval_id]
        job = self._current(ev["Namespace"], ev["JobID"])
        failed, dep = self._reconcile(job) if job is not None else ({}, None)
        ev.update(Status="complete", ModifyIndex=self.index + 1, ModifyTime=now_ns(),
                  DeploymentID=dep["ID"] if dep else "", FailedTGAllocs=failed or None,
                  QueuedAllocations={g: 0 for g in failed} if failed else {})
        if failed:
            blocked = self._eval(ev["Namespace"], ev["JobID"], ev["JobModifyIndex"], "queued-allocs",
                                 status="blocked", previous=eval_id)
            self.evals[blocked]["FailedTGAllocs"] = None
            self.evals[blocked]["ClassEligibility"] = {}
            ev["BlockedEval"] = blocked

    def _unblock(self):
        """The node changed (restart, freed resources): blocked evaluations are tried again."""
        for ev in list(self.evals.values()):
            if ev["Status"] == "blocked":
                ev.update(Status="complete", StatusDescription="evaluation unblocked", ModifyIndex=self.index + 1)
                self._eval(ev["Namespace"], ev["JobID"], ev["JobModifyIndex"], "queued-allocs", previous=ev["ID"])

    def _live(self, job_id, namespace, group=None) -> list[dict]:
        return [a for a in self.allocs.values()
                if a["JobID"] == job_id and a["Namespace"] == namespace and a["DesiredStatus"] == "run"
                and a["ClientStatus"] in ("pending", "running") and (group is None or a["TaskGroup"] == group)]

    def _reconcile(self, job: dict) -> tuple[dict, dict | None]:
        """Bring the job's allocations to its current version. Returns (FailedTGAllocs, deployment)."""
        namespace, job_id = job["Namespace"], job["ID"]
        if job.get("Stop"):
            for alloc in self._live(job_id, namespace):
                self._stop_alloc(alloc, ALLOC_NOT_NEEDED)
            return {}, None
        dep = self._deployment_for(job)
        failed = {}
        batch = job.get("Type") == "batch"
        for group in job.get("TaskGroups") or []:
            name = group["Name"]
            live = self._live(job_id, namespace, name)
            finished = self._batch_finished(job, name) if batch else []
            same = [a for a in live if _group_spec(a["_job"], name) == group]
            for alloc in same:  # an unchanged group is updated in place
                if alloc["JobVersion"] != job["Version"]:
                    alloc.update(JobVersion=job["Version"], _job=copy.deepcopy(job))
                    if dep and (alloc.get("DeploymentStatus") or {}).get("Healthy"):
                        dep["TaskGroups"][name]["HealthyAllocs"] += 1
                        dep["TaskGroups"][name]["PlacedAllocs"] += 1
                    alloc["DeploymentID"] = dep["ID"] if dep else alloc["DeploymentID"]
            old = [a for a in live if a not in same]
            count = max(0, group.get("Count", 1) - len(finished))
            for extra in same[count:]:
                self._stop_alloc(extra, ALLOC_NOT_NEEDED)
            same = same[:count]
            limit = len(old)
            if dep is not None:
                in_flight = [a for a in same if a["DeploymentID"] == dep["ID"]
                             and not (a.get("DeploymentStatus") or {}).get("Healthy")]
                limit = max(0, (group.get("Update") or {}).get("MaxParallel", 1) - len(in_flight))
            replacements = old[:limit]
            missing = max(0, count - len(same) - len(old))
            wanted = [(a, ALLOC_UPDATING) for a in replacements] + [(None, "")] * missing
            if not wanted:
                continue
            freed = [a for a, _ in wanted if a is not None]
            node, metrics = self._select(job, group, freeing=freed, placements=len(wanted))
            if metrics is not None:
                failed[name] = metrics
                continue
            for previous, why in wanted:
                if previous is not None:
                    self._stop_alloc(previous, why)
                self._place(job, group, dep, previous, node=node)
        self._maybe_complete(dep)
        return failed, dep

    def _batch_finished(self, job: dict, group: str) -> list[dict]:
        """The terminal allocations of a batch job's group that count toward its count (scheduler/reconciler
        filters.go: filterOldTerminalAllocs, shouldFilter with isBatch): a complete one is never replaced,
        a failed one is left to its reschedule policy; those of an older version (or of a purged job of the
        same ID: an older CreateIndex) are ignored, so a changed job runs again."""
        out = []
        for alloc in self.allocs.values():
            if alloc["JobID"] != job["ID"] or alloc["Namespace"] != job["Namespace"] or alloc["TaskGroup"] != group \
                    or alloc["ClientStatus"] not in ("complete", "failed", "lost"):
                continue
            if alloc["JobVersion"] < job["Version"] or alloc["_job"]["CreateIndex"] < job["CreateIndex"]:
                continue  # filterOldTerminalAllocs
            if alloc["NextAllocation"]:
                continue  # rescheduled already
            if alloc["DesiredStatus"] != "run" and alloc["ClientStatus"] != "complete":
                continue  # stopped before it ran successfully: ignored
            out.append(alloc)
        return out

    def _deployment_for(self, job: dict) -> dict | None:
        if not any((g.get("Update") or {}).get("MaxParallel") for g in job.get("TaskGroups") or []):
            return None
        for dep in self.deployments.values():
            if dep["JobID"] == job["ID"] and dep["Namespace"] == job["Namespace"] \
                    and dep["JobVersion"] == job["Version"] and dep["JobModifyIndex"] == job["JobModifyIndex"]:
                return dep if dep["Status"] in ACTIVE else None
        groups = {}
        for group in job.get("TaskGroups") or []:
            update = group.get("Update") or {}
            groups[group["Name"]] = {"AutoRevert": bool(update.get("AutoRevert")), "AutoPromote": False,
                                     "Promoted": False, "PlacedCanaries": None, "DesiredCanaries": 0,
                                     "DesiredTotal": group.get("Count", 1), "PlacedAllocs": 0, "HealthyAllocs": 0,
                                     "UnhealthyAllocs": 0, "ProgressDeadline": update.get("ProgressDeadline", 0),
                                     "RequireProgressBy": None}
        dep = {"ID": str(uuid.uuid4()), "Namespace": job["Namespace"], "JobID": job["ID"],
               "JobVersion": job["Version"], "JobModifyIndex": job["JobModifyIndex"],
               "JobSpecModifyIndex": job["JobModifyIndex"], "JobCreateIndex": job["CreateIndex"],
               "IsMultiregion": False, "TaskGroups": groups, "Status": "running",
               "StatusDescription": "Deployment is running", "CreateIndex": self.index + 1,
               "ModifyIndex": self.index + 1, "_require_by": {}}  # group -> RequireProgressBy in epoch seconds
        self.deployments[dep["ID"]] = dep
        return dep

    def _feasible(self, job: dict, group: dict, freeing: list, placements: int) -> dict | None:
        """None when a node can take the placements, else the AllocationMetric Nomad reports."""
        return self._select(job, group, freeing, placements)[1]

    def _select(self, job: dict, group: dict, freeing: list, placements: int):
        """(the node for the placements, None) or (None, the AllocationMetric): every node of the job's
        datacenters is evaluated (stack.go: job constraints, drivers, group/task constraints, then host
        volumes; then resources), and the feasible ones ranked by rank.go's ScoreFitBinPack."""
        metric = {"NodesEvaluated": 0, "NodesFiltered": 0, "NodesInPool": len(self.nodes), "NodesAvailable": {},
                  "ClassFiltered": None, "ConstraintFiltered": None, "NodesExhausted": 0, "ClassExhausted": None,
                  "DimensionExhausted": None, "QuotaExhausted": None, "ResourcesExhausted": None, "Scores": None,
                  "AllocationTime": 41000, "CoalescedFailures": max(0, placements - 1)}
        datacenters = job.get("Datacenters") or ["*"]
        for dc in datacenters:
            metric["NodesAvailable"][dc] = sum(1 for node in self.nodes if fnmatch.fnmatch(node.datacenter, dc))
        tasks = group.get("Tasks") or []
        memory = sum((t.get("Resources") or {}).get("MemoryMB") or 0 for t in tasks) * placements
        cpu = sum((t.get("Resources") or {}).get("CPU") or 0 for t in tasks) * placements
        best, best_score = None, None
        for node in self.nodes:
            if not any(fnmatch.fnmatch(node.datacenter, dc) for dc in datacenters):
                continue
            metric["NodesEvaluated"] += 1
            filtered = self._filtered(job, group, node)
            if filtered:
                metric["NodesFiltered"] += 1
                counts = metric["ConstraintFiltered"] = metric["ConstraintFiltered"] or {}
                counts[filtered] = counts.get(filtered, 0) + 1
                continue
            used_mem = used_cpu = 0
            for alloc in self.allocs.values():
                if alloc["NodeID"] == node.id and alloc["DesiredStatus"] == "run" \
                        and alloc["ClientStatus"] in ("pending", "running") and alloc not in freeing:
                    used_mem += alloc["_memory"]
                    used_cpu += alloc["_cpu"]
            exhausted = "memory" if used_mem + memory > node.memory_mb else \
                "cpu" if used_cpu + cpu > node.cpu_mhz else ""
            if exhausted:
                metric["NodesExhausted"] += 1
                counts = metric["DimensionExhausted"] = metric["DimensionExhausted"] or {}
                counts[exhausted] = counts.get(exhausted, 0) + 1
                metric["ClassExhausted"] = {}
                continue
            free_cpu = 1 - (used_cpu + cpu) / node.cpu_mhz
            free_mem = 1 - (used_mem + memory) / node.memory_mb
            score = 20.0 - (10 ** free_cpu + 10 ** free_mem)  # ScoreFitBinPack: the fuller node wins
            if best_score is None or score > best_score:
                best, best_score = node, score
        return (best, None) if best is not None else (None, metric)

    def _filtered(self, job: dict, group: dict, node) -> str:
        """Why the node cannot take the group (the ConstraintFiltered key), or ""."""
        attrs = node.attributes()
        tasks = group.get("Tasks") or []
        for constraint in job.get("Constraints") or []:
            if not _constraint_ok(constraint, attrs, node):
                return _constraint_text(constraint)
        if any(t.get("Driver") == "docker" for t in tasks) and not node.has_docker:
            return "missing drivers"
        for constraint in (group.get("Constraints") or []) + [c for t in tasks for c in t.get("Constraints") or []]:
            if not _constraint_ok(constraint, attrs, node):
                return _constraint_text(constraint)
        for request in (group.get("Volumes") or {}).values():
            if request.get("Type") == "host" and request.get("Source") not in node.volumes:
                return "missing compatible host volumes"
        return ""

    def _place(self, job: dict, group: dict, dep: dict | None, previous: dict | None,
               reschedule_events: list | None = None, node=None) -> dict:
        node = node or self.client
        alloc_id = str(uuid.uuid4())
        task = (group.get("Tasks") or [{}])[0]
        taken = {p["Value"] for a in self.allocs.values() if a["ClientStatus"] in ("pending", "running")
                 for p in a["_ports"]}
        ports = []
        for network in group.get("Networks") or []:
            for port in network.get("ReservedPorts") or []:
                ports.append({"Label": port["Label"], "Value": port["Value"], "To": port.get("To") or 0,
                              "HostIP": node.address})
            for port in network.get("DynamicPorts") or []:
                value = _free_dynamic_port(taken)
                taken.add(value)
                ports.append({"Label": port["Label"], "Value": value, "To": port.get("To") or 0,
                              "HostIP": node.address})
        index = self._bump()
        if previous is not None:  # a replacement keeps its index; a new one takes the lowest free (reconcile.go)
            name = previous["Name"]
        else:
            used = {a["Name"] for a in self._live(job["ID"], job["Namespace"], group["Name"])}
            name = next(f"{job['ID']}.{group['Name']}[{i}]" for i in range(len(used) + 1)
                        if f"{job['ID']}.{group['Name']}[{i}]" not in used)
        alloc = {"ID": alloc_id, "EvalID": "", "Name": name,
                 "Namespace": job["Namespace"], "NodeID": node.id, "NodeName": node.name,
                 "JobID": job["ID"], "JobType": job.get("Type", "service"), "JobVersion": job["Version"],
                 "TaskGroup": group["Name"], "DesiredStatus": "run", "DesiredDescription": "",
                 "DesiredTransition": {"Migrate": None, "Reschedule": None, "ForceReschedule": None},
                 "ClientStatus": "pending", "ClientDescription": "No tasks have started",
                 "DeploymentID": dep["ID"] if dep else "", "DeploymentStatus": None, "FollowupEvalID": "",
                 "PreviousAllocation": previous["ID"] if previous else "", "NextAllocation": "",
                 "RescheduleTracker": {"Events": reschedule_events} if reschedule_events else None,
                 "PreemptedAllocations": None, "PreemptedByAllocation": "",
                 "AllocatedResources": {"Shared": {"Ports": [dict(p) for p in ports], "Networks": None}},
                 "TaskStates": {task.get("Name", "task"): {
                     "State": "pending", "Failed": False, "Restarts": 0, "LastRestart": None, "StartedAt": None,
                     "FinishedAt": None, "Events": [task_event("Received"),
                                                    task_event("Task Setup", "Building Task Directory")]}},
                 "CreateIndex": index, "ModifyIndex": index, "CreateTime": now_ns(), "ModifyTime": now_ns(),
                 "_task": task.get("Name", "task"), "_job": copy.deepcopy(job), "_ports": ports,
                 "_memory": (task.get("Resources") or {}).get("MemoryMB") or 0,
                 "_cpu": (task.get("Resources") or {}).get("CPU") or 0, "_failed_at": None}
        self.allocs[alloc_id] = alloc
        if previous is not None:
            previous["NextAllocation"] = alloc_id
        if dep is not None:
            dstate = dep["TaskGroups"][group["Name"]]
            dstate["PlacedAllocs"] += 1
            if dstate["ProgressDeadline"] and group["Name"] not in dep["_require_by"]:  # state_store.go: first placement
                self._require_progress(dep, group["Name"], time.time())
            dep["ModifyIndex"] = index
        node.run(alloc, alloc["_job"])
        return alloc

    def _stop_alloc(self, alloc: dict, why: str):
        if alloc["DesiredStatus"] != "run":
            return
        alloc.update(DesiredStatus="stop", DesiredDescription=why)
        self.alloc_changed(alloc)
        self._node(alloc["NodeID"]).kill(alloc["ID"])

    # -- the client's reports --------------------------------------------------------------------
    def register_services(self, alloc: dict, group: dict):
        """The allocation's services, group and task ones (ID: structs MakeAllocServiceID), into Nomad's
        catalogue or, for a Consul service, through the node's Consul agent into Consul's; a node without
        one registers nothing there (Nomad only places such a group on a node with Consul: admission.py)."""
        node = self._node(alloc["NodeID"])
        owned = [(f"group-{group['Name']}", s) for s in group.get("Services") or []] + \
            [(task["Name"], s) for task in group.get("Tasks") or [] for s in task.get("Services") or []]
        for owner, service in owned:
            port = next((p for p in alloc["_ports"] if p["Label"] == service.get("PortLabel")), None)
            reg_id = f"_nomad-task-{alloc['ID']}-{owner}-{service['Name']}-{service.get('PortLabel')}"
            if service.get("Provider") != "nomad":
                if node.consul is not None:
                    node.consul.register(node.name, {
                        "ID": reg_id, "Service": service["Name"], "Tags": list(service.get("Tags") or []),
                        "Address": node.address, "Port": port["Value"] if port else 0},
                        checks=lambda alloc_id=alloc["ID"], name=service["Name"]:
                            node.consul_check_states(alloc_id, name))
                continue
            index = self._bump()
            self.services[reg_id] = {
                "ID": reg_id, "ServiceName": service["Name"], "Namespace": alloc["Namespace"],
                "NodeID": node.id, "Datacenter": node.datacenter, "JobID": alloc["JobID"],
                "AllocID": alloc["ID"], "Tags": list(service.get("Tags") or []),
                "Address": node.address, "Port": port["Value"] if port else 0,
                "CreateIndex": index, "ModifyIndex": index}

    def deregister_services(self, alloc_id: str):
        gone = [k for k, v in self.services.items() if v["AllocID"] == alloc_id]
        for key in gone:
            del self.services[key]
        for node in self.nodes:
            for service_id in node.consul.service_ids(f"_nomad-task-{alloc_id}-") if node.consul else []:
                node.consul.deregister(service_id)
        if gone:
            self._bump()

    def alloc_health(self, alloc: dict, healthy: bool):
        """The client's health report for a deployment's allocation (the deployment watcher's input)."""
        index = self._bump()
        alloc["DeploymentStatus"] = {"Healthy": healthy, "Timestamp": rfc3339(), "Canary": False,
                                     "ModifyIndex": index}
        dep = self.deployments.get(alloc["DeploymentID"])
        if dep is None or dep["Status"] not in ACTIVE:
            return
        dstate = dep["TaskGroups"][alloc["TaskGroup"]]
        dep["ModifyIndex"] = index
        job = self._job_version(dep)
        if healthy:
            dstate["HealthyAllocs"] += 1
            if dstate["ProgressDeadline"]:
                self._require_progress(dep, alloc["TaskGroup"], time.time())
            current = self._current(dep["Namespace"], dep["JobID"])
            if current is not None and current["Version"] == dep["JobVersion"]:
                self._reconcile(current)  # the next batch of a rolling update
            self._maybe_complete(dep)
            return
        dstate["UnhealthyAllocs"] += 1
        group = _group_spec(job, alloc["TaskGroup"])
        if not dstate["ProgressDeadline"] or not self._reschedule_eligible(alloc, group):
            self._fail(dep, "Failed due to unhealthy allocations", rollback=dstate["AutoRevert"])
        elif alloc["ClientStatus"] == "failed":
            self._schedule_reschedule(alloc)

    def alloc_terminal(self, alloc: dict):
        """An allocation's task ended (failed, or complete after a stop)."""
        self.alloc_changed(alloc)
        if alloc["ClientStatus"] == "failed" and alloc["DesiredStatus"] == "run":
            alloc["_failed_at"] = time.time()
            dep = self.deployments.get(alloc["DeploymentID"])
            in_deployment = dep is not None and dep["Status"] in ACTIVE
            if not in_deployment:
                self._schedule_reschedule(alloc)
        self._unblock()

    # -- rescheduling (structs.go RescheduleEligible, NextRescheduleTime) ------------------------
    def _reschedule_eligible(self, alloc: dict, group: dict) -> bool:
        policy = group.get("ReschedulePolicy") or {}
        attempts = policy.get("Attempts") or 0
        if not (attempts > 0 or policy.get("Unlimited")):
            return False
        if policy.get("Unlimited"):
            return True
        events = (alloc.get("RescheduleTracker") or {}).get("Events") or []
        window = time.time_ns() - (policy.get("Interval") or 0)
        return len([e for e in events if e["RescheduleTime"] > window]) < attempts

    def _awaiting_reschedule(self, alloc: dict) -> bool:
        return alloc.get("_reschedule_at") is not None and alloc["DesiredStatus"] == "run"

    def _schedule_reschedule(self, alloc: dict):
        job = self._current(alloc["Namespace"], alloc["JobID"])
        if job is None or job.get("Stop") or self._awaiting_reschedule(alloc):
            return
        group = _group_spec(alloc["_job"], alloc["TaskGroup"])
        if not self._reschedule_eligible(alloc, group):
            return
        policy = group.get("ReschedulePolicy") or {}
        events = (alloc.get("RescheduleTracker") or {}).get("Events") or []
        delay = policy.get("Delay") or 0
        if events and policy.get("DelayFunction") == "exponential":
            delay = events[-1]["Delay"] * 2
        elif events and policy.get("DelayFunction") == "fibonacci" and len(events) > 1:
            delay = events[-1]["Delay"] + events[-2]["Delay"]
        delay = min(delay, policy.get("MaxDelay") or delay) if policy.get("MaxDelay") else delay
        alloc["_reschedule_at"] = time.time() + delay / SECOND
        event = {"RescheduleTime": time.time_ns() + delay, "PrevAllocID": alloc["ID"],
                 "PrevNodeID": alloc["NodeID"], "Delay": delay}
        self._later(delay / SECOND, lambda: self._reschedule(alloc, events + [event]))

    def _reschedule(self, alloc: dict, events: list):
        if alloc["DesiredStatus"] != "run":
            return
        job = self._current(alloc["Namespace"], alloc["JobID"])
        if job is None or job.get("Stop"):
            return
        group = _group_spec(job, alloc["TaskGroup"])
        node, metrics = self._select(job, group, freeing=[], placements=1)
        if metrics is not None:
            self._later(5, lambda: self._reschedule(alloc, events))
            return
        alloc.update(DesiredStatus="stop", DesiredDescription=ALLOC_RESCHEDULED, _reschedule_at=None)
        dep = self.deployments.get(alloc["DeploymentID"])
        self._place(job, group, dep if dep and dep["Status"] in ACTIVE else None, alloc, reschedule_events=events,
                    node=node)

    # -- the deployment watcher --------------------------------------------------------------------
    def _job_version(self, dep: dict) -> dict:
        for job in self.jobs.get((dep["Namespace"], dep["JobID"]), []):
            if job["Version"] == dep["JobVersion"]:
                return job
        return {}

    def _require_progress(self, dep: dict, group: str, at: float):
        dstate = dep["TaskGroups"][group]
        dep["_require_by"][group] = at + dstate["ProgressDeadline"] / SECOND
        dstate["RequireProgressBy"] = rfc3339(int(dep["_require_by"][group] * SECOND))

    def _maybe_complete(self, dep: dict | None):
        if dep is None or dep["Status"] not in ACTIVE:
            return
        for name, dstate in dep["TaskGroups"].items():
            if dstate["HealthyAllocs"] < dstate["DesiredTotal"]:
                return
            old = [a for a in self._live(dep["JobID"], dep["Namespace"], name) if a["DeploymentID"] != dep["ID"]]
            if old:
                return
        dep.update(Status="successful", StatusDescription="Deployment completed successfully",
                   ModifyIndex=self._bump())
        job = self._job_version(dep)
        job["Stable"] = True
        job["ModifyIndex"] = self.index

    def _progress_deadlines(self):
        now = time.time()
        for dep in list(self.deployments.values()):
            if dep["Status"] != "running":
                continue
            cutoffs = []
            for name, dstate in dep["TaskGroups"].items():
                healthy_now = [a for a in self._live(dep["JobID"], dep["Namespace"], name)
                               if a["DeploymentID"] == dep["ID"] and (a.get("DeploymentStatus") or {}).get("Healthy")]
                if len(healthy_now) >= dstate["DesiredTotal"] or name not in dep["_require_by"]:
                    continue
                cutoffs.append(dep["_require_by"][name])
            if cutoffs and now > min(cutoffs):
                job = self._job_version(dep)
                rollback = False
                for name, dstate in dep["TaskGroups"].items():
                    if dstate["HealthyAllocs"] < dstate["DesiredTotal"]:
                        rollback = rollback or bool((_group_spec(job, name).get("Update") or {}).get("AutoRevert"))
                self._fail(dep, "Failed due to progress deadline", rollback)

    def _fail(self, dep: dict, description: str, rollback: bool):
        """deployment_watcher.go watch(): fail, and with auto_revert register the latest stable version."""
        target = None
        if rollback:
            versions = self.jobs.get((dep["Namespace"], dep["JobID"]), [])
            stable = next((v for v in reversed(versions) if v.get("Stable")), None)
            failing = self._job_version(dep)
            if stable is None:
                description += " - no stable job version to auto revert to"
            elif spec(stable) != spec(failing):
                description += f" - rolling back to job version {stable['Version']}"
                target = stable
            else:
                description += (f" - not rolling back to stable job version {stable['Version']} as current job "
                                "has same specification")
        dep.update(Status="failed", StatusDescription=description, ModifyIndex=self._bump())
        for alloc in self.allocs.values():
            if alloc["DeploymentID"] == dep["ID"] and alloc["ClientStatus"] == "failed" \
                    and alloc["DesiredStatus"] == "run":
                self._schedule_reschedule(alloc)
        if target is not None:
            # the stored job goes in as it is (state_store.go UpdateDeploymentStatus → upsertJobImpl): the
            # copy keeps Stable = true, unlike the Revert endpoint (job_endpoint.go), which clears it
            copied = copy.deepcopy(spec(target))
            copied["_stable"] = True
            self._register(dep["Namespace"], copied, triggered="deployment-watcher")

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

    def _check_node_read(self, token: str | None):
        """node_endpoint.go: the node rule of the token's policy (a grant's "node" key: "read"/"write")."""
        if self.acl_tokens is None:
            return
        grant = self.acl_tokens.get(token or "")
        if not token or grant is None:
            raise HTTPError(403, "Permission denied" if not token else "ACL token not found")
        if grant != "management" and grant.get("node") not in ("read", "write"):
            raise HTTPError(403, "Permission denied")

    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, code, body, content_type=None, index=None):
                if isinstance(body, bytes):
                    data, ctype = body, content_type or "text/plain"
                elif isinstance(body, str):
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
                if path == "/_double/agent/restart" and method in ("POST", "PUT"):
                    seconds = float((body or {}).get("seconds", double.restart_seconds))
                    double._go_down()  # down before the answer: the caller's next request fails
                    self._send(200, {"restarting": seconds})
                    threading.Thread(target=double._come_back, args=(seconds,), daemon=True).start()
                    return
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
                    alloc = double.allocs.get(alloc_id)
                    if alloc is None:
                        raise HTTPError(404, "Unknown allocation \"%s\"" % alloc_id)
                    double._check_acl(token, alloc["Namespace"], "read-logs")
                task = query.get("task")
                if not task:
                    raise HTTPError(400, "must provide task name")
                if task != alloc["_task"]:
                    raise HTTPError(400, f"unknown task name \"{task}\"")
                kind = query.get("type")
                if kind not in ("stdout", "stderr"):
                    raise HTTPError(400, "must provide log type (stdout/stderr)")
                flags = {}
                for name in ("follow", "plain"):
                    value = query.get(name, "false")
                    if value.lower() not in ("1", "t", "true", "0", "f", "false"):
                        raise HTTPError(400, f"failed to parse value of \"{name}\" ({value}) as bool")
                    flags[name] = value.lower() in ("1", "t", "true")
                origin = query.get("origin", "start")
                if origin not in ("start", "end"):
                    raise HTTPError(400, "origin must be start or end")
                offset = int(query.get("offset") or 0)
                data = double._node(alloc["NodeID"]).output(alloc_id, task, kind)
                start = max(0, len(data) - offset) if origin == "end" else min(offset, len(data))
                chunk = data[start:]
                file_name = f"alloc/logs/{task}.{kind}.0"

                def frame(part, at):
                    if flags["plain"]:
                        return part
                    return json.dumps({"File": file_name, "Offset": at,
                                       "Data": base64.b64encode(part).decode()}).encode()

                ctype = "text/plain" if flags["plain"] else "application/json"
                if not flags["follow"]:
                    return self._send(200, frame(chunk, len(data)) if chunk or flags["plain"] else b"", ctype)
                # Go's net/http sends a flushed response of unknown length chunked (HTTP/1.1), so a
                # client reads each frame as it comes, not at the end of the stream
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def send_chunk(body: bytes) -> None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
                    self.wfile.flush()

                sent = len(data)
                try:
                    if chunk:
                        send_chunk(frame(chunk, len(data)))
                    while not double._stopping.is_set():
                        time.sleep(0.1)
                        ended = alloc["ClientStatus"] in ("complete", "failed", "lost")  # before the read: all of it
                        now = double._node(alloc["NodeID"]).output(alloc_id, task, kind)
                        if len(now) > sent:
                            send_chunk(frame(now[sent:], len(now)))
                            sent = len(now)
                        elif ended:
                            break  # the task is gone: the stream ends
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
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

    def route(self, method, path, query, body, token):
        with self.lock:
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
                return 200, {"config": {"Version": {"Version": "1.10.5"}, "Region": self.region}}, None
            if path == "/v1/acl/token/self":
                if self.acl_tokens is None:
                    raise HTTPError(400, "ACL support disabled")
                self._check_acl(token, namespace, "read-job")
                return 200, {"Name": "test", "Type": "client", "Policies": ["mlflow"]}, None
            if path == "/v1/nodes":
                self._check_node_read(token)
                return 200, [node.stub(os=query.get("os") in ("true", "1")) for node in self.nodes], self.index
            parts = path.strip("/").split("/")[1:]
            if parts[:1] == ["node"] and len(parts) == 2:
                self._check_node_read(token)
                node = self._node(parts[1])
                if node is None:
                    raise HTTPError(404, "node not found")
                return 200, node.node(), self.index
            if parts == ["services"]:
                self._check_acl(token, namespace, "read-job")
                by_ns: dict = {}
                for reg in self.services.values():
                    if namespace in ("*", reg["Namespace"]):
                        entry = by_ns.setdefault(reg["Namespace"], {})
                        tags = entry.setdefault(reg["ServiceName"], [])
                        tags.extend(t for t in reg["Tags"] if t not in tags)
                return 200, [{"Namespace": ns, "Services": [{"ServiceName": n, "Tags": t} for n, t in sorted(s.items())]}
                             for ns, s in sorted(by_ns.items())], self.index
            if parts[:1] == ["service"] and len(parts) == 2:
                self._check_acl(token, namespace, "read-job")
                return 200, [copy.deepcopy(r) for r in self.services.values()
                             if r["ServiceName"] == parts[1] and namespace in ("*", r["Namespace"])], self.index
            if parts[:1] == ["var"] and len(parts) >= 2:
                return self._variable(method, "/".join(parts[1:]), namespace, query, body, token)
            if parts == ["vars"]:
                self._check_acl(token, namespace, "variables:read")
                prefix = query.get("prefix", "")
                return 200, [{k: v for k, v in var.items() if k != "Items"} for (ns, p), var in sorted(
                    self.variables.items()) if namespace in ("*", ns) and p.startswith(prefix)], self.index
            if parts[:1] == ["jobs"]:
                return self._jobs(method, parts[1:], namespace, query, body, token)
            if parts[:1] == ["job"] and len(parts) >= 2:
                job_id, rest = _job_path(path)
                return self._job(method, job_id, rest, namespace, query, body, token)
            if parts[:1] == ["deployment"] and len(parts) >= 2:
                if parts[1] == "allocations" and len(parts) == 3:
                    dep = self._dep(parts[2], token, namespace)
                    allocs = [self._public(a) for a in self.allocs.values() if a["DeploymentID"] == dep["ID"]]
                    return 200, allocs, self.index
                return 200, self._public(self._dep(parts[1], token, namespace)), self.index
            if parts == ["deployments"]:
                self._check_acl(token, namespace, "read-job")
                return 200, [self._public(d) for d in self.deployments.values()
                             if namespace == "*" or d["Namespace"] == namespace], self.index
            if parts[:1] == ["evaluation"] and len(parts) == 2:
                self._check_acl(token, namespace, "read-job")  # the request's namespace (eval_endpoint.go),
                ev = self.evals.get(parts[1])
                if ev is None:
                    raise HTTPError(404, "eval not found")
                self._check_acl(token, ev["Namespace"], "read-job")  # then the evaluation's
                return 200, copy.deepcopy(ev), self.index
            if parts[:1] == ["client"] and parts[1:2] == ["allocation"] and len(parts) == 4 and parts[3] == "checks":
                alloc = self.allocs.get(parts[2])
                if alloc is None:
                    raise HTTPError(404, "alloc not found")
                self._check_acl(token, alloc["Namespace"], "read-job")
                return 200, self._node(alloc["NodeID"]).check_results(alloc["ID"]), None
            if parts[:1] == ["allocation"] and len(parts) == 2:
                alloc = self.allocs.get(parts[1])
                if alloc is None:
                    raise HTTPError(404, "alloc not found")
                self._check_acl(token, alloc["Namespace"], "read-job")
                return 200, self._public(alloc), self.index
            raise HTTPError(404, "Invalid URL")

    def _variable(self, method, path, namespace, query, body, token):
        """Nomad Variables (command/agent/variable_endpoint.go, state_store_variables.go): ``cas`` makes
        a write or delete conditional on the ModifyIndex (0: must not exist); a conflict is 409 with the
        variable that is there."""
        key = (namespace, path)
        current = self.variables.get(key)
        cas = query.get("cas")
        if cas is not None:
            try:
                cas = int(cas)
            except ValueError:
                raise HTTPError(400, f"can not parse cas: {cas}") from None
        if method == "GET":
            self._check_acl(token, namespace, "variables:read")
            if current is None:
                raise HTTPError(404, "variable not found")
            return 200, copy.deepcopy(current), self.index
        if method in ("PUT", "POST"):
            self._check_acl(token, namespace, "variables:write")
            items = (body or {}).get("Items") or {}
            if not items:
                raise HTTPError(400, "variable missing required Items object")
            if cas is not None and ((current is None and cas != 0) or
                                    (current is not None and current["ModifyIndex"] != cas)):
                return 409, copy.deepcopy(current) if current else {"Namespace": namespace, "Path": path}, self.index
            index = self._bump()
            now = now_ns()
            self.variables[key] = {"Namespace": namespace, "Path": path, "Items": {k: str(v) for k, v in items.items()},
                                   "CreateIndex": current["CreateIndex"] if current else index, "ModifyIndex": index,
                                   "CreateTime": current["CreateTime"] if current else now, "ModifyTime": now}
            return 200, copy.deepcopy(self.variables[key]), index
        if method == "DELETE":
            self._check_acl(token, namespace, "variables:destroy")
            if cas is not None and ((current is None and cas != 0) or
                                    (current is not None and current["ModifyIndex"] != cas)):
                return 409, copy.deepcopy(current) if current else {"Namespace": namespace, "Path": path}, self.index
            self.variables.pop(key, None)
            return 204, b"", self._bump()
        raise HTTPError(405, "Invalid method")

    def _block(self, index: int, wait: str):
        """A blocking query (index.mdx): hold the answer until the state passes ``index`` or ``wait`` ends."""
        try:
            limit = min(jobspec.duration(wait, "wait") / 1e9, 600.0)
        except jobspec.ParseError:
            raise HTTPError(400, f"Invalid wait time: {wait}") from None
        deadline = time.monotonic() + limit
        while self.index <= index and time.monotonic() < deadline:
            self.changed.wait(0.05)

    def _force(self, method, job_id, namespace, token):
        """POST /v1/job/:id/periodic/force (nomad/periodic_endpoint.go Force, PeriodicDispatch.ForceEval): a
        child launched now, whatever ``prohibit_overlap`` says; {EvalID, EvalCreateIndex, Index}. Errors
        are uncoded (HTTP 500): "job not found", "can't force launch non-periodic job", a stopped or
        disabled one is not tracked."""
        if method not in ("POST", "PUT"):
            raise HTTPError(405, "Invalid method")
        try:  # dispatch-job, submit-job or force-periodic-job
            self._check_acl(token, namespace, "submit-job")
        except HTTPError as exc:
            if exc.text != "Permission denied":
                raise
            for capability in ("dispatch-job", "force-periodic-job"):
                try:
                    self._check_acl(token, namespace, capability)
                    break
                except HTTPError:
                    continue
            else:
                raise
        current = self._current(namespace, job_id)
        if current is None:
            raise HTTPError(500, "job not found")
        if current.get("Periodic") is None:
            raise HTTPError(500, "can't force launch non-periodic job")
        if (namespace, job_id) not in self.periodic:
            raise HTTPError(500, f"force launch for job \"{job_id}\" failed: can't force run non-tracked job "
                                 f"\"{job_id}\" ({namespace})")
        launched = self._launch(current, int(time.time()))
        return 200, {"EvalID": launched["EvalID"], "EvalCreateIndex": launched["EvalCreateIndex"],
                     "Index": launched["EvalCreateIndex"]}, None

    def _summary(self, job: dict) -> dict:
        """The job summary (state_store.go): per task group the count of its allocations by client status
        (those of this job's CreateIndex: a purge deletes the summary), and the children of a periodic job
        by their status (a purged child counts as dead)."""
        namespace, job_id = job["Namespace"], job["ID"]
        summary = {g["Name"]: {k: 0 for k in ("Queued", "Complete", "Failed", "Running", "Starting", "Lost", "Unknown")}
                   for g in job.get("TaskGroups") or []}
        for alloc in self.allocs.values():
            if alloc["JobID"] == job_id and alloc["Namespace"] == namespace \
                    and alloc["_job"]["CreateIndex"] == job["CreateIndex"]:
                counts = summary.setdefault(alloc["TaskGroup"], {k: 0 for k in (
                    "Queued", "Complete", "Failed", "Running", "Starting", "Lost", "Unknown")})
                key = {"pending": "Starting", "running": "Running", "complete": "Complete",
                       "failed": "Failed", "lost": "Lost"}.get(alloc["ClientStatus"], "Unknown")
                counts[key] += 1
        children = {"Pending": 0, "Running": 0, "Dead": self.purged_children.get((namespace, job_id), 0)}
        for (ns, _), versions in self.jobs.items():
            if ns == namespace and versions[-1].get("ParentID") == job_id:
                children[self._job_status(versions[-1]).capitalize()] += 1
        return {"JobID": job_id, "Namespace": namespace, "Summary": summary, "Children": children,
                "CreateIndex": job["CreateIndex"], "ModifyIndex": job["ModifyIndex"]}

    def _public(self, obj):
        return {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}

    def _dep(self, dep_id, token, namespace):
        """deployment_endpoint.go: read-job in the request's namespace, then in the deployment's."""
        self._check_acl(token, namespace, "read-job")
        dep = self.deployments.get(dep_id)
        if dep is None:
            raise HTTPError(404, "resource not found")
        self._check_acl(token, dep["Namespace"], "read-job")
        return dep

    def _known_namespace(self, namespace, job_id):
        if namespace not in self.namespaces:
            raise HTTPError(500, f"job \"{job_id}\" is in nonexistent namespace \"{namespace}\"")

    def _validate(self, job: dict):
        """Job.Validate (nomad/structs), the parts our jobs can get wrong: 500 with a multierror."""
        errors = []
        for group in job.get("TaskGroups") or []:
            update = group.get("Update") or {}
            problems = []
            if group.get("Update") is not None and job.get("Type", "service") not in ("service", "system"):
                problems.append(f"Job type \"{job.get('Type')}\" does not allow update block")
            if update:
                mht, hd, pd = (update.get("MinHealthyTime") or 0, update.get("HealthyDeadline") or 0,
                               update.get("ProgressDeadline") or 0)
                if hd <= 0:
                    problems.append(f"Healthy deadline must be greater than zero: {go_duration(hd)}")
                if mht >= hd:
                    problems.append(f"Minimum healthy time must be less than healthy deadline: "
                                    f"{go_duration(mht)} > {go_duration(hd)}")
                if pd != 0 and hd >= pd:
                    problems.append(f"Healthy deadline must be less than progress deadline: "
                                    f"{go_duration(hd)} > {go_duration(pd)}")
            restart = group.get("RestartPolicy") or {}
            if restart.get("Mode") == "fail" and restart.get("Attempts", 0) * (restart.get("Delay") or 0) \
                    > (restart.get("Interval") or 0) and restart.get("Attempts"):
                problems.append(f"Nomad can't restart the TaskGroup {restart['Attempts']} times in an interval of "
                                f"{go_duration(restart['Interval'])} with a delay of {go_duration(restart['Delay'])}")
            if problems:
                inner = "".join(f"\n\t* {p}" for p in problems)
                errors.append(f"Task group {group['Name']} validation failed: {len(problems)} error"
                              f"{'s' if len(problems) != 1 else ''} occurred:{inner}\n\n")
        periodic = job.get("Periodic")
        if periodic is not None and periodic.get("Enabled", True):  # structs.go Job.Validate, PeriodicConfig.Validate
            if job.get("Type") not in ("batch", "sysbatch"):
                errors.append('Periodic can only be used with "batch" or "sysbatch" scheduler')
            if periodic.get("Spec") and periodic.get("Specs"):
                errors.append("Only cron or crons may be used")
            try:
                engine.cron_next(periodic, time.time())
            except engine.CronError as exc:
                errors.append(str(exc))
        if errors:
            if all(e.endswith("\n\n") for e in errors):  # task group errors only (as before)
                raise HTTPError(500, f"{len(errors)} error occurred:\n" + "".join(f"\t* {e}" for e in errors))
            points = "\n\t".join(f"* {e}" for e in errors)  # go-multierror's ListFormatFunc
            raise HTTPError(500, f"{len(errors)} error{'s' if len(errors) != 1 else ''} occurred:\n\t{points}\n\n")

    def _jobs(self, method, rest, namespace, query, body, token):
        if rest == ["parse"] and method in ("POST", "PUT"):
            try:  # job_endpoint.go JobsParseRequest: parse-job or submit-job
                self._check_acl(token, namespace, "parse-job")
            except HTTPError as exc:
                if exc.text != "Permission denied":
                    raise
                self._check_acl(token, namespace, "submit-job")
            if not isinstance(body, dict):
                raise HTTPError(400, "Job must be specified")
            try:  # job_endpoint.go JobsParseRequest: jobspec2 (the Go engine), then api.Job.Canonicalize
                job = engine.parse(body.get("JobHCL") or "", body.get("Variables") or "",
                                   bool(body.get("Canonicalize")))
            except jobspec.ParseError as exc:
                raise HTTPError(400, str(exc)) from None
            return 200, job, None
        if rest == [] and method == "GET":
            self._check_acl(token, namespace, "list-jobs")
            out = []
            for (ns, job_id), versions in self.jobs.items():
                if namespace in ("*", ns) and job_id.startswith(query.get("prefix", "")):
                    job = self._public_job(versions[-1])  # structs.go Job.Stub
                    stub = {k: job.get(k) for k in ("ID", "ParentID", "Name", "Namespace", "Datacenters", "NodePool",
                                                    "Type", "Priority", "Stop", "Status", "StatusDescription",
                                                    "Version", "CreateIndex", "ModifyIndex", "JobModifyIndex",
                                                    "SubmitTime")}
                    stub.update(Periodic=job.get("Periodic") is not None,
                                ParameterizedJob=job.get("ParameterizedJob") is not None,
                                JobSummary=self._summary(versions[-1]))
                    out.append(stub)
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
        self._validate(jobspec.canonical(job))
        current = self._current(namespace, job["ID"])
        if current is not None:  # job_endpoint.go validateJobUpdate: no change of type, nor to/from periodic
            new_type = job.get("Type") or "service"
            if current["Type"] != new_type:
                raise HTTPError(500, f"cannot update job from type \"{current['Type']}\" to \"{new_type}\"")
            if current.get("Periodic") is not None and job.get("Periodic") is None:
                raise HTTPError(500, "cannot update periodic job to being non-periodic")
            if current.get("Periodic") is None and job.get("Periodic") is not None:
                raise HTTPError(500, "cannot update non-periodic job to being periodic")
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
        return 200, self._register(namespace, copy.deepcopy(job)), None

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
            new = implied_constraints(jobspec.canonical(job))  # job_endpoint.go Plan: admission controllers
            new["Namespace"] = ns
            self._validate(new)
            diff = job_diff(current, new)
            changed = diff["Type"] != "None"
            failed = {}
            if changed and not new.get("Stop"):
                for group in new.get("TaskGroups") or []:
                    old = [a for a in self._live(job_id, ns, group["Name"])]
                    metrics = self._feasible(new, group, freeing=old, placements=group.get("Count", 1))
                    if metrics is not None:
                        failed[group["Name"]] = metrics
            desired = {g["Name"]: {"DestructiveUpdate": int(changed and current is not None),
                                   "InPlaceUpdate": 0, "Stop": 0, "Migrate": 0,
                                   "Place": int(changed and current is None), "Ignore": int(not changed),
                                   "Canary": 0, "Preemptions": 0}
                       for g in new.get("TaskGroups") or []}
            launch = "0001-01-01T00:00:00Z"  # job_endpoint.go Plan: the next launch of an enabled periodic job
            if (new.get("Periodic") or {}).get("Enabled"):
                launch = engine.cron_next_time(new["Periodic"], time.time()) or launch
            return 200, {"Index": self.index, "NextPeriodicLaunch": launch, "Warnings": "",
                         "Diff": diff if (body or {}).get("Diff") else None, "CreatedEvals": None,
                         "JobModifyIndex": current["JobModifyIndex"] if current else 0,
                         "FailedTGAllocs": failed or None, "Annotations": {"DesiredTGUpdates": desired,
                                                                           "PreemptedAllocs": None}}, None
        if rest == ["periodic", "force"]:
            return self._force(method, job_id, namespace, token)
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
                raise HTTPError(500, "can't revert to current version")
            target = [v for v in self.jobs[(namespace, job_id)] if v["Version"] == wanted]
            if not target:
                raise HTTPError(500, f"job \"{job_id}\" in namespace \"{namespace}\" at version {wanted} not found")
            return 200, self._register(namespace, copy.deepcopy(spec(target[0])), triggered="job-register"), None
        if current is None:
            raise HTTPError(404, "job versions not found" if rest == ["versions"] else "job not found")
        if rest == ["stable"] and method in ("POST", "PUT"):
            wanted = int((body or {}).get("JobVersion") or 0)
            target = [v for v in self.jobs[(namespace, job_id)] if v["Version"] == wanted]
            if not target:
                raise HTTPError(500, f"job \"{job_id}\" in namespace \"{namespace}\" at version {wanted} not found")
            target[0]["Stable"] = bool((body or {}).get("Stable"))
            target[0]["ModifyIndex"] = self._bump()
            return 200, {"JobModifyIndex": target[0]["JobModifyIndex"], "Index": self.index}, None
        if rest == [] and method == "GET":
            return 200, self._public_job(current), self.index
        if rest == [] and method == "DELETE":
            if query.get("purge") in ("true", "True", "1"):
                del self.jobs[(namespace, job_id)]
                self.periodic.pop((namespace, job_id), None)
                if current.get("ParentID"):  # state_store.go DeleteJob: the parent's summary counts it dead
                    key = (namespace, current["ParentID"])
                    self.purged_children[key] = self.purged_children.get(key, 0) + 1
                for alloc in self.allocs.values():
                    if alloc["JobID"] == job_id and alloc["Namespace"] == namespace:
                        self._stop_alloc(alloc, ALLOC_NOT_NEEDED)
                return 200, {"EvalID": "", "EvalCreateIndex": self._bump(), "JobModifyIndex": self.index}, None
            stopped = copy.deepcopy(spec(current))
            stopped["Stop"] = True
            stopped["_stable"] = bool(current.get("Stable"))  # fsm.go handleJobDeregister keeps the flag
            return 200, self._register(namespace, stopped), None
        if rest == ["versions"]:
            versions = [self._public_job(v) for v in reversed(self.jobs[(namespace, job_id)])]
            diffs = None
            if query.get("diffs") in ("true", "True", "1"):
                diffs = [job_diff(versions[i + 1], versions[i]) for i in range(len(versions) - 1)]
            return 200, {"Versions": versions, "Diffs": diffs, "Index": self.index, "KnownLeader": True,
                         "LastContact": 0}, self.index
        if rest == ["allocations"]:  # state_store.go AllocsByJob: those of this job's CreateIndex unless all=true
            every = query.get("all", "false").lower() in ("1", "t", "true")
            return 200, [self._public(a) for a in sorted(self.allocs.values(), key=lambda a: a["CreateIndex"])
                         if a["JobID"] == job_id and a["Namespace"] == namespace
                         and (every or a["_job"]["CreateIndex"] == current["CreateIndex"])], self.index
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
            return 200, self._summary(current), self.index
        raise HTTPError(404, "Invalid URL")


JOB_SUFFIXES = ("evaluate", "allocations", "evaluations", "periodic/force", "plan", "summary", "dispatch",
                "dispatch/payload", "versions", "revert", "deployments", "deployment", "stable", "scale", "services",
                "submission", "actions", "action")


def _job_path(path: str) -> tuple[str, list[str]]:
    """(job ID, the endpoint's parts) of a /v1/job/ path as command/agent/job_endpoint.go JobSpecificRequest
    splits it: by the endpoint's suffix, so a child job's ID (``backup/periodic-1700000000``) keeps its slash."""
    rest = path[len("/v1/job/"):].rstrip("/") if path.startswith("/v1/job/") else path
    for suffix in JOB_SUFFIXES:
        if rest.endswith("/" + suffix):
            return rest[:-len(suffix) - 1], suffix.split("/")
    return rest, []


def _constraint_text(constraint: dict) -> str:
    """nomad/structs Constraint.String(): the ConstraintFiltered key of a node it filtered."""
    return f"{constraint.get('LTarget', '')} {constraint.get('Operand') or '='} {constraint.get('RTarget', '')}"


def _constraint_ok(constraint: dict, attrs: dict, node) -> bool:
    """scheduler/feasible/feasible.go: resolveTarget, then checkConstraint (the operands our jobs use)."""
    import re

    def resolve(target: str):
        """(value, found): a literal, or ${attr.x} / ${meta.x} / ${node.*} of the node."""
        if not target.startswith("${"):
            return target, True
        fields = {"${node.unique.id}": node.id, "${node.datacenter}": node.datacenter,
                  "${node.unique.name}": node.name, "${node.class}": "", "${node.pool}": "default"}
        if target in fields:
            return fields[target], True
        if target.startswith("${attr."):
            key = target[len("${attr."):].removesuffix("}")
            return attrs.get(key), key in attrs
        if target.startswith("${meta."):
            return None, False
        return "", False

    (left, l_ok), (right, r_ok) = resolve(constraint.get("LTarget", "")), resolve(constraint.get("RTarget", ""))
    operand = constraint.get("Operand") or "="

    def items(value):
        return {v.strip() for v in str(value).split(",")}

    if operand in ("distinct_hosts", "distinct_property"):
        return True
    if operand in ("=", "==", "is"):
        return l_ok and r_ok and left == right
    if operand in ("!=", "not"):
        return left != right
    if operand == "regexp":
        return l_ok and r_ok and re.search(right, left) is not None
    if operand in ("set_contains", "set_contains_all"):
        return l_ok and r_ok and items(right) <= items(left)
    if operand == "set_contains_any":
        return l_ok and r_ok and bool(items(right) & items(left))
    if operand == "is_set":
        return l_ok
    if operand == "is_not_set":
        return not l_ok
    if operand in ("semver", "version"):
        return l_ok and r_ok and _version_ok(str(left), str(right))
    return False


def _version_ok(version: str, constraints: str) -> bool:
    """checkVersionMatch (feasible.go) with hashicorp/go-version: ``1.17.1`` against ``>= 1.8.0`` (every
    comma-separated constraint must hold; a pre-release sorts before its release)."""
    import re

    def key(text):
        match = re.fullmatch(r"v?(\d+(?:\.\d+)*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?", text.strip())
        if not match:
            return None
        numbers = [int(n) for n in match.group(1).split(".")]
        return tuple(numbers + [0] * (3 - len(numbers))), 0 if match.group(2) else 1

    have = key(version)
    if have is None:
        return False
    for part in constraints.split(","):
        match = re.fullmatch(r"\s*(=|!=|>=|<=|>|<|~>)?\s*(\S+)\s*", part)
        want = key(match.group(2)) if match else None
        if want is None:
            return False
        op = match.group(1) or "="
        if op == "~>":  # pessimistic: at least this, below the next release of the last-but-one segment
            digits = len(match.group(2).split("-")[0].split("."))
            upper = list(want[0][:max(1, digits - 1)])
            upper[-1] += 1
            if not (have >= want and have[0][:len(upper)] < tuple(upper)):
                return False
        elif not {"=": have == want, "!=": have != want, ">=": have >= want, "<=": have <= want,
                  ">": have > want, "<": have < want}[op]:
            return False
    return True
