"""The whole `inv deploy` as users run it: the real Docker engine, registry and sshd, the Nomad double.

configure-host runs over SSH against a Nomad client laid out in a temp folder, the image is built and
pushed to the registry, the job is planned and registered on the double, and the service check asks
a real MLflow server (deploy_url), since the domain does not resolve here.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.host.conftest import make_nomad_host, nomad_user  # noqa: F401 - the fixture
from tests.services import mlflow_server
from tests.services.mlflow_image import clean_env

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture
def local_mlflow(tmp_path):
    server = mlflow_server.start(tmp_path / "mlflow")
    yield server
    mlflow_server.stop(server)


HOST_KEYS = ("host", "ssh_port", "ssh_user", "ssh_key", "known_hosts", "nomad_client_config", "backend_path",
             "artifacts_path", "job_dir", "folder_owner", "folder_group", "nomad_restart_command", "nomad_addr",
             "nomad_health_timeout")


def _host_env(root: Path, ssh_server, nomad_address: str) -> dict:
    """configure-host's Nomad client in ``root`` (tests/host's layout) as MSH_ variables for `inv`."""
    host = make_nomad_host(root, ssh_server, nomad_address)
    env = {f"MSH_{key.upper()}": str(host.settings[key]) for key in HOST_KEYS}
    env["MSH_BACKUPS_PATH"] = str(root / "data" / "backups")
    return env


def inv(*args, env):
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def test_inv_deploy_end_to_end(tmp_path, nomad_double, mlflow_image, registry, ssh_server, nomad_user,
                               local_mlflow, docker_engine_service):
    version = (ROOT / "version.txt").read_text().strip()
    env = clean_env()
    env.update(_host_env(tmp_path / "host", ssh_server, nomad_double.address))
    env.update({f"MSH_{k.upper()}": str(v) for k, v in mlflow_image.settings_overrides.items()})
    name = f"{mlflow_image.settings_overrides['image']}-deploy"  # this test's own repository (cached layers)
    env["MSH_IMAGE"] = name
    env.update(MSH_DEPLOY_POLL="0.05", MSH_DEPLOY_URL=local_mlflow.url, MSH_DEPLOY_TIMEOUT="60",
               DOCKER_HOST=docker_engine_service.base_url)
    image = f"{registry.address}/{name}:v{version}"

    dry = inv("deploy", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "dry run: nothing was registered" in dry.stderr and '+ Job: "mlflow"' in dry.stderr
    assert nomad_double.registrations() == [] and "host_volume" not in \
        (tmp_path / "host" / "nomad.d" / "client.hcl").read_text()
    assert f"v{version}" not in registry.tags(name)

    first = inv("deploy", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    # the host got its volumes and the job file, the registry the tag, Nomad the pinned image
    client_hcl = (tmp_path / "host" / "nomad.d" / "client.hcl").read_text()
    assert 'host_volume "mlflow-backend-store"' in client_hcl and 'host_volume "mlflow-artifacts"' in client_hcl
    assert (tmp_path / "host" / "jobs" / "mlflow" / "mlflow.nomad.hcl").read_bytes() == \
        (ROOT / "nomad" / "mlflow.nomad.hcl").read_bytes()
    assert f"v{version}" in registry.tags(name)
    job = nomad_double.job()
    assert job["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == image and job["Stable"] is True
    assert f"deployed v{version}: job version 0, {local_mlflow.url}/" in first.stderr

    # a second deploy with nothing new: no build, no push, no host change, nothing registered
    image_id = docker_engine_service.client().images.get(image).id
    digest = registry.digest(name, f"v{version}")
    hcl_stat = (tmp_path / "host" / "nomad.d" / "client.hcl").stat()
    again = inv("deploy", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"already deployed: v{version}" in again.stderr
    assert "building" not in again.stderr and "pushed" not in again.stderr
    assert docker_engine_service.client().images.get(image).id == image_id
    assert registry.digest(name, f"v{version}") == digest
    assert (tmp_path / "host" / "nomad.d" / "client.hcl").stat().st_mtime_ns == hcl_stat.st_mtime_ns
    assert len(nomad_double.registrations()) == 1

    # a change that fails its health checks: Nomad rolls back to version 0, exit 12, one red line
    nomad_double.next_deployment("failed", stderr="mlflow-entrypoint: /mnt/backend_store is not writable\n")
    failed = inv("deploy", "--skip-build", "--skip-host", env={**env, "MSH_MEMORY": "600"})
    assert failed.returncode == 12, failed.stderr[-3000:]
    assert "mlflow-entrypoint: /mnt/backend_store is not writable" in failed.stderr
    assert "error: " in failed.stderr and "Traceback" not in failed.stderr
    assert nomad_double.job()["TaskGroups"][0]["Tasks"][0]["Resources"]["MemoryMB"] == 512

    # status, logs and rollback as users run them, against what the deploys left
    status = inv("status", "--json", env=env)
    assert status.returncode == 0, status.stderr[-2000:]
    data = json.loads(status.stdout)
    assert data["job"]["version"] == 2 and data["job"]["image"] == image and data["job"]["up_to_date"] is True
    logs = inv("logs", "--stderr", "--lines", "1", env=env)
    assert (logs.returncode, logs.stdout) == (0, "INFO:     Uvicorn running on http://0.0.0.0:5000\n")
    rollback = inv("rollback", "--to", "1", "--dry-run", env=env)
    assert rollback.returncode == 0 and "version 2" in rollback.stderr and "version 1" in rollback.stderr
    missing = inv("rollback", "--to", "9", env=env)
    assert missing.returncode == 2 and "error: job mlflow has no version 9 (versions: 0, 1, 2)" in missing.stderr
    assert len(nomad_double.versions()) == 3


def test_deploy_help_documents_the_exit_codes():
    result = inv("--help", "deploy", env=clean_env())
    assert result.returncode == 0
    for code in ("10 placement failed", "11 deployment failed", "12 deployment failed and Nomad reverted"):
        assert code in " ".join(result.stdout.split())
