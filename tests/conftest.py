"""Session fixtures: the real services the tests use, started on loopback and stopped afterwards.

- ``docker_engine``: dockerd on its own socket (or the engine DOCKER_HOST names), overlay2 or vfs.
- ``registry``: Debian's docker-registry on a loopback port.
- ``ssh_server``: openssh-server on a loopback port, key auth, a test user with passwordless sudo.
- ``dns_server``: dnsmasq on a loopback port with a config folder and a restart command.
- ``base_image``: the local stand-in for python:*-slim (debootstrap + docker import, cached).
- ``mlflow_old_image``: the same image with MLflow 3.16.1's lock (tests/services/mlflow_3_16/), for upgrades.
- ``nomad_network``: a bridge network on the engine for the tasks the Nomad double runs (ports on 127.0.0.1).
- ``stub_images``: stub MLflow images (tests/services/stub_image) pushed to the registry by version.
- ``nomad_cluster``: the Nomad double with a client running tasks on the engine, its client.hcl and
  host volumes, and the stub versions 0.99, 0.100, 1.0 and 1.2 in the registry (per test).
- ``postgres_server``: a private PostgreSQL cluster (initdb as postgres) on a loopback port.
- ``lan_address``: an IPv4 address of this machine outside 127.0.0.0/8 (an interface of the session's
  own), for a plain-HTTP registry the engine must refuse.
Under CI=true a service that cannot start fails the run; elsewhere its tests are skipped.

The fast lane: every test that uses none of these services (nor a double that runs containers) is
marked ``fast`` at collection (``pytest_collection_modifyitems`` below), so ``pytest -m fast`` answers in
seconds with the logic alone (decisions, settings, errors, record and plan logic, job rendering).

When the session ends, after every fixture's teardown, ``pytest_sessionfinish`` fails the run if the
session left a process, port, user, group, sudoers file, network interface or mount behind
(tests/services/leftovers.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

try:  # property tests check logic, not speed: a loaded machine (xdist workers, builds) must not fail them
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("msh", deadline=None)
    _hypothesis_settings.load_profile("msh")
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass

from tests.services import base_image as base_image_service
from tests.services import dns_server as dns_service
from tests.services import docker_engine, registry as registry_service, ssh_server as ssh_service
from tests.services import clean_env, session_name, unavailable
from tests.services.leftovers import pytest_configure, pytest_sessionfinish, pytest_sessionstart  # noqa: F401 - the hooks

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The fixtures that start a real service or a double (every fixture built on one has it in its closure).
SERVICE_FIXTURES = frozenset({
    "docker_engine_service", "registry", "ssh_server", "dns_server", "dns_server_session", "postgres_server", "lan_address",
    "nomad_double", "pi_double", "start_pihole", "nomad_user", "password_sudo_server", "no_sftp_server",
    "server",  # tests/test_smoke.py: a real MLflow server
    "proxy", "catalogue", "backends",  # tests/test_services.py: nginx in Traefik's place, its doubles
    "ansible_results",  # tests/host/test_client_hcl.py: ansible-core's own blockinfile runs
    "as_root",  # tests/test_leftovers.py: whole pytest sessions that plant users, interfaces and mounts
})


def pytest_collection_modifyitems(config, items):
    """Mark ``fast`` every test whose fixtures start no service and that is not marked ``slow``."""
    for item in items:
        if SERVICE_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="session")
def docker_engine_service(tmp_path_factory):
    engine = docker_engine.reuse_from_env()
    if engine is None:
        try:
            engine = docker_engine.start(Path(tmp_path_factory.mktemp("docker", numbered=True)))
        except TimeoutError as exc:
            unavailable(str(exc))
    yield engine
    docker_engine.stop(engine)


@pytest.fixture(scope="session")
def docker_client(docker_engine_service):
    return docker_engine_service.client()


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    reg = registry_service.start(Path(tmp_path_factory.mktemp("registry")))
    yield reg
    registry_service.stop(reg)


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory):
    server = ssh_service.start(Path(tmp_path_factory.mktemp("sshd")))
    yield server
    ssh_service.stop(server)


@pytest.fixture(scope="session")
def dns_server_session(tmp_path_factory):
    server = dns_service.start(Path(tmp_path_factory.mktemp("dnsmasq")))
    yield server
    dns_service.stop(server)


@pytest.fixture
def dns_server(dns_server_session):
    """The session's dnsmasq, for one test: the record files the test adds to its folder are removed after it,
    pass or fail, and dnsmasq restarted, so the next test on this worker never finds a duplicate CNAME."""
    import subprocess

    server = dns_server_session
    before = set(server.conf_dir.iterdir())
    yield server
    added = [path for path in server.conf_dir.iterdir() if path not in before]
    for path in added:
        path.unlink()
    if added:
        subprocess.run(server.restart_command, shell=True, check=True, timeout=60)


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL cluster (Debian's postgresql) on a loopback port; ``.database(name)`` makes an
    empty database owned by the role mlflow and returns its URL."""
    from tests.services import postgres as postgres_service

    server = postgres_service.start()
    yield server
    postgres_service.stop(server)


