"""The native server (no Docker engine): the entrypoint from a virtual environment with the image's
locked requirements, created once under ``cache_dir``, in the background with a pid file in ./data."""
from __future__ import annotations

import contextlib
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
    """The native server's virtual environment, created once (same requirements as the image). One process
    creates it at a time (a lock on ``cache_dir``): another waits, then uses it."""
    venv = venv_dir(settings)
    if venv_ready(venv):
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with _building(venv):
        if not venv_ready(venv):
            _create(settings, venv)
    return venv


def shown(path: Path) -> str:
    """``path`` with the home folder as ``~``."""
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if home != "/" and (text == home or text.startswith(home + "/")) else text


def _create(settings, venv: Path) -> None:
    import shutil

    from .install_progress import Display, PipProgress, package_count, run_watched

    shutil.rmtree(venv, ignore_errors=True)
    lock = requirements_file(settings)
    pin = mlflow_pin(settings)
    progress = PipProgress(total=package_count(lock.read_text()))
    console.step(f"creating the native MLflow environment (MLflow {pin.split('==', 1)[1]}, {progress.total} packages) "
                 f"in {shown(venv)}: once, about a minute")
    with Display() as display:
        display.update(progress)
        code, lines = run_watched([sys.executable, "-m", "venv", str(venv)], venv, progress, display)
        if code != 0:
            raise UserError(f"cannot create a virtual environment: {lines[-1] if lines else f'exit {code}'}",
                            hint="install python3-venv (`apt-get install python3-venv`)")
        progress.phase = "downloading"
        display.update(progress)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               "--no-color", "--progress-bar", "off", "--require-hashes", "--no-deps", "-r", str(lock)]
        code, lines = run_watched(pip, venv, progress, display)
    if code != 0:
        errors = [line for line in lines if line.startswith("ERROR:")]
        raise UserError(f"installing {pin} and its locked requirements failed: "
                        f"{(errors or lines or ['exit ' + str(code)])[-1]}",
                        hint="check that pip can reach the package index (proxy, PIP_INDEX_URL)")
    (venv / VENV_MARKER).write_text(pin + "\n")
    console.done(f"created the native MLflow environment: {progress.total} packages in {display.elapsed():.0f} s")


@contextlib.contextmanager
def _building(venv: Path):
    """Held while ``venv`` is created: a flock on the cache folder (released when the process ends, however)."""
    import fcntl

    fd = os.open(venv.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.step(f"waiting for another process creating {shown(venv)}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
