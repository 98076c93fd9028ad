"""`inv release` as a user runs it, for real and fast: a project (a git repository) whose build context is the
stub image (the MLflow image's contract, no MLflow), built on the test engine, pushed to the test registry
and deployed to the Nomad double. --dry-run, --set, --allow-dirty, --no-deploy, --skip-host and
--accept-host-key, each with its effect."""
from __future__ import annotations

import re
import uuid

from tests.doubles.nomad import NomadDouble
from tests.flags.conftest import STUB_CONTEXT, errors, host_env, inv, make_project, recorded, remove_tags, unknown_key
from tests.services.mlflow_image import clean_env
from tests.services.project_repo import git


def tags(repo) -> list[str]:
    return git(repo, "tag", "--list").split()


def running_image(double) -> str:
    (alloc,) = double.running_allocs()
    return double.container_of(alloc["ID"]).attrs["Config"]["Image"]


def test_release_no_deploy_with_set_allow_dirty_and_a_dry_run_first(tmp_path, docker_engine_service, registry,
                                                                     base_image, docker_client):
    repo = make_project(tmp_path / "project", docker=STUB_CONTEXT, repo=True)
    name = f"flags-release-{uuid.uuid4().hex[:8]}"
    with NomadDouble() as nomad:  # where a deploy would go; --no-deploy must not
        env = clean_env()
        env.update(DOCKER_HOST=docker_engine_service.base_url, MSH_REGISTRY=registry.address, MSH_IMAGE=name,
                   MSH_BASE_IMAGE=base_image, MSH_NOMAD_ADDR=nomad.address)
        try:
            dry = inv("release", "--set", "2.0", "--no-deploy", "--dry-run", cwd=repo, env=env)
            assert "0.99 → 2.0" in dry.stderr and f"{registry.address}/{name}:latest" in dry.stderr
            assert "nothing was changed" in dry.stderr
            assert (repo / "version.txt").read_text() == "0.99\n" and tags(repo) == [] and registry.tags(name) == []

            (repo / "notes.txt").write_text("work in progress\n")  # untracked: a dirty tree
            done = inv("release", "--set", "2.0", "--no-deploy", "--allow-dirty", cwd=repo, env=env)
        finally:
            remove_tags(docker_client, f"{registry.address}/{name}:v2.0", f"{registry.address}/{name}:latest")
        assert nomad.registrations() == []  # no deploy: nothing registered, and no deploy lock taken
        assert not [path for method, path, query, body in nomad.requests if path.startswith(("/v1/var", "/v1/job"))]
    assert (repo / "version.txt").read_text() == "2.0\n"
    assert git(repo, "log", "-1", "--format=%s").strip() == "Release v2.0"
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["version.txt"]
    assert git(repo, "cat-file", "-t", "v2.0").strip() == "tag"  # annotated, on the release commit
    assert git(repo, "rev-parse", "v2.0^{commit}") == git(repo, "rev-parse", "HEAD")
    assert git(repo, "status", "--porcelain") == "?? notes.txt\n"  # the user's file: left as it was
    assert registry.tags(name) == ["latest", "v2.0"]
    assert registry.digest(name, "latest") == registry.digest(name, "v2.0")
    assert "notdeployed" in re.sub(r"[│┃\s]", "", done.stdout)


