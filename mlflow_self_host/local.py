"""Local mode: ``inv up`` / ``inv down``, a MLflow on this machine with its data in ./data.

With a Docker engine: the image (built if needed) runs with host networking on ``local_port``, with
``./data/backend`` and ``./data/artifacts`` mounted. Without one: the same entrypoint runs natively
from a virtual environment with the same pinned MLflow, created once under ~/.cache, in the
background with a pid file. Both use the same folders, so data moves freely between the two.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import console
from .errors import ExitCode, UserError
from .image import engine as engine_mod

SERVER_UID = 1000  # the image's user
HEALTH_TIMEOUT = 180  # seconds: the first start migrates the database
PID_FILE = "mlflow-server.pid"
LOG_FILE = "mlflow-server.log"
VENV_MARKER = ".msh-complete"


@dataclass(frozen=True)
class Folders:
    data: Path
    backend: Path
    artifacts: Path

    @classmethod
    def of(cls, settings) -> "Folders":
        data = settings.path(settings.local_data_dir)
        return cls(data, data / "backend", data / "artifacts")

    @property
    def pid_file(self) -> Path:
        return self.data / PID_FILE

    @property
    def log_file(self) -> Path:
        return self.data / LOG_FILE


def url(settings) -> str:
    return f"http://127.0.0.1:{settings.local_port}/"


def server_env(settings, backend_uri: str, artifacts: str, host: str) -> dict:
    """The entrypoint's environment (docker/entrypoint.sh documents it), the same for both modes."""
    return {
        "MLFLOW_BACKEND_STORE_URI": backend_uri,
        "MLFLOW_ARTIFACTS_DESTINATION": artifacts,
        "MLFLOW_HOST": host,
        "MLFLOW_PORT": str(settings.local_port),
        "MLFLOW_WORKERS": str(settings.workers),
        "MLFLOW_DOMAIN": settings.domain,
    }


# --- up / down -----------------------------------------------------------------------------------
def up(settings, version, require_docker: bool = False, dry_run: bool = False) -> str:
    """Start the local MLflow (container, or natively without an engine); returns its URL."""
    folders = Folders.of(settings)
    engine = engine_mod.client(required=require_docker)
    native_pid = _native_pid(folders)
    if dry_run:
        from .plan import show

        show(plan_up(settings, version, engine, folders, native_pid), dry_run=True)
        return url(settings)
    if native_pid:
        if engine is not None and require_docker:
            raise UserError(f"a native MLflow (pid {native_pid}) already serves {folders.data}",
                            hint="stop it with `inv down`, then `inv up --docker`")
        console.done(f"MLflow is already running natively (pid {native_pid}): no change")
        console.result(url(settings))
        return url(settings)
    if engine is not None:
        return _up_container(engine, settings, version, folders)
    console.warn(f"no Docker engine at {engine_mod.describe()} ({engine_mod.last_failure}): "
                 "running MLflow natively instead (`inv up --docker` requires the engine)")
    return _up_native(settings, folders)


def plan_up(settings, version, engine, folders: Folders, native_pid: int | None):
    """What `inv up` would do, read from the engine, ./data and the cache (nothing is changed)."""
    from .plan import Plan

    plan = Plan(f"local MLflow on {url(settings)}")
    if native_pid:
        return plan  # already running natively
    if engine is not None:
        ref = settings.image_ref(version.text)
        existing = _container(engine, settings)
        if existing is not None and existing.status == "running" and _same(existing, engine, ref, settings):
            return plan
        if not engine_mod.has_image(engine, ref):
            plan.add("build", ref, f"from {settings.base_image}")
        if existing is not None:
            plan.add("replace", f"container {existing.name}", f"it is {existing.status}")
        plan.add("run", f"container {settings.local_container}",
                 f"{ref}, host network, port {settings.local_port}, memory {settings.memory} MB")
    else:
        venv = venv_dir(settings)
        if not (venv / VENV_MARKER).exists():
            plan.add("create", str(venv), f"virtual environment with {mlflow_pin(settings)}")
        plan.add("start", "native MLflow server", f"port {settings.local_port}, pid in {folders.pid_file}")
    for folder in (folders.backend, folders.artifacts):
        if not folder.is_dir():
            plan.add("create", str(folder), f"owned by uid {SERVER_UID}" if engine is not None else "")
    return plan


