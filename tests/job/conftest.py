"""Fixtures for the Nomad job tests: the Nomad double (a cluster whose client runs the stub images on
the test engine) and settings pointing at it."""
from __future__ import annotations

import pytest

from mlflow_self_host.steps.image.platform import this_machine
from mlflow_self_host.core.settings import PROJECT_ROOT, Settings

NATIVE_ARCH = this_machine().arch  # the stub images' and the double's first node's
PI_ARCH = "arm64" if NATIVE_ARCH != "arm64" else "amd64"  # a client whose kernel cannot run the stubs


@pytest.fixture
def nomad_double(nomad_cluster):
    """The cluster's Nomad double; ``nomad_double.cluster`` is the rest (images, host volumes)."""
    nomad_cluster.nomad.cluster = nomad_cluster
    return nomad_cluster.nomad


@pytest.fixture
def pi_double(tmp_path, docker_engine_service, nomad_network, stub_images):
    """A cluster whose only client is a Raspberry Pi (cpu.arch arm64, kernel.arch aarch64; amd64 on an arm64
    machine) with the MLflow host volumes; the stub images in its registry are this machine's architecture."""
    from tests.services import nomad_cluster as cluster_service

    cluster = cluster_service.start(tmp_path / "pi-client", docker_engine_service, nomad_network, stub_images,
                                    cpu_arch=PI_ARCH)
    cluster.nomad.cluster = cluster
    yield cluster.nomad
    cluster.nomad.stop()


def job_settings(double_or_addr, env=None, **overrides) -> Settings:
    """Settings for a deploy against the double: no host, no build, fast polling and job timings, no
    service check; the image is the cluster's stub in the test registry."""
    cluster = getattr(double_or_addr, "cluster", None)
    if cluster is not None:
        values = cluster.overrides()
    else:
        address = double_or_addr if isinstance(double_or_addr, str) else double_or_addr.address
        values = {"nomad_addr": address, "registry": "127.0.0.1:5999", "image": "mlflow", "deploy_poll": "0.03",
                  "deploy_timeout": 30, "deploy_check": False}
    values.update(overrides)
    from tests.services import ADMIN_PASSWORD  # auth: basic by default, as clean_env has it

    return Settings.load(root=PROJECT_ROOT, env={"MSH_MLFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD, **(env or {})},
                         overrides=values)
