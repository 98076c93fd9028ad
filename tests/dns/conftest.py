"""Fixtures for `inv dns`: the Pi-hole v6 double (HTTP API and its DNS answers) and settings for it."""
from __future__ import annotations

import pytest

from mlflow_self_host.core.settings import Settings
from tests.doubles.pihole import PiHoleDouble

# A fast machine's FTL restart; tests about the restart itself pass their own, longer ones.
RESTART_SECONDS = 0.3


def pihole_settings(double: PiHoleDouble, password: str | None = None, **overrides) -> Settings:
    """Settings that point `inv dns` at the double; the password comes from the environment."""
    env = {"PIHOLE_PASSWORD": double.password if password is None else password}
    values = dict(dns_backend="pihole", pihole_url=double.url, dns_server="127.0.0.1",
                  dns_port=double.dns_port, dns_check_timeout=10)
    values.update(overrides)
    return Settings.load(env=env, overrides=values)


@pytest.fixture
def start_pihole(project_env):
    """Start a double with the given state (``start_pihole(cname_records=[...], app_sudo=True)``)."""
    started = []

    def start(**state) -> PiHoleDouble:
        state.setdefault("restart_seconds", RESTART_SECONDS)
        double = PiHoleDouble(**state).start()
        started.append(double)
        return double

    yield start
    for double in started:
        double.stop()


@pytest.fixture
def pihole(start_pihole) -> PiHoleDouble:
    return start_pihole()
