"""The registry's HTTP API client (adapters/registry.py): which failures end the HTTPS-then-HTTP tries."""
from __future__ import annotations

import pytest

from mlflow_self_host.core.errors import UserError, connection_reason
from mlflow_self_host.adapters import registry as reg
from mlflow_self_host.core.settings import Settings
from tests.services import free_port


@pytest.fixture
def asked(monkeypatch):
    """The URLs the registry client requests (the requests still go out)."""
    import requests

    urls = []
    real = requests.Session.request

    def request(self, method, url, **kwargs):
        urls.append(url)
        return real(self, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", request)
    return urls


def test_a_registry_name_that_does_not_resolve_is_not_asked_again_over_http(asked):
    settings = Settings.load(env={}, overrides={"registry": "no-such-registry.invalid:5000"})
    with pytest.raises(UserError) as caught:
        reg.digest(settings, "v0.99")
    assert caught.value.code == 7
    assert caught.value.message == "registry no-such-registry.invalid:5000 is unreachable: unknown host name"
    assert asked == ["https://no-such-registry.invalid:5000/v2/mlflow/manifests/v0.99"]  # not http:// too


def test_a_refused_connection_is_tried_over_plain_http_too(asked):
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(UserError) as caught:
        reg.digest(Settings.load(env={}, overrides={"registry": address}), "v0.99")
    assert caught.value.code == 7 and caught.value.message.endswith(": connection refused")
    assert asked == [f"https://{address}/v2/mlflow/manifests/v0.99", f"http://{address}/v2/mlflow/manifests/v0.99"]


def test_the_marker_is_what_connection_reason_says_of_an_unknown_name():
    import socket

    assert connection_reason(socket.gaierror(-2, "Name or service not known")) == reg.UNKNOWN_HOST