def down(settings, dry_run: bool = False) -> None:
    """Stop the local MLflow (container and/or native server); ./data is kept."""
    folders = Folders.of(settings)
    stopped = []
    engine = engine_mod.client(required=False)
    if dry_run:
        from .plan import Plan, show

        plan = Plan("local MLflow")
        container = _container(engine, settings) if engine is not None else None
        if container is not None:
            plan.add("stop", f"container {container.name}", "and remove it; ./data is kept")
        pid = _native_pid(folders)
        if pid:
            plan.add("stop", f"native server (pid {pid})", "./data is kept")
        show(plan, dry_run=True)
        return
    if engine is not None:
        container = _container(engine, settings)
        if container is not None:
            console.step(f"stopping container {container.name}")
            if container.status == "running":
                container.stop(timeout=20)
            container.remove(force=True, v=False)
            stopped.append(f"container {settings.local_container}")
    pid = _native_pid(folders)
    if pid:
        console.step(f"stopping the native MLflow (pid {pid})")
        _stop_native(pid)
        stopped.append(f"native server (pid {pid})")
    folders.pid_file.unlink(missing_ok=True)
    if not stopped:
        console.done("local MLflow is not running: no change")
        return
    console.done(f"stopped {' and '.join(stopped)}; data kept in {folders.data}")


# --- container -----------------------------------------------------------------------------------
def _container(engine, settings):
    import docker

    try:
        return engine.containers.get(settings.local_container)
    except docker.errors.NotFound:
        return None


def _up_container(engine, settings, version, folders: Folders) -> str:
    from .image import build as image_build

    ref = settings.image_ref(version.text)
    existing = _container(engine, settings)
    if existing is not None and existing.status == "running" and _same(existing, engine, ref, settings):
        console.done(f"MLflow is already running in container {existing.name}: no change")
        console.result(url(settings))
        return url(settings)
    image_build.ensure_built(settings, version, here=True)
    if existing is not None:
        console.step(f"replacing container {existing.name} ({existing.status})")
        existing.remove(force=True, v=False)
    _check_port_free(settings)
    user = _prepare_folders(folders)
    env = server_env(settings, "sqlite:////mnt/backend_store/mlflow.db", "/mnt/artifacts", "127.0.0.1")
    if user:
        env["HOME"] = "/tmp"
    console.step(f"starting container {settings.local_container} from {ref}")
    container = engine.containers.run(
        ref, name=settings.local_container, detach=True, network_mode="host", environment=env,
        user=user, mem_limit=f"{settings.memory}m", restart_policy={"Name": "unless-stopped"},
        labels={"mlflow-self-host.local": str(folders.data)},
        volumes={str(folders.backend): {"bind": "/mnt/backend_store", "mode": "rw"},
                 str(folders.artifacts): {"bind": "/mnt/artifacts", "mode": "rw"}},
    )

    def failed() -> str | None:
        container.reload()
        if container.status in ("exited", "dead"):
            return container.logs(tail=20).decode(errors="replace")
        return None

    _wait_healthy(settings, failed, f"`docker logs {settings.local_container}`")
    return _ready(settings, folders, f"container {settings.local_container}")


def _same(container, engine, ref: str, settings) -> bool:
    """The running container serves this image on the wanted port."""
    try:
        wanted = engine.images.get(ref).id
    except Exception:  # noqa: BLE001 - not built: not the same
        return False
    env = dict(item.split("=", 1) for item in container.attrs["Config"].get("Env") or [] if "=" in item)
    return container.image.id == wanted and env.get("MLFLOW_PORT") == str(settings.local_port)


def _prepare_folders(folders: Folders) -> str | None:
    """Create ./data's folders so the server's uid can write; returns the container user if not 1000."""
    for folder in (folders.backend, folders.artifacts):
        folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for folder in (folders.backend, folders.artifacts):
            for path in [folder, *folder.rglob("*")]:
                if path.lstat().st_uid != SERVER_UID:
                    os.lchown(path, SERVER_UID, SERVER_UID)
        return None
    if os.getuid() == SERVER_UID:
        return None
    # Not root and not uid 1000: run the server as this user, so it owns what it writes.
    return f"{os.getuid()}:{os.getgid()}"


# --- native --------------------------------------------------------------------------------------
def cache_dir(settings) -> Path:
    return Path(os.path.expanduser(settings.cache_dir))


def requirements_file(settings) -> Path:
    """The image's lock (`inv deps`): the native server installs exactly what the image does."""
    from .image import deps

    path = deps.lock_path(settings)
    if not path.exists():
        raise UserError(f"{path} is missing", hint="run `inv deps` to make it (or run from the project folder)")
    return path


