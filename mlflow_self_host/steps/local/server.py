"""What both local modes share: ./data's folders, the entrypoint's environment, the port, /health."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...core.errors import ExitCode, UserError

SERVER_UID = 1000  # the image's user
HEALTH_TIMEOUT = 180  # seconds: the first start migrates the database
PID_FILE = "mlflow-server.pid"
LOG_FILE = "mlflow-server.log"


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
    """The entrypoint's environment (docker/entrypoint.sh documents it), the same for both modes. With
    ``local_auth`` (`inv up --auth`): MLflow's auth app, the admin's password from MSH_MLFLOW_ADMIN_PASSWORD
    (hex-encoded, as the Nomad job hands it), the secret key MSH_MLFLOW_SECRET_KEY or a new one."""
    env = {
        "MLFLOW_BACKEND_STORE_URI": backend_uri,
        "MLFLOW_ARTIFACTS_DESTINATION": artifacts,
        "MLFLOW_HOST": host,
        "MLFLOW_PORT": str(settings.local_port),
        "MLFLOW_WORKERS": str(settings.workers),
        "MLFLOW_DOMAIN": settings.domain,
    }
    if settings.local_auth:
        import secrets

        from ...core import auth

        env.update({"MLFLOW_AUTH": "basic", "MLFLOW_AUTH_ADMIN_USERNAME": str(settings.admin_username),
                    "MLFLOW_AUTH_CACHE_SECONDS": str(int(settings.auth_cache_seconds)),
                    "MLFLOW_AUTH_ADMIN_PASSWORD_HEX": auth.admin_password(settings).encode().hex(),
                    "MLFLOW_FLASK_SERVER_SECRET_KEY_HEX": str(settings.secret_key or secrets.token_urlsafe(32))
                    .encode().hex()})
    return env


def port_taken(settings) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", int(settings.local_port))) == 0


def port_in_use(settings) -> UserError:
    return UserError(f"port {settings.local_port} is already in use by another program",
                     hint="stop it, or choose another port with `inv up --port N` (or MSH_LOCAL_PORT)")


def check_port_free(settings) -> None:
    if port_taken(settings):
        raise port_in_use(settings)


def healthy(settings) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url(settings)}health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_healthy(settings, failed, logs: str) -> None:
    """Until /health answers (``failed()``: the server's last output once it exited, else None)."""
    from ...core import console, poll

    def check() -> bool:
        if healthy(settings):
            return True
        output = failed()
        if output is not None:
            last = [line for line in output.splitlines() if line.strip()]
            raise UserError(f"MLflow exited before it was healthy: {last[-1] if last else 'no output'}",
                            hint=f"see {logs}", code=ExitCode.LOCAL_UNHEALTHY)
        return False

    def timed_out(_last) -> None:
        raise UserError(f"MLflow was not healthy after {HEALTH_TIMEOUT}s at {url(settings)}health",
                        hint=f"see {logs}", code=ExitCode.LOCAL_UNHEALTHY)

    with console.err.status(f"waiting for {url(settings)}health"):
        poll.until(check, HEALTH_TIMEOUT, interval=0.5, on_timeout=timed_out)


def ready(settings, folders: Folders, what: str) -> str:
    """The line that says it is up (reported as the change's result)."""
    return f"MLflow is up ({what}); data in {folders.data}"
