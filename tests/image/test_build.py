"""`inv build`: the image's tag, labels, user, entrypoint and contents; the errors a user meets."""
from __future__ import annotations

import datetime
import shutil
import subprocess
import sys

import pytest

from mlflow_self_host.steps.image import build as image_build
from tests.services.mlflow_image import PROJECT_ROOT, clean_env

pytestmark = pytest.mark.slow


def inv(*args, cwd=PROJECT_ROOT, env=None):
    full_env = clean_env()
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=300)


def red_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def broken_project(tmp_path):
    """A copy of the project whose Dockerfile has a failing RUN step."""
    for name in ("tasks.py", "invoke.yaml", "version.txt"):
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo 'pip: no matching distribution' && exit 3\n")
    return tmp_path


def test_the_image_has_the_makefile_tag_labels_user_and_entrypoint(mlflow_image, docker_client):
    settings = mlflow_image.settings()
    image = docker_client.images.get(f"{settings.registry}/{settings.image}:v0.99")
    config = image.attrs["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.99"
    head = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert labels["org.opencontainers.image.revision"] == head.stdout.strip()
    created = datetime.datetime.strptime(labels["org.opencontainers.image.created"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(datetime.datetime.utcnow() - created) < datetime.timedelta(hours=6)
    assert labels["org.opencontainers.image.source"]
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["/usr/local/bin/mlflow-entrypoint"]
    assert "curl" not in " ".join(config["Healthcheck"]["Test"])
    assert "/health" in " ".join(config["Healthcheck"]["Test"])


def test_the_image_runs_mlflow_pinned_as_uid_1000_without_compilers(mlflow_image, docker_client):
    script = ("id -u; mlflow --version; command -v gcc cc make curl || echo no-tools; "
              "test -w /opt/mlflow && echo venv-writable || echo venv-readonly; "
              "stat -c %u /mnt/backend_store /mnt/artifacts")
    output = docker_client.containers.run(mlflow_image.ref(), entrypoint=["sh", "-c", script],
                                          network_mode="host", remove=True).decode()
    lines = output.split()
    assert lines[0] == "1000"
    assert "3.17.2" in output
    assert "no-tools" in output and "venv-readonly" in output
    assert lines[-2:] == ["1000", "1000"]


def test_a_rebuild_uses_the_cache_and_keeps_every_layer(mlflow_image, docker_client):
    from mlflow_self_host.core.version import Version

    before = docker_client.images.get(mlflow_image.ref()).attrs["RootFS"]["Layers"]
    again = image_build.build(mlflow_image.settings(), Version("0.99"))
    assert docker_client.images.get(again).attrs["RootFS"]["Layers"] == before


def test_a_failing_step_is_one_red_line_with_the_step_and_exit_5(broken_project, docker_engine_service, base_image,
                                                                 registry):
    result = inv("build", "--base-image", base_image, cwd=broken_project,
                 env={"DOCKER_HOST": docker_engine_service.base_url, "MSH_REGISTRY": registry.address,
                      "MSH_IMAGE": "broken-build"})
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
    [line] = red_lines(result.stderr)
    assert "step 3/3" in line and "returned a non-zero code: 3" in line
    assert "pip: no matching distribution" in result.stderr  # the step's own output is shown


def test_a_base_image_the_engine_cannot_get_names_it(docker_engine_service, mlflow_image):
    from mlflow_self_host.core.errors import UserError
    from mlflow_self_host.core.version import Version

    missing = "127.0.0.1:9/no-such-base:1"  # nothing listens on port 9: the pull fails at once
    with pytest.raises(UserError) as caught:
        image_build.build(mlflow_image.settings(base_image=missing, image="never-built"), Version("0.99"))
    assert caught.value.code == 5
    assert missing in caught.value.message and "--base-image" in caught.value.hint


def test_no_engine_is_one_red_line_and_exit_4(tmp_path):
    result = inv("build", env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert result.returncode == 4
    [line] = red_lines(result.stderr)
    assert "no Docker engine" in line and "no-docker.sock" in line


def test_dry_run_builds_nothing(docker_engine_service, docker_client):
    result = inv("build", "--dry-run", env={"DOCKER_HOST": docker_engine_service.base_url,
                                            "MSH_IMAGE": "dry-run-only"})
    assert result.returncode == 0, result.stderr
    assert "would change" in result.stderr and "dry-run-only:v" in result.stderr
    assert not [t for i in docker_client.images.list() for t in i.tags if "dry-run-only" in t]


def test_inv_build_labels_the_image_with_its_mlflow_schema_read_back_from_the_registry(
        mlflow_image, docker_engine_service, registry, base_image, docker_client):
    """The labels come from the image's own MLflow (its venv stage, read without starting it); a rebuild
    with nothing changed reuses that stage (its pip install is not run again)."""
    import time

    from mlflow_self_host.core.version import Version
    from mlflow_self_host.steps.image import publish

    settings = mlflow_image.settings()
    version = (PROJECT_ROOT / "version.txt").read_text().strip()
    env = {"DOCKER_HOST": docker_engine_service.base_url, "MSH_REGISTRY": registry.address,
           "MSH_IMAGE": settings.image, "MSH_BASE_IMAGE": base_image}
    started = time.monotonic()
    result = inv("build", "push", env=env)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    labels = docker_client.images.get(f"{settings.registry}/{settings.image}:v{version}").labels
    chain = labels["io.mlflow-self-host.schema-chain"].split()
    assert labels["io.mlflow-self-host.mlflow-version"] == "3.17.2"
    assert labels["io.mlflow-self-host.schema-head"] == "dc11669786a5" == chain[-1]
    assert len(chain) == 67 and len(set(chain)) == 67
    # the venv stage's pip install came from the cache, in the venv build and in the final build
    installs = [i for i, line in enumerate(result.stderr.splitlines()) if "RUN python3 -m venv /opt/mlflow" in line]
    assert len(installs) == 2, result.stderr
    lines = result.stderr.splitlines()
    assert all("Using cache" in lines[i + 1] for i in installs), result.stderr
    print(f"no-change `inv build push`: {took:.1f} s")
    read = publish.image_schema(settings, Version(version))
    assert (read.mlflow_version, read.head, len(read.order)) == ("3.17.2", "dc11669786a5", 67)
