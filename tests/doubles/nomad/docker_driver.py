"""The Nomad double's docker driver: runs a task on the test Docker engine as Nomad's docker driver does.

From hashicorp/nomad drivers/docker (driver.go, coordinator.go, handle.go) and
../shared/reference/nomad/BEHAVIOUR.md:
- the image is pulled from its registry (``Failed to pull `IMAGE`: ...`` on error; "Error: image ... not
  found" is unrecoverable, anything else recoverable). The double always pulls, because the test engine
  is also the laptop's engine: a pull proves the registry has the tag, as a real client needs;
- the container is named ``<task>-<alloc id>``; the group's ports are published on the node's address
  (``to`` inside the container, a dynamic host port outside); each ``volume_mount`` is a bind mount of the
  client's host volume path, owner and mode unchanged; ``resources.memory`` is the hard limit (swap
  equal to it); the task's ``user`` replaces the image's USER; ``env`` is the task's environment;
- the task's ``entrypoint`` replaces the image's, ``command`` and ``args`` make the container's Cmd
  (driver.go createContainerConfig);
- a kill is ``docker stop`` with the task's kill_timeout (the image's stop signal, then SIGKILL);
- the pull sets no platform (coordinator.go ImagePull without one): a tag holding one image of another
  architecture is pulled as it is, and its container, started on a node without emulation, exits 1
  at once with ``exec <path>: exec format error`` on stderr, where <path> is the entrypoint looked up
  in the container's PATH (runc's exec.LookPath). Measured on docker.io 20.10.24 / runc 1.1.5 with an
  arm64 image on amd64: the pull succeeds (even with a platform asked for), the start succeeds, exit
  code 1. The test engine runs every image natively, so a node whose ``arch`` differs from the image's
  plays that part: the container is created, not started, and its run ends so;
- the container is removed when its run ends (the driver's ``gc.container``); its output was captured
  first, as Nomad's log collector keeps it in the allocation's log files.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass

LABEL = "mlflow-self-host.test"  # every container the double starts carries it (cleanup)
_NOT_FOUND = re.compile(r"Error: image .+ not found")


class DriverError(Exception):
    def __init__(self, message: str, recoverable: bool = True):
        super().__init__(message)
        self.message, self.recoverable = message, recoverable


@dataclass
class ExitResult:
    exit_code: int
    oom_killed: bool = False
    signal: int = 0


@dataclass
class Running:
    container_id: str
    name: str
    exited: ExitResult | None = None  # a run the node's kernel refused (another architecture)
    stderr: bytes = b""


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Docker's, when the image has none


class DockerDriver:
    def __init__(self, client, network: str | None, session: str, address: str = "127.0.0.1",
                 arch: str | None = None):
        """``client``: a docker.DockerClient; ``network``: a user-defined bridge network to attach
        containers to (None: the engine's default); ``session``: a label value to find what we made;
        ``arch``: the Go architecture of the node's kernel (None: the engine's own)."""
        self.client, self.network, self.session, self.address = client, network, session, address
        self.arch = arch
        self.closed = threading.Event()  # set by cleanup(): no container starts after it

    def pull(self, image: str) -> None:
        import docker

        repo, tag = _split(image)
        try:
            for event in self.client.api.pull(repo, tag=tag, stream=True, decode=True):
                if event.get("error"):
                    raise DriverError(_pull_error(image, event["error"]),
                                      recoverable=not _NOT_FOUND.search(event["error"]))
        except docker.errors.APIError as exc:
            text = f"API error ({exc.status_code}): {exc.explanation or exc}"
            raise DriverError(_pull_error(image, text), recoverable=not _NOT_FOUND.search(text)) from None
        except docker.errors.DockerException as exc:
            raise DriverError(_pull_error(image, str(exc))) from None

    def start(self, alloc_id: str, task: str, image: str, env: dict, ports: list[tuple[int, int]],
              binds: list[tuple[str, str, bool]], memory_mb: int, user: str = "", config: dict | None = None) -> Running:
        """``ports``: (host port, container port); ``binds``: (host path, destination, read only); ``config``:
        the task's docker config, of which ``entrypoint`` (replaces the image's), ``command`` and ``args``
        (the container's Cmd: command then args, or args alone) are used as Nomad's driver uses them."""
        import docker

        name = f"{task.replace('/', '_')}-{alloc_id}"
        if self.closed.is_set():
            raise DriverError("the client is shutting down", recoverable=False)
        self.remove(name)  # a restart reuses the name (the previous run's container is gone in Nomad)
        memory = int(memory_mb) * 1024 * 1024
        config = config or {}
        command = ([config["command"]] if config.get("command") else []) + list(config.get("args") or [])
        try:
            container = self.client.containers.create(
                image, command=command or None, entrypoint=config.get("entrypoint") or None,
                name=name, environment=env or {}, user=user or None,
                ports={f"{to}/tcp": (self.address, host) for host, to in ports},
                volumes={host: {"bind": dest, "mode": "ro" if ro else "rw"} for host, dest, ro in binds},
                mem_limit=memory, memswap_limit=memory, network=self.network,
                labels={LABEL: self.session, f"{LABEL}.alloc": alloc_id}, detach=True)
            refused = self._exec_format_error(container, image)
            if refused is not None:
                return Running(container.id, name, ExitResult(1), refused)
            container.start()
        except docker.errors.APIError as exc:
            self.remove(name)
            raise DriverError(f"failed to create container: API error ({exc.status_code}): "
                              f"{exc.explanation or exc}") from None
        return Running(container.id, name)

    def _exec_format_error(self, container, image: str) -> bytes | None:
        """What the node's kernel says when the image is of another architecture, or None."""
        attrs = self.client.images.get(image).attrs
        if self.arch is None or attrs.get("Architecture") in (None, "", self.arch):
            return None
        config = container.attrs.get("Config") or {}
        args = (config.get("Entrypoint") or []) + (config.get("Cmd") or [])
        program = args[0] if args else ""
        if program and "/" not in program:
            env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
            for folder in (env.get("PATH") or DEFAULT_PATH).split(":"):
                if self._exists(container, f"{folder.rstrip('/')}/{program}"):
                    program = f"{folder.rstrip('/')}/{program}"
                    break
        return f"exec {program}: exec format error\n".encode()

    def _exists(self, container, path: str) -> bool:
        import docker

        try:
            container.get_archive(path)
            return True
        except docker.errors.NotFound:
            return False

    def wait(self, running: Running) -> ExitResult | None:
        """The exit of the container, or None while it runs."""
        import docker

        if running.exited is not None:
            return running.exited
        try:
            state = self.client.api.inspect_container(running.container_id)["State"]
        except docker.errors.NotFound:
            return ExitResult(137, signal=9)
        if state.get("Running") or state.get("Status") in ("created", "restarting"):
            return None
        return ExitResult(int(state.get("ExitCode", 0)), bool(state.get("OOMKilled")))

    def stop(self, running: Running, kill_timeout: float) -> ExitResult:
        import docker

        if running.exited is not None:
            return running.exited
        try:
            self.client.api.stop(running.container_id, timeout=max(0, int(kill_timeout)))
        except docker.errors.NotFound:
            pass
        return self.wait(running) or ExitResult(137, signal=9)

    def output(self, running: Running) -> tuple[bytes, bytes]:
        """(stdout, stderr) of the container so far."""
        import docker

        if running.exited is not None:
            return b"", running.stderr
        try:
            out = self.client.api.logs(running.container_id, stdout=True, stderr=False)
            err = self.client.api.logs(running.container_id, stdout=False, stderr=True)
        except docker.errors.NotFound:
            return b"", b""
        return out or b"", err or b""

    def remove(self, name_or_id: str) -> None:
        import docker

        try:
            self.client.api.remove_container(name_or_id, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            pass  # being removed already

    def cleanup(self) -> None:
        """Remove every container this double started (also after a failing test); start no more."""
        self.closed.set()
        for container in self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.session}"}):
            self.remove(container.id)


def _split(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, "latest"
    return name, tag


def _pull_error(image: str, text: str) -> str:
    return f"Failed to pull `{image}`: {text}"