@pytest.fixture(scope="session")
def lan_address():
    """``10.213.0.N``: this machine's, on an interface the session made (and removes), not loopback."""
    from tests.services import lan_address as lan_service

    lan = lan_service.start()
    yield lan.address
    lan_service.stop(lan)


@pytest.fixture(scope="session")
def base_image(docker_client):
    """Tag of the local python base stand-in (built once, then loaded from the cache)."""
    return base_image_service.ensure(docker_client)


@pytest.fixture(scope="session")
def mlflow_image(docker_engine_service, registry, base_image):
    """The project's MLflow image built once (`inv build`'s code) from the stand-in base.

    ``.settings(**more)`` gives Settings pointing at it (registry, unique image name, base_image).
    """
    from tests.services import mlflow_image as mlflow_image_service

    image = mlflow_image_service.build(docker_engine_service, registry, base_image)
    yield image
    mlflow_image_service.remove(docker_engine_service, image)


@pytest.fixture(scope="session")
def mlflow_old_image(tmp_path_factory, docker_engine_service, registry, base_image):
    """The previous MLflow release's image (3.16.1, tests/services/mlflow_old_image.py), built as
    ``mlflow_image`` is (a warm build takes seconds); ``.root`` is the settings root it was built from."""
    from tests.services import mlflow_image as mlflow_image_service
    from tests.services import mlflow_old_image as old_image_service

    image = old_image_service.build(docker_engine_service, registry, base_image,
                                    tmp_path_factory.mktemp("mlflow-3.16"))
    yield image
    mlflow_image_service.remove(docker_engine_service, image)


@pytest.fixture(scope="session")
def nomad_network(docker_engine_service):
    """The bridge network the Nomad double's containers join (Nomad's bridge + port mapping); its name
    and subnet are this session's own, so two test sessions on one machine never share a bridge."""
    name = session_name("msh")
    try:
        docker_engine.bridge_network(docker_engine_service, name)
    except Exception as exc:  # noqa: BLE001 - an engine that cannot make bridges
        unavailable(f"the Docker engine cannot create a bridge network: {exc}")
    yield name
    docker_engine.remove_network(docker_engine_service, name)


@pytest.fixture(scope="session")
def stub_images(docker_client, registry, base_image):
    from tests.services.stub_images import StubImages

    images = StubImages(docker_client, registry.address, base_image)
    yield images
    images.remove()


@pytest.fixture
def nomad_cluster(tmp_path, docker_engine_service, nomad_network, stub_images):
    from tests.services import nomad_cluster as cluster_service

    cluster = cluster_service.start(tmp_path / "nomad-client", docker_engine_service, nomad_network, stub_images)
    yield cluster
    cluster.nomad.stop()


@pytest.fixture(autouse=True, scope="session")
def _suite_cache_dir():
    """Settings the tests load in-process with their own ``env`` (often ``{}``) get the suite's cache_dir too, as
    ``clean_env`` gives the tasks they run: an image build keeps its schema read there, the native server its
    environment, never in the user's ~/.cache/mlflow-self-host (the leftover check compares it)."""
    from mlflow_self_host.core.settings import Settings
    from tests.services import ADMIN_PASSWORD, CACHE_DIR

    import inspect

    original = Settings.load.__func__
    signature = inspect.signature(original)

    def load(cls, *args, **kwargs):
        bound = signature.bind(cls, *args, **kwargs)
        env = bound.arguments.get("env")
        env = os.environ if env is None else env
        missing = {key: value for key, value in (("MSH_CACHE_DIR", str(CACHE_DIR)),
                                                 ("MSH_MLFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD)) if key not in env}
        if missing:  # the admin's password too, as clean_env has it (auth: basic by default)
            bound.arguments["env"] = {**env, **missing}
        return original(*bound.args, **bound.kwargs)

    Settings.load = classmethod(load)
    yield
    Settings.load = classmethod(original)


@pytest.fixture
def project_env(monkeypatch):
    """A clean environment (``clean_env``): no MSH_/NOMAD_/PIHOLE_ settings leak in from the developer's shell,
    and the suite's own cache_dir."""
    wanted = clean_env()
    for key in list(os.environ):
        if key not in wanted:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MSH_CACHE_DIR", wanted["MSH_CACHE_DIR"])
    monkeypatch.setenv("MSH_MLFLOW_ADMIN_PASSWORD", wanted["MSH_MLFLOW_ADMIN_PASSWORD"])
    return monkeypatch
