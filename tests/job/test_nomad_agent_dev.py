"""The first deploy against a real `nomad agent -dev`, when a `nomad` binary is on PATH (skipped otherwise).

The dev agent runs server and client in one process, with the docker driver on the engine DOCKER_HOST
names and the two host volumes in temp folders. The image comes from the test registry.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from mlflow_self_host.flows import deploy as job_deploy
from tests.services import stop_process
from tests.services.ports import reserved_port

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not shutil.which("nomad"),
    reason="no `nomad` binary on PATH: the nomad agent -dev test needs one (the double covers the rest)")]


@pytest.fixture
def nomad_dev_agent(tmp_path, docker_engine_service, registry):
    binary = shutil.which("nomad")
    backend, artifacts = tmp_path / "backend", tmp_path / "artifacts"
    for folder in (backend, artifacts):
        folder.mkdir()
        os.chown(folder, 1000, 1000)
    http, rpc, serf = reserved_port(), reserved_port(), reserved_port()  # the agent binds them later
    config = tmp_path / "agent.hcl"
    config.write_text(f"""
datacenter = "DC0"
data_dir   = "{tmp_path / 'data'}"
bind_addr  = "127.0.0.1"
ports {{
  http = {http}
  rpc  = {rpc}
  serf = {serf}
}}
client {{
  host_volume "mlflow-backend-store" {{
    path      = "{backend}"
    read_only = false
  }}
  host_volume "mlflow-artifacts" {{
    path      = "{artifacts}"
    read_only = false
  }}
}}
plugin "docker" {{
  config {{
    endpoint = "{docker_engine_service.base_url}"
  }}
}}
""")
    log = open(tmp_path / "nomad.log", "wb")
    proc = subprocess.Popen([binary, "agent", "-dev", "-config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    address = f"http://127.0.0.1:{http}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(address + "/v1/status/leader", timeout=2) as resp:
                if resp.status == 200 and resp.read().strip() not in (b'""', b""):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            stop_process(proc)
            pytest.fail(f"nomad agent -dev did not start: {(tmp_path / 'nomad.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield address
    stop_process(proc)


def test_first_deploy_to_nomad_agent_dev(nomad_dev_agent, mlflow_image, project_env):
    from mlflow_self_host.steps.image import push

    settings = mlflow_image.settings(nomad_addr=nomad_dev_agent, datacenter="DC0", deploy_check=False,
                                     deploy_poll="0.5", deploy_timeout=300)
    push.push(settings, mlflow_image_version(mlflow_image))
    result = job_deploy.deploy(settings, mlflow_image.version, skip_host=True, skip_build=True, backup=False)
    assert result.status == "deployed" and result.job_version == 0
    again = job_deploy.deploy(settings, mlflow_image.version, skip_host=True, skip_build=True, backup=False)
    assert again.status == "unchanged"


def mlflow_image_version(image):
    from mlflow_self_host.core.version import Version

    return Version(image.version)


