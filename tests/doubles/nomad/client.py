"""The Nomad double's client node: fingerprint, allocation runners, checks, health, service registrations.

Modelled on hashicorp/nomad (facts in ../shared/reference/nomad/BEHAVIOUR.md; file names below):
- The node reads its client config (client.hcl, the file configure-host writes) when the agent starts
  and on a restart: ``host_volume`` stanzas become the node's host volumes. Its attributes carry
  ``cpu.arch`` (client/fingerprint/arch.go: runtime.GOARCH) and ``kernel.arch`` (host.go: uname's
  machine), this machine's or the ones a test gives (a Raspberry Pi: arm64/aarch64), and
  ``driver.docker`` when an engine is there. They are in ``/v1/node/<id>``; the ``/v1/nodes`` stub has
  none (``?os=true`` adds only os.name: structs.go Node.Stub).
- An allocation runner per allocation (client/allocrunner): a replacement waits until the previous
  allocation on this node has stopped (allocwatcher localPrevAlloc.Wait, the upstream allocs hook);
  the group services are registered before the task starts and deregistered before it is killed
  (group_service_hook.go); the task runner
  (taskrunner/task_runner.go) pulls and starts the container, waits for it, and on exit asks the restart
  tracker (taskrunner/restarts/restarts.go: ``attempts`` restarts per ``interval``, each after ``delay``
  plus up to 25% jitter; service jobs restart even after exit 0; mode fail then "Not Restarting").
- Checks of services with ``provider = "nomad"`` (checks_hook.go): the first after interval/2, then
  every interval, an HTTP GET of the allocation's address and mapped port; 2xx passes. On a node with
  a Consul agent (``consul``: tests/doubles/consul.py) the checks of Consul services run the same way,
  as that agent's (a new one ``critical``, 2xx ``passing``, 429 ``warning``, else ``critical``); they
  are in Consul's health answers, not in Nomad's ``/v1/client/allocation/<id>/checks``, and deployment
  health waits for them as it does for Nomad's. Such a node carries the ``consul.*`` attributes of
  Nomad's consul fingerprinter (client/fingerprint/consul.go); every node has
  ``nomad.service_discovery = true`` (client/fingerprint/nomad.go, the client's default).
- ``template`` blocks (templates.py, rendered by the Go engine: text/template with consul-template's
  ``nomadVar``, go-envparse for env templates): Nomad Variables rendered into the task's environment
  before each start (the first start waits for a missing Variable), a template that fails or an env file
  go-envparse refuses kills the task, failed, and a changed rendering restarts the task
  (``change_mode = "restart"``, after up to ``splay``).
- Deployment health (allochealth/tracker.go): with ``health_check = "checks"`` an allocation is healthy
  once its task has run and every check has passed for ``min_healthy_time`` (a restart starts the
  wait again); unhealthy when the task fails or dies, or at ``healthy_deadline``.
"""
from __future__ import annotations

import copy
import platform
import random
import threading
import time
import urllib.error
import urllib.request
import uuid

from . import templates as template_hook
from .docker_driver import DriverError, ExitResult

SECOND = 1_000_000_000
CHECK_LOOKUP = 0.5  # allochealth.checkLookupInterval


def go_duration(ns: float) -> str:
    """Go's time.Duration.String(): 10s, 3m0s, 1h0m0s, 1.5s."""
    ns = int(ns)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < SECOND:
        return f"{sign}{ns / 1e6:g}ms"
    hours, rest = divmod(ns, 3600 * SECOND)
    minutes, rest = divmod(rest, 60 * SECOND)
    seconds = f"{rest / SECOND:.9f}".rstrip("0").rstrip(".")
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"


def now_ns() -> int:
    return time.time_ns()


def rfc3339(ns: int | None = None) -> str:
    ns = now_ns() if ns is None else ns
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns / 1e9)) + f".{ns % SECOND:09d}Z"


def _epoch(stamp: str) -> float:
    """rfc3339() back to epoch seconds."""
    import calendar

    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float(f"0.{fraction or 0}")


