"""build, push and pushlatest through `inv`, on the test engine and registry, with a small build context of
the project's own (one RUN step that stamps the time it ran): --no-cache, --base-image, and pushlatest
building a missing image first, push's exit 6."""
from __future__ import annotations

import uuid

import pytest

from tests.flags.conftest import errors, inv, layers, make_project, remove_tags
from tests.services.mlflow_image import clean_env

STAMPED = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN echo {token} > /build-token && date +%s%N > /built-at
"""


@pytest.fixture
def small_project(tmp_path, docker_engine_service, registry, base_image, docker_client):
    """(project, env, ref): a project whose docker/ holds a one-step Dockerfile, its image name of its own."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(STAMPED.replace("{token}", uuid.uuid4().hex))
    project = make_project(tmp_path / "project", docker=context)
    name = f"flags-image-{uuid.uuid4().hex[:8]}"
    env = clean_env()
    env.update(DOCKER_HOST=docker_engine_service.base_url, MSH_REGISTRY=registry.address, MSH_IMAGE=name,
               MSH_BASE_IMAGE=base_image, MSH_NOMAD_ADDR="http://127.0.0.1:9")  # no Nomad: this machine's platform
    ref = f"{registry.address}/{name}:v0.99"
    yield project, env, ref
    remove_tags(docker_client, ref, f"{registry.address}/{name}:latest")


def test_build_no_cache_runs_every_step_again(small_project, docker_client, base_image):
    project, env, ref = small_project
    inv("build", cwd=project, env=env)
    built = layers(docker_client, ref)
    assert built[:len(layers(docker_client, base_image))] == layers(docker_client, base_image)

    cached = inv("build", cwd=project, env=env)
    assert "Using cache" in cached.stderr  # the engine's build log: the RUN step was not run again
    assert layers(docker_client, ref) == built

    fresh = inv("build", "--no-cache", cwd=project, env=env)
    assert "Using cache" not in fresh.stderr
    rebuilt = layers(docker_client, ref)
    assert rebuilt[:-1] == built[:-1] and rebuilt[-1] != built[-1]  # the RUN step ran again: a new layer


def test_build_base_image_flag_overrides_the_setting(small_project, docker_client, derived_base):
    project, env, ref = small_project  # MSH_BASE_IMAGE names the session's base
    done = inv("build", "--base-image", derived_base, cwd=project, env=env)
    assert f"from {derived_base}" in done.stderr
    base = layers(docker_client, derived_base)
    assert layers(docker_client, ref)[:len(base)] == base  # the flag's image, its marker layer included


def test_pushlatest_builds_a_missing_image_first_and_push_needs_one(small_project, docker_client, registry):
    project, env, ref = small_project
    name = env["MSH_IMAGE"]

    dry = inv("pushlatest", "--dry-run", cwd=project, env=env)
    assert "the image is not built yet" in dry.stderr and "dry run: nothing was changed" in dry.stderr
    assert not docker_client.images.list(name=ref.rsplit(":", 1)[0]) and registry.tags(name) == []

    missing = inv("push", "--dry-run", cwd=project, env=env, expect=6)  # push never builds
    assert errors(missing) == [f"error: {ref} is not built yet"]

    done = inv("pushlatest", cwd=project, env=env)
    assert f"{ref} is not built yet: building it" in done.stderr
    image = docker_client.images.get(ref)
    assert registry.tags(name) == ["latest"]  # the version's tag stays local: `inv push` sends it
    assert f"{registry.address}/{name}@{registry.digest(name, 'latest')}" in image.attrs["RepoDigests"]

    dry = inv("push", "--dry-run", cwd=project, env=env)
    assert "would change" in dry.stderr and registry.tags(name) == ["latest"]

