"""A Nomad cluster for the tests: the Nomad double with one client node that runs the jobs' tasks on the
test Docker engine, its client.hcl with the two MLflow host volumes (laid out by the project's own
client_hcl code, folders owned by the image's uid as configure-host leaves them), and stub images in the
test registry for the versions the tests deploy.

The job timings are shortened (settings ``check_interval`` ... ``restart_delay``) so a deploy takes
seconds; the double applies them exactly as Nomad would.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLIENT_HCL = """\
# Nomad client configuration
data_dir = "/opt/nomad/data"

client {
  enabled = true
  servers = ["127.0.0.1:4647"]
}
"""

# A healthy stub passes its check in well under a second; the deadlines leave room for a loaded CI machine
# (a stub missed a 20 s deadline there while image builds ran beside it). A test of a deadline sets its own.
FAST_TIMINGS = {"check_interval": "500ms", "min_healthy_time": "1s", "healthy_deadline": "60s",
                "progress_deadline": "90s", "restart_attempts": 1, "restart_delay": "1s"}
# For the real MLflow image, which starts in seconds, not in a stub's fraction of one.
MLFLOW_TIMINGS = {"check_interval": "1s", "min_healthy_time": "2s", "healthy_deadline": "90s",
                  "progress_deadline": "3m", "restart_attempts": 1, "restart_delay": "2s"}
STANDARD_VERSIONS = ("0.99", "0.100", "1.0", "1.2")


@dataclass
class Cluster:
    nomad: object  # NomadDouble
    images: object  # StubImages
    root: Path

    @property
    def client_config(self) -> Path:
        return self.root / "nomad.d" / "client.hcl"

    @property
    def backend(self) -> Path:
        return self.root / "data" / "mlflow" / "backend"

    @property
    def artifacts(self) -> Path:
        return self.root / "data" / "mlflow" / "artifacts"

    @property
    def backups(self) -> Path:
        """The nightly backup's host volume mlflow-backups (``backups_copy``: mlflow-backups-copy)."""
        return self.root / "data" / "mlflow" / "backups"

    @property
    def backups_copy(self) -> Path:
        return self.root / "data" / "mlflow" / "backups-copy"

    def publish(self, version: str, **variant) -> str:
        return self.images.publish(version, **variant)

    def overrides(self, **more) -> dict:
        """Settings that point deploy at this cluster (no host step, no build, no service check)."""
        values = {"nomad_addr": self.nomad.address, "registry": self.images.registry,
                  "image": self.images.repository, "deploy_poll": "0.05", "deploy_timeout": 150,
                  "deploy_check": False, "backend_path": str(self.backend),
                  "artifacts_path": str(self.artifacts), **FAST_TIMINGS}
        values.update(more)
        return values

    def env(self, **more) -> dict:
        """The same as MSH_ variables, for `inv` in a subprocess."""
        return {f"MSH_{k.upper()}": str(v) for k, v in self.overrides(**more).items()}


def layout(root: Path, uid: int = 1000, gid: int = 1000) -> None:
    """client.hcl with the MLflow host volumes and their folders, as configure-host leaves them (the backups
    folder and a second one for the nightly backup's copies)."""
    from mlflow_self_host.steps.host import client_hcl

    (root / "nomad.d").mkdir(parents=True, exist_ok=True)
    data = root / "data" / "mlflow"
    backend, artifacts, backups, copy = data / "backend", data / "artifacts", data / "backups", data / "backups-copy"
    for folder in (backend, artifacts, backups, copy):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, uid, gid)
        os.chmod(folder, 0o774)
    block = client_hcl.client_config_block(str(backend), str(artifacts), str(backups), str(copy))
    (root / "nomad.d" / "client.hcl").write_bytes(client_hcl.with_block(CLIENT_HCL.encode(), block))


def start(root: Path, engine, network: str, images, **double_options) -> Cluster:
    from tests.doubles.nomad import NomadDouble

    layout(root)
    nomad = NomadDouble(engine=engine.client(), network=network, client_config=root / "nomad.d" / "client.hcl",
                        **double_options)
    for version in STANDARD_VERSIONS:
        images.publish(version)
    return Cluster(nomad, images, root)