def task_event(kind, message="", **extra) -> dict:
    """A TaskEvent with its DisplayMessage as nomad/structs PopulateEventDisplayMessage makes it."""
    event = {"Type": kind, "Time": now_ns(), "FailsTask": False, "RestartReason": "", "SetupError": "",
             "DriverError": "", "ExitCode": 0, "Signal": 0, "Message": message, "KillTimeout": 0, "KillError": "",
             "KillReason": "", "StartDelay": 0, "DownloadError": "", "ValidationError": "", "DiskLimit": 0,
             "FailedSibling": "", "VaultError": "", "TaskSignalReason": "", "TaskSignal": "", "DriverMessage": "",
             "Details": {}, "DisplayMessage": ""}
    event.update(extra)
    event["DisplayMessage"] = event["DisplayMessage"] or _display(event)  # PopulateEventDisplayMessage keeps a set one
    return event


def _display(e: dict) -> str:
    kind = e["Type"]
    if kind == "Started":
        return "Task started by client"
    if kind == "Received":
        return "Task received by client"
    if kind == "Driver Failure":
        return e["DriverError"] or "Failed to start task"
    if kind == "Killing":
        return e["KillReason"] or (f"Sent interrupt. Waiting {go_duration(e['KillTimeout'])} before force killing"
                                   if e["KillTimeout"] else "Sent interrupt")
    if kind == "Killed":
        return e["KillError"] or "Task successfully killed"
    if kind == "Terminated":
        parts = [f"Exit Code: {e['ExitCode']}"]
        if e["Signal"]:
            parts.append(f"Signal: {e['Signal']}")
        if e["Message"]:
            parts.append(f"Exit Message: \"{e['Message']}\"")
        return ", ".join(parts)
    if kind == "Restarting":
        when = f"Task restarting in {go_duration(e['StartDelay'])}"
        reason = e["RestartReason"]
        return f"{reason} - {when}" if reason and reason != "Restart within policy" else when
    if kind == "Not Restarting":
        return e["RestartReason"] or "Task exceeded restart policy"
    if kind == "Driver":
        return e["DriverMessage"]
    if kind == "Restart Signaled":
        return e["RestartReason"] or "Task signaled to restart"
    return e["Message"]


# --- the restart tracker (client/allocrunner/taskrunner/restarts/restarts.go) ----------------------
class RestartTracker:
    def __init__(self, policy: dict, job_type: str = "service"):
        self.attempts = int(policy.get("Attempts") or 0)
        self.interval = (policy.get("Interval") or 0) / SECOND
        self.delay = (policy.get("Delay") or 0) / SECOND
        self.mode = policy.get("Mode") or "fail"
        self.on_success = job_type != "batch"
        self.count, self.start = 0, time.monotonic()

    def decide(self, exit_result: ExitResult | None = None, start_error: DriverError | None = None):
        """("restart", delay seconds, reason) | ("fail", 0, reason) | ("done", 0, reason)."""
        successful = exit_result is not None and exit_result.exit_code == 0 and not exit_result.signal
        if self.attempts == 0:
            if not self.on_success and successful:
                return "done", 0.0, "Policy allows no restarts"
            return "fail", 0.0, "Policy allows no restarts"
        now = time.monotonic()
        if now > self.start + self.interval:
            self.count, self.start = 0, now
        self.count += 1
        if start_error is not None and not start_error.recoverable:
            return "fail", 0.0, "Error was unrecoverable"
        if successful and not self.on_success:
            return "done", 0.0, "Restart unnecessary as task terminated successfully"
        if self.count > self.attempts:
            if self.mode == "fail":
                return "fail", 0.0, (f"Exceeded allowed attempts {self.attempts} in interval "
                                     f"{go_duration(self.interval * SECOND)} and mode is \"fail\"")
            return "restart", max(0.0, self.start + self.interval - now), "Exceeded allowed attempts, applying a delay"
        delay = self.delay or 1e-9
        return "restart", delay + random.random() * delay * 0.25, "Restart within policy"