def test_release_deploys_with_skip_host_and_accept_host_key(nomad_double, ssh_server, nomad_user, tmp_path,
                                                            docker_engine_service, base_image, docker_client):
    """Three releases, the SSH host's key unknown: --skip-host never connects; without it the deploy step is
    refused after the push (the release stands, exit 1, the command that finishes it named); with
    --accept-host-key the key is recorded and the release deploys."""
    cluster = nomad_double.cluster
    repo = make_project(tmp_path / "project", docker=STUB_CONTEXT, repo=True)
    name = f"flags-release-{uuid.uuid4().hex[:8]}"
    known_hosts = unknown_key(tmp_path)
    env = host_env(cluster, ssh_server, tmp_path, known_hosts, image=name)
    env.update(DOCKER_HOST=docker_engine_service.base_url, MSH_BASE_IMAGE=base_image)
    image = f"{cluster.images.registry}/{name}"
    try:
        skipped = inv("release", "--bump", "minor", "--skip-host", cwd=repo, env=env)
        assert running_image(nomad_double) == f"{image}:v0.100"
        assert not known_hosts.exists() and not (tmp_path / "jobs").exists()  # no SSH at all
        assert "v0.100" in skipped.stdout

        refused = inv("release", "--bump", "minor", cwd=repo, env=env, expect=1)
        (line,) = errors(refused)  # the deploy's host step, after the push: the release stands
        assert line.startswith("error: v0.101 is released (committed, tagged, pushed) but the deploy failed: SSH "
                               f"host key of [127.0.0.1]:{ssh_server.port} is unknown")
        assert "--accept-host-key" in refused.stderr and "then run: inv deploy --skip-build" in refused.stderr
        assert tags(repo) == ["v0.100", "v0.101"] and (repo / "version.txt").read_text() == "0.101\n"
        assert running_image(nomad_double) == f"{image}:v0.100" and not known_hosts.exists()

        inv("release", "--bump", "minor", "--accept-host-key", cwd=repo, env=env)
        assert recorded(known_hosts, ssh_server)
        assert running_image(nomad_double) == f"{image}:v0.102"
        assert (tmp_path / "jobs" / "mlflow" / "mlflow.nomad.hcl").exists()  # configure-host ran over SSH
        assert tags(repo) == ["v0.100", "v0.101", "v0.102"] and git(repo, "status", "--porcelain") == ""
    finally:
        remove_tags(docker_client, *(f"{image}:{tag}" for tag in ("v0.100", "v0.101", "v0.102", "latest")))


def _dry_run_env(registry, **more) -> dict:
    """Nomad at a closed port (nothing listens), no Docker engine, the test registry (which lacks the tag)."""
    from tests.services import free_port

    env = clean_env()
    env.update(NOMAD_ADDR=f"http://127.0.0.1:{free_port()}", DOCKER_HOST=f"tcp://127.0.0.1:{free_port()}",
               MSH_REGISTRY=registry.address, MSH_IMAGE=f"flags-release-{uuid.uuid4().hex[:8]}", **more)
    return env


def test_release_dry_run_without_a_reachable_nomad_shows_every_step_and_names_the_one_that_cannot_read(
        tmp_path, registry):
    repo = make_project(tmp_path / "project", docker=STUB_CONTEXT, repo=True)
    env = _dry_run_env(registry)
    dry = inv("release", "--bump", "minor", "--skip-host", "--dry-run", cwd=repo, env=env, expect=1)
    lines = [line.split()[0] for line in dry.stderr.splitlines() if line.startswith("  ")]
    assert lines[:7] == ["write", "commit", "tag", "build", "push", "push", "deploy"], dry.stderr
    image = f"{registry.address}/{env['MSH_IMAGE']}"
    assert f"{image}:v0.100" in dry.stderr and f"{image}:latest" in dry.stderr
    assert "no build: pushed by the release" in dry.stderr  # the deploy's image step, in its dry form
    stops = [line for line in dry.stderr.splitlines() if "would stop here" in line]
    assert stops == ["✗ reads before any change: would stop here (the error below)",
                     "✗ job: would stop here (the error below)"] and env["NOMAD_ADDR"] in dry.stderr
    (line,) = errors(dry)  # the dry run ends with that step's error, its exit code
    assert env["NOMAD_ADDR"].split("//")[1] in line
    assert (repo / "version.txt").read_text() == "0.99\n" and tags(repo) == [] and registry.tags(env["MSH_IMAGE"]) == []


def test_release_dry_run_checks_the_deploy_url(tmp_path, registry):
    repo = make_project(tmp_path / "project", docker=STUB_CONTEXT, repo=True)
    env = _dry_run_env(registry, MSH_DEPLOY_URL="https://tracking.example.org/mlflow")
    dry = inv("release", "--set", "1.0", "--skip-host", "--dry-run", cwd=repo, env=env, expect=1)
    (deploy,) = [line for line in dry.stderr.splitlines() if line.lstrip().startswith("deploy ")]
    assert "then check https://tracking.example.org/mlflow/" in deploy and "mlflow.lan" not in dry.stderr
