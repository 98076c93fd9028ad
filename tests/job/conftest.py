"""Fixtures for the Nomad job tests: the Nomad double (a cluster whose client runs the stub images on
the test engine) and settings pointing at it."""
from __future__ import annotations

import pytest

from mlflow_self_host.settings import PROJECT_ROOT, Settings


@pytest.fixture
def nomad_double(nomad_cluster):
    """The cluster's Nomad double; ``nomad_double.cluster`` is the rest (images, host volumes)."""
    nomad_cluster.nomad.cluster = nomad_cluster
    return nomad_cluster.nomad


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
    return Settings.load(root=PROJECT_ROOT, env=env or {}, overrides=values)
