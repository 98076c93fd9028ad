"""What the user-path tests share (tests/test_user_path.py, tests/migrate/test_mlflow_upgrade.py): the
environment `inv` runs with against the real parts, and a user's work logged through the name and the proxy."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from . import clean_env
from . import resolver
from .nomad_cluster import MLFLOW_TIMINGS

DOMAIN = "mlflow.lan"
HOST_KEYS = ("host", "ssh_port", "ssh_user", "ssh_key", "known_hosts", "nomad_client_config", "backend_path",
             "artifacts_path", "job_dir", "folder_owner", "folder_group", "nomad_restart_command",
             "nomad_health_timeout")


def env(host, double, engine, registry, image: str, base_image: str, dns_server, url: str, backups: Path,
        dnsmasq_file: str, deploy_timeout: int = 300) -> dict:
    """`inv`'s environment: the host's settings (tests/host/conftest.py make_nomad_host), the tests' shorter job
    timings (same rules), the engine, registry, image, dnsmasq record file, deploy URL through the proxy, and
    the test resolver for the subprocess."""
    out = clean_env()
    out.update({f"MSH_{key.upper()}": str(value) for key, value in host.settings._values.items() if key in HOST_KEYS})
    out.update({f"MSH_{k.upper()}": str(v) for k, v in MLFLOW_TIMINGS.items()})
    out.update(DOCKER_HOST=engine.base_url, NOMAD_ADDR=double.address, MSH_REGISTRY=registry.address,
               MSH_IMAGE=image, MSH_BASE_IMAGE=base_image, MSH_BACKUPS_PATH=str(backups), MSH_DOMAIN=DOMAIN,
               MSH_DNS_BACKEND="dnsmasq", MSH_DNSMASQ_DIR=str(dns_server.conf_dir), MSH_DNSMASQ_FILE=dnsmasq_file,
               MSH_DNSMASQ_RESTART_COMMAND=dns_server.restart_command, MSH_DNS_SERVER="127.0.0.1",
               MSH_DNS_PORT=str(dns_server.port), MSH_DEPLOY_URL=url, MSH_DEPLOY_POLL="0.2",
               MSH_DEPLOY_TIMEOUT=str(deploy_timeout), MSH_DEPLOY_CHECK_TIMEOUT="60")
    out.update(resolver.env_for_subprocess(dns_server.port))
    return out


def log_work(client, experiment_name: str, folder: Path) -> tuple[str, str, Path]:
    """A user's work: an experiment, a run with a param, 10 steps of "loss" and an artifact (model.txt).
    Returns (experiment id, run id, the artifact's local file)."""
    experiment = client.create_experiment(experiment_name)
    run = client.create_run(experiment).info.run_id
    client.log_param(run, "lr", "0.01")
    for step in range(10):
        client.log_metric(run, "loss", 1.0 / (step + 1), step=step)
    artifact = folder / "model.txt"
    artifact.write_text("weights\n" * 1000)
    client.log_artifact(run, str(artifact))
    return experiment, run, artifact


def runner(repo: Path, env: dict):
    """``inv(*args, expect=0)``: `python -m invoke ARGS` in ``repo`` with ``env``, its exit code asserted (with
    the end of its stderr), no traceback; the CompletedProcess."""
    def inv(*args, expect=0):
        done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == expect, f"inv {' '.join(args)} → {done.returncode}\n{done.stderr[-5000:]}"
        assert "Traceback" not in done.stderr
        return done

    return inv
