"""`inv build` builds for the cluster's platform: the Nomad clients' cpu.arch unless the platform setting
says otherwise; `inv config` says where it came from; a cross-build without emulation says what to install.

The base image here is a two-platform tag in the test registry (a manifest list): this machine's
stand-in Python base, and a tiny image of the other architecture whose /bin/sh is a program of that
architecture. A build with COPY steps only runs on any engine, so the built image's architecture is
checked for real; a RUN step of the other architecture meets the kernel's "exec format error", as it
does on an engine without QEMU's binfmt handlers.
"""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from mlflow_self_host.steps.image.platform import this_machine
from tests.services import unavailable
from tests.services.mlflow_image import PROJECT_ROOT, clean_env

pytestmark = pytest.mark.slow

NATIVE = this_machine().arch
FOREIGN = "arm64" if NATIVE != "arm64" else "amd64"
_ELF_MACHINE = {"arm64": 183, "amd64": 62}
V2 = "application/vnd.docker.distribution.manifest.v2+json"
LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def _foreign_program() -> bytes:
    """An ELF header for FOREIGN: this machine's kernel refuses to exec it (ENOEXEC)."""
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    header += struct.pack("<HHIQQQIHHHHHH", 2, _ELF_MACHINE[FOREIGN], 1, 0x400078, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    return header + struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, 0x80, 0x80, 0x1000) + b"\0" * 8


def _manifest(registry: str, repo: str, tag: str) -> dict:
    head = requests.head(f"http://{registry}/v2/{repo}/manifests/{tag}", headers={"Accept": V2}, timeout=10)
    head.raise_for_status()
    return {"mediaType": V2, "digest": head.headers["Docker-Content-Digest"],
            "size": int(head.headers["Content-Length"])}


@pytest.fixture(scope="module")
def multiarch_tag(tmp_path_factory, docker_client, registry, base_image):
    """``{registry}/msh-multibase-…:multi`` in the registry: NATIVE (the stand-in base) and FOREIGN, made
    once per module; the engine is left without it (each test's ``multiarch_base`` pulls it)."""
    repo = f"msh-multibase-{uuid.uuid4().hex[:6]}"
    name = f"{registry.address}/{repo}"
    docker_client.api.tag(base_image, name, NATIVE)
    context = tmp_path_factory.mktemp("foreign-base")
    (context / "sh").write_bytes(_foreign_program())
    (context / "sh").chmod(0o755)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY sh /bin/sh\n")
    list(docker_client.api.build(path=str(context), tag=f"{name}:{FOREIGN}", platform=f"linux/{FOREIGN}",
                                 rm=True, forcerm=True, decode=True))
    for tag in (NATIVE, FOREIGN):
        for event in docker_client.api.push(name, tag=tag, stream=True, decode=True):
            assert "error" not in event, event
    index = {"schemaVersion": 2, "mediaType": LIST, "manifests": [
        {**_manifest(registry.address, repo, arch), "platform": {"architecture": arch, "os": "linux"}}
        for arch in (NATIVE, FOREIGN)]}
    put = requests.put(f"http://{registry.address}/v2/{repo}/manifests/multi", data=json.dumps(index),
                       headers={"Content-Type": LIST}, timeout=10)
    assert put.status_code == 201, put.text
    for tag in (NATIVE, FOREIGN):
        docker_client.images.remove(f"{name}:{tag}", noprune=True)
    yield f"{name}:multi"
    for image in docker_client.images.list(name=name):
        for tag in image.tags:  # the NATIVE variant is the session's base image itself: keep its own tag
            if tag.startswith(f"{name}:"):
                docker_client.images.remove(tag, noprune=True)


@pytest.fixture
def multiarch_base(multiarch_tag, docker_client):
    """The two-platform base as the engine holds it for NATIVE, as a laptop that built for itself before
    holds python:3.12-slim-bookworm: pulled for each test and removed after it, so a test that pulls it
    for FOREIGN or removes it changes nothing for the next one."""
    import docker

    name, tag = multiarch_tag.rsplit(":", 1)
    for event in docker_client.api.pull(name, tag=tag, platform=f"linux/{NATIVE}", stream=True, decode=True):
        assert "error" not in event, event
    assert docker_client.images.get(multiarch_tag).attrs["Architecture"] == NATIVE
    yield multiarch_tag
    try:
        docker_client.images.remove(multiarch_tag, noprune=True)
    except docker.errors.ImageNotFound:
        pass