# --- the node --------------------------------------------------------------------------------------
def host_volumes(client_hcl_text: str) -> dict:
    """``host_volume`` stanzas of a client config: {name: {"Name", "Path", "ReadOnly"}}."""
    import hcl2

    doc = hcl2.loads(client_hcl_text)
    out = {}
    for client in doc.get("client") or []:
        for entry in client.get("host_volume") or []:
            for name, body in entry.items():
                if name.startswith("__"):
                    continue
                name = _unquote(name)
                read_only = body.get("read_only", False)
                out[name] = {"Name": name, "Path": _unquote(body.get("path", "")),
                             "ReadOnly": read_only is True or _unquote(str(read_only)) == "true"}
    return out


def _unquote(value):
    """python-hcl2 keeps a string literal's quotes."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386"}
KERNEL_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "arm": "armv7l", "386": "i686"}  # a node of that cpu.arch


class NomadClient:
    """One client node of the double. ``driver`` None: a node without the docker driver."""

    def __init__(self, server, driver=None, client_config=None, datacenter="DC0", name="client-1",
                 memory_mb=8192, cpu_mhz=8000, address="127.0.0.1", cpu_arch=None, consul=None):
        """``consul``: the ConsulDouble whose agent runs on this node (None: no Consul agent)."""
        self.server, self.driver, self.consul = server, driver, consul
        machine = platform.machine()
        self.cpu_arch = cpu_arch or GO_ARCH.get(machine, machine)
        self.kernel_arch = machine if self.cpu_arch == GO_ARCH.get(machine, machine) else \
            KERNEL_ARCH.get(self.cpu_arch, self.cpu_arch)
        self.client_config = client_config
        self.id = str(uuid.uuid4())
        self.name, self.datacenter, self.address = name, datacenter, address
        self.memory_mb, self.cpu_mhz = memory_mb, cpu_mhz
        self.volumes: dict = {}
        self.config_error = ""
        self.runners: dict[str, AllocRunner] = {}
        self.reload()
        if consul is not None:
            consul.join(self.name, self.address)

    def reload(self) -> None:
        """What the agent reads at start: the host volumes of client.hcl."""
        self.volumes, self.config_error = {}, ""
        if self.client_config is None:
            return
        try:
            text = open(self.client_config).read()
        except OSError as exc:
            self.config_error = str(exc)
            return
        try:
            self.volumes = host_volumes(text)
        except Exception as exc:  # noqa: BLE001 - a client.hcl Nomad would refuse to start with
            self.config_error = f"error loading {self.client_config}: {exc}"

    @property
    def has_docker(self) -> bool:
        return self.driver is not None

    def attributes(self) -> dict:
        attrs = {"cpu.arch": self.cpu_arch, "kernel.arch": self.kernel_arch, "kernel.name": "linux",
                 "os.name": "debian", "nomad.version": "1.10.5", "unique.hostname": self.name,
                 "unique.network.ip-address": self.address}
        if self.has_docker:
            attrs.update({"driver.docker": "1", "driver.docker.version": "20.10.24"})
        attrs["nomad.service_discovery"] = "true"
        if self.consul is not None:
            attrs.update(self.consul.fingerprint(self.name))
        return attrs

    def node(self) -> dict:
        return {"ID": self.id, "Name": self.name, "Datacenter": self.datacenter, "NodePool": "default",
                "Status": "ready", "SchedulingEligibility": "eligible", "Drain": False,
                "Attributes": self.attributes(), "HostVolumes": copy.deepcopy(self.volumes),
                "Drivers": {"docker": {"Detected": self.has_docker, "Healthy": self.has_docker,
                                       "HealthDescription": "Healthy" if self.has_docker else "undetected"}},
                "NodeResources": {"Cpu": {"CpuShares": self.cpu_mhz}, "Memory": {"MemoryMB": self.memory_mb}},
                "HTTPAddr": f"{self.address}:4646"}

    def stub(self, os: bool = False) -> dict:
        """structs.go Node.Stub: no Attributes, except os.name with ``?os=true``."""
        node = self.node()
        out = {"ID": self.id, "Name": self.name, "Datacenter": self.datacenter, "NodePool": "default",
               "Status": "ready", "SchedulingEligibility": "eligible", "Drain": False, "Address": self.address,
               "Version": node["Attributes"]["nomad.version"], "Drivers": node["Drivers"],
               "HostVolumes": node["HostVolumes"]}
        if os:
            out["Attributes"] = {"os.name": node["Attributes"]["os.name"]}
        return out

    # -- allocations ----------------------------------------------------------------------------
    def run(self, alloc: dict, job: dict) -> None:
        runner = AllocRunner(self, alloc, job)
        self.runners[alloc["ID"]] = runner
        runner.start()

    def kill(self, alloc_id: str) -> None:
        runner = self.runners.get(alloc_id)
        if runner:
            runner.killed.set()

    def output(self, alloc_id: str, task: str, kind: str) -> bytes:
        runner = self.runners.get(alloc_id)
        return runner.output(kind) if runner and runner.task == task else b""

    def check_results(self, alloc_id: str) -> dict:
        """Nomad's own checks of the allocation (``/v1/client/allocation/<id>/checks``): not Consul's."""
        runner = self.runners.get(alloc_id)
        return {key: copy.deepcopy(result) for key, result in list(runner.check_results.items())
                if key not in runner.consul_checks} if runner else {}

    def consul_check_states(self, alloc_id: str, service: str) -> list[tuple[str, str, str]]:
        """(check name, Consul status, output) of a Consul service's checks, as the node's agent has them."""
        runner = self.runners.get(alloc_id)
        out = []
        for key, result in list(runner.check_results.items()) if runner else []:
            if key in runner.consul_checks and result["Service"] == service:
                status = "passing" if result["Status"] == "success" else \
                    "warning" if result.get("StatusCode") == 429 else "critical"
                out.append((result["Check"], status, result.get("Output", "")))
        return out

    def shutdown(self) -> None:
        for runner in list(self.runners.values()):
            runner.killed.set()
        for runner in list(self.runners.values()):
            runner.join(timeout=30)
        if self.driver is not None:
            self.driver.cleanup()


class AllocRunner(threading.Thread):
    """Runs one allocation: services, the task (with restarts), its checks and its deployment health."""

    def __init__(self, client: NomadClient, alloc: dict, job: dict):
        super().__init__(daemon=True, name=f"alloc-{alloc['ID'][:8]}")
        self.client, self.server, self.alloc, self.job = client, client.server, alloc, job
        self.group = next(g for g in job["TaskGroups"] if g["Name"] == alloc["TaskGroup"])
        self.spec = self.group["Tasks"][0]
        self.task = self.spec["Name"]
        self.killed = threading.Event()
        self.check_results: dict = {}
        self.consul_checks: set = set()  # the keys of check_results that the node's Consul agent runs
        self._logs = {"stdout": b"", "stderr": b""}
        self._running = None
        self._io = threading.Lock()
        self._template_restart = False
        self._template_failed = False

    # -- state, under the server's lock ---------------------------------------------------------
    @property
    def state(self) -> dict:
        return self.alloc["TaskStates"][self.task]

    def _event(self, kind, message="", **extra):
        with self.server.lock:
            self.state["Events"].append(task_event(kind, message, **extra))
            if len(self.state["Events"]) > 10:  # Nomad keeps the last 10 (structs.MaxTaskEvents... per task)
                del self.state["Events"][:-10]
            self.server.alloc_changed(self.alloc)

    def _set_state(self, state: str, failed: bool | None = None):
        with self.server.lock:
            task = self.state
            if state == "running" and task["State"] != "running":
                task["StartedAt"] = rfc3339()
            if state == "dead" and not task.get("FinishedAt"):
                task["FinishedAt"] = rfc3339()
            task["State"] = state
            if failed is not None:
                task["Failed"] = failed
            status, description = {
                "pending": ("pending", "No tasks have started"), "running": ("running", "Tasks are running"),
                "dead": ("failed", "Failed tasks") if task.get("Failed") else ("complete", "All tasks have completed"),
            }[state]
            self.alloc.update(ClientStatus=status, ClientDescription=description)
            self.server.alloc_changed(self.alloc)

    # -- the run ---------------------------------------------------------------------------------
    def run(self):
        try:
            if not self._previous_terminated():
                return
            with self.server.lock:
                self.server.register_services(self.alloc, self.group)
            if self._uses_checks():
                threading.Thread(target=self._checks, daemon=True, name=f"checks-{self.alloc['ID'][:8]}").start()
            if self.alloc.get("DeploymentID") and self.group.get("Update"):
                threading.Thread(target=self._health, daemon=True, name=f"health-{self.alloc['ID'][:8]}").start()
            self._task()
        finally:
            with self.server.lock:
                self.server.deregister_services(self.alloc["ID"])
                self.server.alloc_terminal(self.alloc)

    def _previous_terminated(self) -> bool:
        """Wait for the previous allocation on this node to be terminal; False when killed meanwhile."""
        previous = self.client.runners.get(self.alloc.get("PreviousAllocation") or "")
        while previous is not None and previous.is_alive():
            if self.killed.wait(0.05):
                self._set_state("dead")
                return False
        return True

    # -- templates (templates.py) ----------------------------------------------------------------
    def _readable_variables(self) -> dict:
        """{path: items} of the Variables in the allocation's namespace that the task's identity may read: the
        identity's job is a periodic or dispatched child's parent (structs.go Job.GetIDforWorkloadIdentity)."""
        alloc = self.alloc
        job_id = (alloc.get("_job") or {}).get("ParentID") or alloc["JobID"]
        with self.server.lock:
            return {path: dict(variable["Items"]) for (namespace, path), variable in self.server.variables.items()
                    if namespace == alloc["Namespace"]
                    and template_hook.allowed(path, job_id, alloc["TaskGroup"], self.task)}

    def _render(self, variables: dict | None = None) -> tuple[list, dict]:
        """(what each template renders, the environment the env ones give); Missing while a Variable is,
        Failed when Nomad would kill the task (a template error, an env file go-envparse refuses)."""
        variables = self._readable_variables() if variables is None else variables
        texts, env = [], {}
        for spec in self.spec.get("Templates") or []:
            dest = template_hook.client_path(self.alloc["ID"], self.task, spec.get("DestPath") or "")
            text, template_env = template_hook.render(spec, variables, self.alloc["Namespace"], dest)
            texts.append(text)
            env.update(template_env or {})
        return texts, env

    def _templates_rendered(self):
        """Wait until every template renders (Nomad blocks the task meanwhile); None once killed."""
        said = ""
        while True:
            try:
                return self._render()
            except template_hook.Missing as exc:
                if str(exc) != said:
                    said = str(exc)
                    self._event("Template", said)
            if self.killed.wait(0.5):
                return None

    def _watch_templates(self, running, rendered: list):
        """change_mode restart: a new rendering restarts the task (after up to splay), once."""
        specs = self.spec.get("Templates") or []
        seen = None  # the Variables last rendered from: the same again renders the same (no engine call)
        while not self.killed.wait(0.5):
            with self._io:
                if self._running is not running:
                    return
            variables = self._readable_variables()
            if variables == seen:
                continue
            seen = variables
            try:
                texts, _ = self._render(variables)
            except template_hook.Missing:
                continue
            except template_hook.Failed as exc:  # template.go handleTemplateRerenders: the task is killed, failed
                self._template_failed = True
                self._event("Killing", FailsTask=True, DisplayMessage=str(exc))
                self.client.driver.stop(running, (self.spec.get("KillTimeout") or 5 * SECOND) / SECOND)
                return
            changed = [spec for spec, old, new in zip(specs, rendered, texts) if old != new]
            if not any(spec.get("ChangeMode", "restart") == "restart" for spec in changed):
                rendered = texts  # noop: nothing happens, the new text is used at the next start
                continue
            splay = max((spec.get("Splay") or 0) for spec in changed) / SECOND
            if self.killed.wait(random.random() * splay):
                return
            self._template_restart = True
            self._event("Restart Signaled", RestartReason="Template with change_mode restart re-rendered")
            self.client.driver.stop(running, (self.spec.get("KillTimeout") or 5 * SECOND) / SECOND)
            return

    def _start(self, driver, image, env: dict):
        """Pull and start the task's container; any failure is the driver's (a Driver Failure event)."""
        try:
            driver.pull(image)
            if self.killed.is_set():
                raise DriverError("killed while the image was pulled", recoverable=False)
            return driver.start(self.alloc["ID"], self.task, image, env, self._ports(),
                                self._binds(), (self.spec.get("Resources") or {}).get("MemoryMB") or 300,
                                self.spec.get("User") or "", self.spec.get("Config") or {}), None
        except DriverError as exc:
            return None, exc
        except Exception as exc:  # noqa: BLE001 - the engine went away, a timeout: still the driver's
            return None, DriverError(f"failed to start task: {exc}")

    def _wait(self, driver, running):
        """The container's exit, or None once the allocation is killed."""
        while not self.killed.wait(0.2):
            try:
                result = driver.wait(running)
            except Exception:  # noqa: BLE001 - an engine hiccup: look again
                continue
            if result is not None:
                return result
        return None

    def _task(self):
        tracker = RestartTracker(self.spec.get("RestartPolicy") or self.group.get("RestartPolicy") or {},
                                 self.job.get("Type", "service"))
        driver = self.client.driver
        image = (self.spec.get("Config") or {}).get("image", "")
        while not self.killed.is_set():
            try:
                rendered = self._templates_rendered()
            except template_hook.Failed as exc:
                # template.go: Lifecycle.Kill with a Killing event that fails the task ("Template failed: ...",
                # "Template failed to read environment variables: ..."); it never started: dead, failed
                self._event("Killing", FailsTask=True, DisplayMessage=str(exc))
                self._set_state("dead", failed=True)
                return
            if rendered is None:
                break
            texts, template_env = rendered
            self._template_restart = False
            if driver is None:
                running, start_error = None, DriverError("missing drivers", recoverable=False)
            else:
                self._event("Driver", DriverMessage="Downloading image")
                running, start_error = self._start(driver, image, {**(self.spec.get("Env") or {}), **template_env})
            if start_error is not None:
                self._event("Driver Failure", DriverError=start_error.message)
                decision, delay, reason = tracker.decide(start_error=start_error)
            else:
                with self._io:
                    self._running = running
                self._set_state("running")
                self._event("Started")
                if self.spec.get("Templates"):
                    threading.Thread(target=self._watch_templates, args=(running, texts), daemon=True,
                                     name=f"templates-{self.alloc['ID'][:8]}").start()
                result = self._wait(driver, running)
                if result is None:  # killed: the services go first (PreKill), then the task
                    with self.server.lock:
                        self.server.deregister_services(self.alloc["ID"])
                    delay = (self.group.get("ShutdownDelay") or 0) / SECOND  # group_service_hook.go PreKill
                    if delay:
                        self._event("Waiting for shutdown delay",
                                    f"Waiting for shutdown_delay of {go_duration(delay * SECOND)} before killing the task.")
                        time.sleep(delay)
                    timeout = (self.spec.get("KillTimeout") or 5 * SECOND)
                    self._event("Killing", KillTimeout=timeout)
                    driver.stop(running, timeout / SECOND)
                    self._capture(running)
                    self._event("Killed")
                    self._set_state("dead")
                    return
                self._capture(running)
                self._event("Terminated", ExitCode=result.exit_code, Signal=result.signal,
                            Details={"oom_killed": "true"} if result.oom_killed else {},
                            Message="OOM Killed" if result.oom_killed else "")
                if self._template_failed:  # killed by the template hook: no restart
                    self._set_state("dead", failed=True)
                    return
                if self._template_restart:  # restarts.go SetRestartTriggered: no attempt counted, no delay
                    decision, delay, reason = "restart", 0.0, "Restart signaled"
                else:
                    decision, delay, reason = tracker.decide(exit_result=result)
            if decision == "restart":
                with self.server.lock:
                    self.state["Restarts"] += 1
                    self.state["LastRestart"] = rfc3339()
                self._event("Restarting", StartDelay=int(delay * SECOND), RestartReason=reason)
                self._set_state("pending")
                if self.killed.wait(delay):
                    self._event("Killed")
                    self._set_state("dead")
                    return
                continue
            if decision == "fail":
                self._event("Not Restarting", RestartReason=reason, FailsTask=True)
                self._set_state("dead", failed=True)
            else:
                self._set_state("dead")
            return
        self._set_state("dead")

    def _capture(self, running):
        """Keep the container's output (Nomad's log files), then remove it (the driver's gc)."""
        out, err = self.client.driver.output(running)
        with self._io:
            self._logs["stdout"] += out
            self._logs["stderr"] += err
            self._running = None
        self.client.driver.remove(running.container_id)

    def output(self, kind: str) -> bytes:
        with self._io:
            kept, running = self._logs[kind], self._running
        if running is None:
            return kept
        out, err = self.client.driver.output(running)
        return kept + (out if kind == "stdout" else err)

    def _ports(self) -> list[tuple[int, int]]:
        return [(p["Value"], p["To"] or p["Value"]) for p in self.alloc["_ports"]]

    def _binds(self) -> list[tuple[str, str, bool]]:
        volumes = self.group.get("Volumes") or {}
        binds = []
        for mount in self.spec.get("VolumeMounts") or []:
            request = volumes.get(mount.get("Volume")) or {}
            host = self.client.volumes.get(request.get("Source"))
            if host is None:
                continue  # the scheduler placed it, so the node had it then
            read_only = bool(mount.get("ReadOnly") or request.get("ReadOnly") or host["ReadOnly"])
            binds.append((host["Path"], mount["Destination"], read_only))
        return binds

    # -- checks (checks_hook.go) -----------------------------------------------------------------
    def _checks_of(self) -> list[tuple[dict, dict]]:
        """Nomad's checks, and Consul's when the node has a Consul agent to run them."""
        out = []
        for service in (self.group.get("Services") or []) + (self.spec.get("Services") or []):
            consul = (service.get("Provider") or "consul") == "consul"
            if not consul or self.client.consul is not None:
                out.extend((service, check) for check in service.get("Checks") or [])
                if consul:
                    self.consul_checks.update(f"{service['Name']}/{c['Name']}" for c in service.get("Checks") or [])
        return out

    def _uses_checks(self) -> bool:
        return bool(self._checks_of())

    def _checks(self):
        checks = self._checks_of()
        due = {}
        start = time.monotonic()
        for service, check in checks:
            key = f"{service['Name']}/{check['Name']}"
            due[key] = start + check["Interval"] / SECOND / 2
            self.check_results[key] = {"ID": key, "Check": check["Name"], "Service": service["Name"],
                                       "Group": self.alloc["Name"], "Mode": "healthiness", "Status": "pending",
                                       "Output": "nomad: waiting to run", "Timestamp": int(time.time())}
        while not self.killed.is_set() and self.alloc["DesiredStatus"] == "run":
            now = time.monotonic()
            for service, check in checks:
                key = f"{service['Name']}/{check['Name']}"
                if now >= due[key]:
                    self.check_results[key] = self._run_check(service, check, key)
                    due[key] = time.monotonic() + check["Interval"] / SECOND
            self.killed.wait(0.1)

    def _run_check(self, service: dict, check: dict, key: str) -> dict:
        port = self._port_of(check.get("PortLabel") or service.get("PortLabel"))
        url = f"http://{self.client.address}:{port}{check.get('Path') or '/'}"
        result = {"ID": key, "Check": check["Name"], "Service": service["Name"], "Group": self.alloc["Name"],
                  "Mode": "healthiness", "Timestamp": int(time.time()), "StatusCode": 0}
        try:
            with urllib.request.urlopen(url, timeout=max(0.5, (check.get("Timeout") or SECOND) / SECOND)) as resp:
                code = resp.status
                body = resp.read(512).decode(errors="replace")
        except urllib.error.HTTPError as exc:
            code, body = exc.code, exc.read(512).decode(errors="replace")
        except Exception as exc:  # noqa: BLE001 - connection refused, timeout: a failing check
            result.update(Status="failure", Output=str(getattr(exc, "reason", exc)))
            return result
        result.update(Status="success" if 200 <= code < 300 else "failure", StatusCode=code,
                      Output="nomad: http ok" if 200 <= code < 300 else body)
        return result

    def _port_of(self, label: str) -> int:
        for port in self.alloc["_ports"]:
            if port["Label"] == label:
                return port["Value"]
        return 0

    # -- deployment health (allochealth/tracker.go) ----------------------------------------------
    def _health(self):
        update = self.group["Update"]
        min_healthy = (update.get("MinHealthyTime") or 0) / SECOND
        deadline_ns = update.get("HealthyDeadline") or 300 * SECOND
        deadline = time.monotonic() + deadline_ns / SECOND
        deadline_at = time.time() + deadline_ns / SECOND
        use_checks = update.get("HealthCheck", "checks") == "checks" and self._uses_checks()
        all_started, task_timer, tasks_healthy = None, None, False
        primed, check_timer, next_lookup = False, None, time.monotonic() + CHECK_LOOKUP
        while not self.killed.is_set():
            now = time.monotonic()
            with self.server.lock:
                if self.alloc["DesiredStatus"] != "run":
                    return  # stopped by the server: no health is set
                state = copy.deepcopy(self.state)
            if state.get("Failed") or (state["State"] == "dead") or self.alloc["ClientStatus"] == "failed":
                return self._report(False, "Unhealthy because of failed task" if state.get("Failed")
                                    else "Unhealthy because of dead task")
            latest = state.get("StartedAt") if state["State"] != "pending" else None
            if latest != all_started:
                tasks_healthy, task_timer = False, None
                primed, check_timer = False, None
                all_started = latest
                if latest:
                    task_timer = now + min_healthy
            if task_timer is not None and now >= task_timer:
                task_timer, tasks_healthy = None, True
                if not use_checks:
                    return self._report(True)
            if use_checks and now >= next_lookup:
                next_lookup = now + CHECK_LOOKUP
                passing = bool(self.check_results) and all(
                    r["Status"] == "success" for r in list(self.check_results.values()))
                if not passing:
                    primed, check_timer = False, None
                elif not primed:
                    primed, check_timer = True, now + min_healthy
            if check_timer is not None and now >= check_timer:
                check_timer = None
                if tasks_healthy:
                    return self._report(True)
                primed = False
            if now >= deadline:
                return self._report(False, self._deadline_message(state, min_healthy, deadline_ns, deadline_at))
            self.killed.wait(0.1)

    def _deadline_message(self, state: dict, min_healthy: float, deadline_ns: int, deadline_at: float) -> str:
        """tracker.go taskHealthState.event: why the task made the allocation unhealthy, or "" (a task
        that ran long enough: a failing group check of the Nomad provider gives no task event)."""
        deadline = go_duration(deadline_ns)
        if state["State"] == "pending":
            return f"Task not running by healthy_deadline of {deadline}"
        if state.get("StartedAt") and _epoch(state["StartedAt"]) + min_healthy > deadline_at:
            return (f"Task not running for min_healthy_time of {go_duration(min_healthy * SECOND)} by "
                    f"healthy_deadline of {deadline}")
        return ""

    def _report(self, healthy: bool, message: str = ""):
        with self.server.lock:
            if self.alloc["DesiredStatus"] != "run":
                return
            if not healthy and message:
                self.state["Events"].append(task_event("Alloc Unhealthy", message))
            self.server.alloc_health(self.alloc, healthy)
