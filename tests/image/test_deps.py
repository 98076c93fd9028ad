"""The image's locked dependencies: `inv deps` and what the build does with the lock.

The image installs exactly docker/requirements.lock (every file checked against its hash): its
installed packages are the lock's, two builds of one commit give the same set, and a file whose hash
does not match fails the build with one clear line.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import pytest

from mlflow_self_host.steps.image import deps
from tests.services import project_repo
from tests.services.mlflow_image import PROJECT_ROOT, clean_env

LOCK = PROJECT_ROOT / "docker" / "requirements.lock"


def inv(*args, cwd=PROJECT_ROOT, env=None, timeout=600):
    full_env = clean_env()
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


VENV_TOOLS = {"pip", "setuptools", "wheel"}  # what `python -m venv` put there, not the lock's


def installed(docker_client, image: str) -> dict[str, str]:
    out = docker_client.containers.run(image, entrypoint=["/opt/mlflow/bin/pip", "list", "--format=freeze"],
                                       remove=True, network_mode="host").decode()
    pairs = (line.split("==") for line in out.split() if "==" in line)
    return {name.lower().replace("_", "-"): version for name, version in pairs
            if name.lower() not in VENV_TOOLS}


def locked_for(docker_client, image: str) -> dict[str, str]:
    """The lock's pins that apply to the image's Python (the lock forks by Python version)."""
    version = docker_client.containers.run(
        image, entrypoint=["/opt/mlflow/bin/python", "-c", "import platform; print(platform.python_version())"],
        remove=True, network_mode="host").decode().strip()
    from packaging.markers import Marker

    out = {}
    for key, pinned in deps.pins(LOCK.read_text()).items():
        name, _, marker = key.partition(" ; ")
        if not marker or Marker(marker).evaluate({"python_full_version": version,
                                                  "python_version": ".".join(version.split(".")[:2]),
                                                  "sys_platform": "linux", "platform_system": "Linux",
                                                  "implementation_name": "cpython",
                                                  "platform_python_implementation": "CPython",
                                                  "os_name": "posix", "platform_machine": os.uname().machine}):
            out[name] = pinned
    return out


def test_every_locked_package_is_pinned_with_hashes():
    text = LOCK.read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n\n", 1)[1])
    pinned = [e for e in entries if "==" in e.splitlines()[0]]
    assert len(pinned) == len(deps.pins(text)) > 50
    assert all("--hash=sha256:" in e for e in pinned)
    assert "mlflow" in {k.split(" ;")[0] for k in deps.pins(text)}  # the no-deps part is locked too


@pytest.mark.slow
def test_the_image_installs_exactly_the_lock_and_labels_its_digest(mlflow_image, docker_client):
    ref = mlflow_image.ref()
    assert installed(docker_client, ref) == locked_for(docker_client, ref)
    label = docker_client.images.get(ref).labels["io.mlflow-self-host.requirements-lock"]
    assert label == "sha256:" + hashlib.sha256(LOCK.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_same_commit_built_again_without_cache_installs_the_same_packages(mlflow_image, docker_client,
                                                                             base_image):
    again, _ = docker_client.images.build(path=str(PROJECT_ROOT / "docker"), target="venv", nocache=True, rm=True,
                                          forcerm=True, network_mode="host", buildargs={"BASE_IMAGE": base_image})
    try:
        assert installed(docker_client, again.id) == installed(docker_client, mlflow_image.ref())
    finally:
        docker_client.images.remove(again.id, force=True)


@pytest.mark.slow
def test_a_file_that_does_not_match_its_hash_fails_the_build_with_one_line(tmp_path, mlflow_image, docker_engine_service):
    repo = project_repo.make(tmp_path / "project")
    lock = repo / "docker" / "requirements.lock"
    text = lock.read_text()
    entry = re.search(r"\n([a-z][^\n]*==[^\n]*\\\n(?:\s+--hash=[^\n]*\n)+)", text).group(1)
    tampered = re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, entry)
    lock.write_text(text.replace(entry, tampered))  # no file of that package matches its hashes now
    env = {f"MSH_{k.upper()}": str(v) for k, v in mlflow_image.settings_overrides.items()}
    env.update(DOCKER_HOST=docker_engine_service.base_url, MSH_IMAGE=f"{env['MSH_IMAGE']}-tampered")
    built = inv("build", cwd=repo, env=env)
    errors = [line for line in built.stderr.splitlines() if line.startswith("error:")]
    assert built.returncode == 5, built.stderr[-3000:]
    assert len(errors) == 1 and "DO NOT MATCH THE HASHES" in built.stderr
    assert "Traceback" not in built.stderr


def test_uv_is_told_never_to_download_a_python(tmp_path, monkeypatch):
    """Where a Python 3.10 is at hand uv downloads none anyway, so the mirror test below passes there without the
    flag; this one holds everywhere: the command deps runs says it."""
    seen = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(deps.subprocess, "run", fake_run)
    deps._compile(tmp_path / "requirements.txt", tmp_path / "requirements.lock", upgrade=False, no_deps=False)
    (cmd,) = seen
    assert "--no-python-downloads" in cmd and cmd[cmd.index("--python-version") + 1] == deps.PYTHON_FROM


@pytest.fixture
def python_mirror():
    """A local stand-in for the mirror uv downloads managed Pythons from (``UV_PYTHON_INSTALL_MIRROR``), which
    answers 404 and keeps the paths asked for: the lock must never wait for a Python download (a check that bites
    on a machine without a Python 3.10, like the CI's; the test above holds everywhere)."""
    import http.server
    import threading

    asked = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield {"UV_PYTHON_INSTALL_MIRROR": f"http://127.0.0.1:{server.server_port}/pbs"}, asked
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow  # uv resolves against the package index
def test_deps_reports_what_a_new_requirement_adds_and_check_refuses_a_stale_lock(tmp_path, python_mirror):
    mirror, asked = python_mirror
    repo = project_repo.make(tmp_path / "project")
    stale = inv("deps", "--check", cwd=repo, env=mirror)
    assert stale.returncode == 0, stale.stderr[-2000:]  # the committed lock is what the inputs give
    assert asked == []  # uv locked for Python 3.10 and later with the interpreter it found: no download
    with open(repo / "docker" / "requirements.txt", "a") as fh:
        fh.write("tabulate==0.9.0\n")
    refused = inv("deps", "--check", cwd=repo)
    assert refused.returncode == 1 and "+ tabulate==0.9.0" in refused.stderr
    assert "docker/requirements.lock is not what" in refused.stderr
    before = (repo / "docker" / "requirements.lock").read_bytes()
    dry = inv("deps", "--dry-run", cwd=repo)
    assert dry.returncode == 0 and (repo / "docker" / "requirements.lock").read_bytes() == before
    written = inv("deps", cwd=repo)
    assert written.returncode == 0 and "+ tabulate==0.9.0" in written.stderr
    assert deps.pins((repo / "docker" / "requirements.lock").read_text())["tabulate"] == "0.9.0"
    assert "changed" in written.stderr and inv("deps", cwd=repo).stderr.count("no change") == 1
