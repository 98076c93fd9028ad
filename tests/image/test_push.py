"""`inv push` / `inv pushlatest` against a real registry, and each push error with its exit code."""
from __future__ import annotations

import contextlib

import pytest

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.steps.image import push as image_push
from mlflow_self_host.adapters import registry as reg
from mlflow_self_host.core.version import Version
from tests.doubles.fake_registry import FakeRegistry
from tests.services import free_port, registry as registry_service

pytestmark = pytest.mark.slow
VERSION = Version("0.99")


@pytest.fixture(scope="module")
def pushed(mlflow_image, registry):
    """v0.99 pushed once; (settings, digest)."""
    settings = mlflow_image.settings()
    return settings, image_push.push(settings, VERSION)


def test_push_puts_the_version_tag_in_the_registry(pushed, registry):
    settings, digest = pushed
    assert "v0.99" in registry.tags(settings.image)
    assert digest.startswith("sha256:") and digest == registry.digest(settings.image, "v0.99")
    assert reg.tag_exists(settings, "v0.99") and reg.digest(settings, "v0.99") == digest
    assert not reg.tag_exists(settings, "v0.98")


def test_pushing_again_sends_nothing(pushed, registry, capfd):
    settings, digest = pushed
    log = registry.root / "registry.log"
    log_before = log.stat().st_size
    assert image_push.push(settings, VERSION) == digest
    err = capfd.readouterr().err
    assert "no change" in err and "layers sent" not in err
    assert registry.digest(settings.image, "v0.99") == digest
    with open(log) as fh:
        fh.seek(log_before)
        requests = [line for line in fh if '"' in line]
    assert requests and not [r for r in requests if '"PUT ' in r or '"POST ' in r or '"PATCH ' in r]


def test_a_rebuilt_image_sends_no_layer_again(pushed, mlflow_image, capfd):
    from mlflow_self_host.steps.image import build as image_build

    settings, digest = pushed
    image_build.build(settings, VERSION)  # new labels (created), the same layers
    capfd.readouterr()
    new_digest = image_push.push(settings, VERSION)
    assert new_digest != digest
    assert "(0 layers sent," in capfd.readouterr().err


def test_pushlatest_gives_latest_the_version_digest(pushed, registry):
    settings, _ = pushed
    digest = image_push.push_latest(settings, VERSION)
    assert registry.digest(settings.image, "latest") == registry.digest(settings.image, "v0.99") == digest


def test_an_image_not_built_yet_is_exit_6(mlflow_image):
    with pytest.raises(UserError) as caught:
        image_push.push(mlflow_image.settings(), Version("9.9.9"))
    assert caught.value.code == 6 and "not built yet" in caught.value.message
    assert "inv build" in caught.value.hint


@contextlib.contextmanager
def tagged_for(settings, mlflow_image, docker_client):
    """The built image also tagged for another registry, for the length of a test."""
    docker_client.images.get(mlflow_image.ref()).tag(settings.image_repo(), "v0.99")
    try:
        yield
    finally:
        docker_client.images.remove(settings.image_ref("0.99"), noprune=True)


def test_an_unreachable_registry_is_exit_7(mlflow_image, docker_client):
    settings = mlflow_image.settings(registry=f"127.0.0.1:{free_port()}")
    with tagged_for(settings, mlflow_image, docker_client), pytest.raises(UserError) as caught:
        image_push.push(settings, VERSION)
    assert caught.value.code == 7 and "unreachable" in caught.value.message
    assert "MSH_REGISTRY" in caught.value.hint


def test_inv_push_to_an_http_registry_the_engine_does_not_allow_is_exit_8(mlflow_image, docker_client,
                                                                         docker_engine_service, lan_address,
                                                                         tmp_path):
    """A real registry speaking plain HTTP on an address of this machine outside 127.0.0.0/8 (the
    session's own interface), which the test engine does not list in its insecure-registries: what a
    laptop meets with registry.lan:5000 before its daemon.json names it. Nothing reaches the registry."""
    from tests.image.test_build import inv, red_lines

    lan_registry = registry_service.start(tmp_path / "lan-registry", host=lan_address)
    try:
        settings = mlflow_image.settings(registry=lan_registry.address)
        version = (settings.root / "version.txt").read_text().strip()
        docker_client.images.get(mlflow_image.ref()).tag(settings.image_repo(), f"v{version}")
        try:
            result = inv("push", env={"DOCKER_HOST": docker_engine_service.base_url,
                                      "MSH_REGISTRY": lan_registry.address, "MSH_IMAGE": settings.image})
        finally:
            docker_client.images.remove(settings.image_ref(version), noprune=True)
        assert result.returncode == 8, result.stderr
        assert "Traceback" not in result.stderr
        assert red_lines(result.stderr) == [f"error: the Docker engine refuses the plain-HTTP registry "
                                            f"{lan_registry.address} (not insecure-allowed)"]
        assert (f'add "insecure-registries": ["{lan_registry.address}"] to /etc/docker/daemon.json'
                in " ".join(result.stderr.split()))
        assert lan_registry.tags(settings.image) == []
    finally:
        registry_service.stop(lan_registry)


@pytest.mark.parametrize("password", [None, "s3cret-Pa55"])
def test_an_unauthorized_push_says_how_to_log_in_and_hides_the_password(mlflow_image, docker_client, password,
                                                                         capfd):
    with FakeRegistry("unauthorized") as fake:
        settings = mlflow_image.settings(registry=fake.address)
        if password:
            settings = settings.with_overrides({"registry_username": "ci"})
            settings._values["registry_password"] = password  # what MSH_REGISTRY_PASSWORD gives
        with tagged_for(settings, mlflow_image, docker_client), pytest.raises(UserError) as caught:
            image_push.push(settings, VERSION)
    assert caught.value.code == 9 and "unauthorized" in caught.value.message
    assert "MSH_REGISTRY_PASSWORD" in caught.value.hint
    if password:
        assert any(auth for _, _, auth in fake.requests)  # the credentials were offered
        assert password not in str(caught.value) and password not in "".join(capfd.readouterr())


def test_push_dry_run_changes_nothing(mlflow_image, registry, docker_client, capfd):
    settings = mlflow_image.settings(image=mlflow_image.settings().image + "-dry")
    with tagged_for(settings, mlflow_image, docker_client):
        assert image_push.push(settings, VERSION, dry_run=True) == ""
    assert "would change" in capfd.readouterr().err
    assert registry.tags(settings.image) == []


def test_inv_build_push_chains_in_one_call(mlflow_image, registry, docker_engine_service, docker_client):
    from tests.image.test_build import inv

    settings = mlflow_image.settings(image=mlflow_image.settings().image + "-cli")
    version = (settings.root / "version.txt").read_text().strip()
    result = inv("build", "push", env={"DOCKER_HOST": docker_engine_service.base_url, "MSH_REGISTRY": registry.address,
                                       "MSH_IMAGE": settings.image, "MSH_BASE_IMAGE": settings.base_image})
    try:
        assert result.returncode == 0, result.stderr
        assert registry.tags(settings.image) == [f"v{version}"]
        assert f"pushed {settings.image_ref(version)} sha256:" in result.stderr
    finally:
        docker_client.images.remove(settings.image_ref(version), noprune=True)