def mlflow_pin(settings) -> str:
    """``mlflow==X`` as the lock pins it."""
    from .image import deps

    version = deps.pins(requirements_file(settings).read_text()).get("mlflow")
    if not version:
        raise UserError("docker/requirements.lock pins no mlflow", hint="run `inv deps`")
    return f"mlflow=={version}"


def venv_dir(settings) -> Path:
    recipe = requirements_file(settings).read_bytes() + sys.version.encode()
    return cache_dir(settings) / f"mlflow-server-{hashlib.sha256(recipe).hexdigest()[:12]}"


def ensure_venv(settings) -> Path:
    """The native server's virtual environment, created once (same requirements as the image)."""
    venv = venv_dir(settings)
    if (venv / VENV_MARKER).exists():
        return venv
    import shutil

    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    console.step(f"creating {venv} with {mlflow_pin(settings)} (once; about a minute)")
    _run([sys.executable, "-m", "venv", str(venv)],
         "cannot create a virtual environment", "install python3-venv (`apt-get install python3-venv`)")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    hint = "check that pip can reach the package index (proxy, PIP_INDEX_URL)"
    _run(pip + ["--require-hashes", "--no-deps", "-r", str(requirements_file(settings))],
         f"installing {mlflow_pin(settings)} and its locked requirements failed", hint)
    (venv / VENV_MARKER).write_text(mlflow_pin(settings) + "\n")
    return venv


def _run(command: list[str], what: str, hint: str) -> None:
    with console.err.status(f"[dim]{' '.join(command[-3:])}[/]"):
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [l for l in (result.stderr + result.stdout).splitlines() if l.strip()]
        raise UserError(f"{what}: {lines[-1] if lines else 'exit ' + str(result.returncode)}", hint=hint)


def _native_pid(folders: Folders) -> int | None:
    """The pid in ./data/mlflow-server.pid if that process is still our MLflow."""
    try:
        pid = int(folders.pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid if b"mlflow" in cmdline else None


def _up_native(settings, folders: Folders) -> str:
    venv = ensure_venv(settings)
    _check_port_free(settings)
    for folder in (folders.backend, folders.artifacts):
        folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **server_env(settings, f"sqlite:///{folders.backend / 'mlflow.db'}",
                                      str(folders.artifacts), "127.0.0.1")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env.pop("PYTHONPATH", None)
    entrypoint = settings.root / "docker" / "entrypoint.sh"
    console.step(f"starting MLflow natively from {venv}")
    with open(folders.log_file, "ab") as log:
        proc = subprocess.Popen(["/bin/sh", str(entrypoint)], env=env, cwd=str(folders.data), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    folders.pid_file.write_text(f"{proc.pid}\n")

    def failed() -> str | None:
        if proc.poll() is None:
            return None
        folders.pid_file.unlink(missing_ok=True)
        return "\n".join(folders.log_file.read_text(errors="replace").splitlines()[-20:])

    try:
        _wait_healthy(settings, failed, str(folders.log_file))
    except UserError:
        if proc.poll() is None:
            _stop_native(proc.pid)
            folders.pid_file.unlink(missing_ok=True)
        raise
    return _ready(settings, folders, f"native server (pid {proc.pid}, log {folders.log_file})")


def _stop_native(pid: int, timeout: float = 20) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


# --- shared --------------------------------------------------------------------------------------
def _check_port_free(settings) -> None:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        if sock.connect_ex(("127.0.0.1", int(settings.local_port))) == 0:
            raise UserError(f"port {settings.local_port} is already in use by another program",
                            hint="stop it, or choose another port with `inv up --port N` (or MSH_LOCAL_PORT)")


def healthy(settings) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url(settings)}health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _wait_healthy(settings, failed, logs: str) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT
    with console.err.status(f"waiting for {url(settings)}health"):
        while time.monotonic() < deadline:
            if healthy(settings):
                return
            output = failed()
            if output is not None:
                last = [l for l in output.splitlines() if l.strip()]
                raise UserError(f"MLflow exited before it was healthy: {last[-1] if last else 'no output'}",
                                hint=f"see {logs}", code=ExitCode.LOCAL_UNHEALTHY)
            time.sleep(0.5)
    raise UserError(f"MLflow was not healthy after {HEALTH_TIMEOUT}s at {url(settings)}health",
                    hint=f"see {logs}", code=ExitCode.LOCAL_UNHEALTHY)


def _ready(settings, folders: Folders, what: str) -> str:
    console.done(f"MLflow is up ({what}); data in {folders.data}")
    console.result(url(settings))
    return url(settings)
