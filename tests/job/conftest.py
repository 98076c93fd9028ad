"""Fixtures for the Nomad job tests: the Nomad HTTP double and settings pointing at it."""
from __future__ import annotations

import pytest

from mlflow_self_host.settings import PROJECT_ROOT, Settings
from tests.doubles.nomad import NomadDouble


@pytest.fixture
def nomad_double():
    double = NomadDouble(step=0.08)
    yield double
    double.stop()


def job_settings(double_or_addr, env=None, **overrides) -> Settings:
    """Settings for a deploy against the double: no host, no build, fast polling, no service check."""
    address = double_or_addr if isinstance(double_or_addr, str) else double_or_addr.address
    values = {"nomad_addr": address, "registry": "127.0.0.1:5999", "image": "mlflow", "deploy_poll": "0.03",
              "deploy_timeout": 30, "deploy_check": False}
    values.update(overrides)
    return Settings.load(root=PROJECT_ROOT, env=env or {}, overrides=values)


@pytest.fixture
def registry_has_every_tag(monkeypatch):
    """The scenario tests skip the image steps: the registry is taken to have the tag (the integration
    test and test_refuses_a_tag_the_registry_lacks use the real registry)."""
    from mlflow_self_host.image import registry

    monkeypatch.setattr(registry, "tag_exists", lambda settings, tag: True)
