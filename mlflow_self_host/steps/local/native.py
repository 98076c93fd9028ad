"""The native server (no Docker engine): the entrypoint from a virtual environment with the image's
locked requirements, created once under ``cache_dir``, in the background with a pid file in ./data."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from ...core import console
from ...core.errors import UserError
from .server import Folders, ready, server_env, wait_healthy

VENV_MARKER = ".msh-complete"


def cache_dir(settings) -> Path:
    return Path(os.path.expanduser(settings.cache_dir))


def requirements_file(settings) -> Path:
    """The image's lock (`inv deps`): the native server installs exactly what the image does."""
    from ..image import deps

    path = deps.lock_path(settings)
    if not path.exists():
        raise UserError(f"{path} is missing", hint="run `inv deps` to make it (or run from the project folder)")
    return path


def mlflow_pin(settings) -> str:
    """``mlflow==X`` as the lock pins it."""
    from ..image import deps

    version = deps.pins(requirements_file(settings).read_text()).get("mlflow")
    if not version:
        raise UserError("docker/requirements.lock pins no mlflow", hint="run `inv deps`")
    return f"mlflow=={version}"


def venv_dir(settings) -> Path:
    recipe = requirements_file(settings).read_bytes() + sys.version.encode()
    return cache_dir(settings) / f"mlflow-server-{hashlib.sha256(recipe).hexdigest()[:12]}"


def venv_ready(venv: Path) -> bool:
    return (venv / VENV_MARKER).exists()


def ensure_venv(settings) -> Path:
    """The native server's virtual environment, created once (same requirements as the image)."""
    venv = venv_dir(settings)
    if venv_ready(venv):
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
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise UserError(f"{what}: {lines[-1] if lines else 'exit ' + str(result.returncode)}", hint=hint)


def native_pid(folders: Folders) -> int | None:
    """The pid in ./data/mlflow-server.pid if that process is still our MLflow."""
    try:
        pid = int(folders.pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid if b"mlflow" in cmdline else None


def native_port(pid: int | None) -> str | None:
    """The port the native server ``pid`` was started on (MLFLOW_PORT in its environment); None: unknown."""
    if not pid:
        return None
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    found = [item.split(b"=", 1)[1] for item in environ.split(b"\0") if item.startswith(b"MLFLOW_PORT=")]
    return found[0].decode(errors="replace") if found else None


def start(settings, folders: Folders) -> str:
    """Start the entrypoint in the background (pid file), wait until healthy; returns the ready line.
    Not healthy: the server is stopped again and the pid file removed."""
    venv = ensure_venv(settings)
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
        wait_healthy(settings, failed, str(folders.log_file))
    except UserError:
        if proc.poll() is None:
            stop(proc.pid)
            folders.pid_file.unlink(missing_ok=True)
        raise
    return ready(settings, folders, f"native server (pid {proc.pid}, log {folders.log_file})")


def stop(pid: int, timeout: float = 20) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``timeout`` seconds."""
    from ...core import poll

    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)

    def kill(_last) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    poll.until(lambda: not _alive(pid), timeout, interval=0.2, on_timeout=kill)


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