def _project(root: Path, dockerfile: str) -> Path:
    root.mkdir()
    for name in ("tasks.py", "invoke.yaml", "version.txt"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    (root / "docker").mkdir()
    (root / "docker" / "Dockerfile").write_text(dockerfile)
    (root / "docker" / "hello.txt").write_text("hello\n")
    return root


def inv(root: Path, *args, env: dict):
    full = clean_env()
    full.update(env)
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=root, env=full, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def pi_nomad(docker_client):
    """A Nomad cluster whose client is a Raspberry Pi (cpu.arch FOREIGN) with a docker driver."""
    from tests.doubles.nomad import NomadDouble

    with NomadDouble(engine=docker_client, cpu_arch=FOREIGN) as nomad:
        yield nomad


def test_inv_build_follows_the_clients_and_the_image_has_their_architecture(tmp_path, pi_nomad, multiarch_base,
                                                                           docker_engine_service, docker_client,
                                                                           registry):
    root = _project(tmp_path / "project", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY hello.txt /hello.txt\n")
    image = f"mlflow-platform-{uuid.uuid4().hex[:8]}"
    env = {"DOCKER_HOST": docker_engine_service.base_url, "NOMAD_ADDR": pi_nomad.address,
           "MSH_REGISTRY": registry.address, "MSH_IMAGE": image, "MSH_BASE_IMAGE": multiarch_base}

    shown = json.loads(inv(root, "config", "--json", env=env).stdout)["platform"]
    assert shown["value"] == f"linux/{FOREIGN}"
    assert shown["source"].startswith("the Nomad client client-1 (datacenter DC0")
    mine = json.loads(inv(root, "config", "--json", env={**env, "MSH_PLATFORM": f"linux/{NATIVE}"}).stdout)
    assert mine["platform"] == {"value": f"linux/{NATIVE}", "source": "env MSH_PLATFORM"}

    done = inv(root, "build", env=env)
    assert done.returncode == 0, done.stderr
    # the engine had the base for this machine: it is pulled for the clients' platform first, or the
    # classic builder would build on it and make an image of this machine's architecture
    assert f"the engine has {multiarch_base} for linux/{NATIVE}: pulling it for linux/{FOREIGN}" in done.stderr
    assert f"for linux/{FOREIGN} (the Nomad client client-1" in done.stderr
    version = (root / "version.txt").read_text().strip()
    built = docker_client.images.get(f"{registry.address}/{image}:v{version}")
    assert (built.attrs["Os"], built.attrs["Architecture"]) == ("linux", FOREIGN)

    again = inv(root, "build", "--platform", f"linux/{NATIVE}", env=env)
    assert again.returncode == 0, again.stderr
    rebuilt = docker_client.images.get(f"{registry.address}/{image}:v{version}")
    assert rebuilt.attrs["Architecture"] == NATIVE

    # without the base here, the builder pulls it itself: for the platform the build asks for
    docker_client.images.remove(multiarch_base, noprune=True)
    third = inv(root, "build", env=env)
    assert third.returncode == 0, third.stderr
    assert "pulling it for" not in third.stderr
    assert docker_client.images.get(f"{registry.address}/{image}:v{version}").attrs["Architecture"] == FOREIGN
    docker_client.images.remove(f"{registry.address}/{image}:v{version}", noprune=True)


def test_a_cross_build_without_emulation_says_what_to_install(tmp_path, multiarch_base, docker_engine_service,
                                                              registry):
    qemu = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}[FOREIGN]
    if Path(f"/proc/sys/fs/binfmt_misc/{qemu}").exists():
        unavailable(f"this machine emulates {FOREIGN} ({qemu} is registered in binfmt_misc): the test needs "
                    f"a machine without (echo 0 > /proc/sys/fs/binfmt_misc/{qemu} turns it off until a reboot)")
    root = _project(tmp_path / "project", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo built\n")
    done = inv(root, "build", "--platform", f"linux/{FOREIGN}",
               env={"DOCKER_HOST": docker_engine_service.base_url, "MSH_REGISTRY": registry.address,
                    "MSH_IMAGE": f"mlflow-cross-{uuid.uuid4().hex[:8]}", "MSH_BASE_IMAGE": multiarch_base,
                    "MSH_NOMAD_ADDR": "http://127.0.0.1:9"})
    assert done.returncode == 5, done.stderr
    assert "Traceback" not in done.stderr
    [line] = [l for l in done.stderr.splitlines() if l.startswith("error:")]
    assert "step 3/3 (RUN echo built)" in line
    assert f"the engine cannot run linux/{FOREIGN} programs (exec format error)" in line
    assert f"it runs linux/{NATIVE} and has no emulation for {FOREIGN}" in line
    assert "qemu-user-static" in done.stderr and f"tonistiigi/binfmt --install {FOREIGN}" in done.stderr


def test_several_platforms_are_refused_with_what_to_run_instead(tmp_path):
    root = _project(tmp_path / "project", "FROM scratch\n")
    done = inv(root, "build", "--dry-run", "--platform", "linux/amd64,linux/arm64",
               env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert done.returncode == 1
    [line] = [l for l in done.stderr.splitlines() if l.startswith("error:")]
    assert "names 2 platforms: the classic builder this project drives builds one per image" in line
    assert "docker buildx build --platform linux/amd64,linux/arm64 --push" in done.stderr


def test_a_platform_that_is_not_one_is_a_red_line(tmp_path):
    root = _project(tmp_path / "project", "FROM scratch\n")
    done = inv(root, "build", "--dry-run", "--platform", "linux/arm64/v8/extra",
               env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "'linux/arm64/v8/extra' is not a platform like linux/amd64" in done.stderr


def test_platform_names_and_which_client_runs_which_image():
    from mlflow_self_host.steps.image.platform import Platform

    assert [str(Platform.parse(p)) for p in ("amd64", "x86_64", "aarch64", "linux/arm64/v8", "armhf")] == \
        ["linux/amd64", "linux/amd64", "linux/arm64", "linux/arm64", "linux/arm/v7"]
    pi_zero = Platform.of_node({"cpu.arch": "arm", "kernel.arch": "armv6l", "kernel.name": "linux"})
    pi3_32bit = Platform.of_node({"cpu.arch": "arm", "kernel.arch": "armv7l", "kernel.name": "linux"})
    assert str(pi_zero) == "linux/arm/v6"
    assert Platform.parse("linux/arm/v6").runs_on(pi3_32bit) and not Platform.parse("linux/arm/v7").runs_on(pi_zero)
    assert not Platform.parse("linux/arm64").runs_on(pi3_32bit)
    assert Platform.of_image({"architecture": "arm64", "os": "linux", "variant": "v8"}) == Platform.parse("linux/arm64")
