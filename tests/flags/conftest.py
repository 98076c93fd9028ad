"""What the flag tests share: `inv` as a user runs it, and a project of the user's own to run it in.

``inv(*args, cwd=, env=, expect=, stdin=)`` runs ``python -m invoke ARGS`` in a new session (no
controlling terminal, so a password prompt reads stdin, as it does when piped) and asserts the exit
code by its number and that no traceback leaked. ``make_project`` copies the files a user's checkout
has (tasks.py, invoke.yaml, version.txt, the job file, and docker/ or another build context) into a
folder of its own, optionally as a git repository with one commit.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.host.conftest import agent_health, nomad_host, nomad_user, password_sudo_server  # noqa: F401 - fixtures
from tests.host.conftest import reachable_tmp  # noqa: F401 - the fixture
from tests.job.conftest import nomad_double  # noqa: F401 - the fixture
from tests.services.mlflow_image import clean_env
from tests.services.project_repo import git

ROOT = Path(__file__).resolve().parents[2]
STUB_CONTEXT = ROOT / "tests" / "services" / "stub_image"  # a build context with the MLflow image's contract


def inv(*args: str, cwd: Path = ROOT, env: dict | None = None, expect: int = 0, stdin: str | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, env=env if env is not None else clean_env(),
                          input=stdin if stdin is not None else "", capture_output=True, text=True, timeout=timeout,
                          start_new_session=True)
    assert done.returncode == expect, (f"inv {' '.join(args)} → exit {done.returncode}, expected {expect}\n"
                                       f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    assert "Traceback" not in done.stderr, done.stderr
    return done


def errors(done: subprocess.CompletedProcess) -> list[str]:
    """The red lines of a run (`error: ...`)."""
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


def make_project(root: Path, version: str = "0.99", docker: Path | None = ROOT / "docker",
                 repo: bool = False) -> Path:
    """A user's project folder: the menu, the settings, version.txt, the job file and a build context
    (``docker``: the project's own, the stub's, or None)."""
    root.mkdir(parents=True)
    for name in ("tasks.py", "invoke.yaml"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "nomad", root / "nomad")
    if docker is not None:
        shutil.copytree(docker, root / "docker")
    (root / "version.txt").write_text(f"{version}\n")
    if repo:
        git(root, "init", "--quiet", "--initial-branch=main")
        git(root, "config", "user.name", "Flag Tester")
        git(root, "config", "user.email", "flags@example.com")
        git(root, "add", "--all")
        git(root, "commit", "--quiet", "--message", "the project")
    return root


def set_version(project: Path, version: str) -> None:
    (project / "version.txt").write_text(f"{version}\n")


def without_host_volumes(cluster) -> None:
    """The cluster's client.hcl loses the MLflow block (someone's edit) and Nomad is restarted: the running
    allocation keeps running, but nothing new can be placed on the client."""
    text = cluster.client_config.read_text()
    cluster.client_config.write_text(text.split("# MLFLOW_BEGIN")[0] + "}\n")
    cluster.nomad.restart_agent(0.1)


@pytest.fixture
def derived_base(docker_client, base_image, tmp_path):
    """An image built on the session's base with one more layer (a marker file): an image built with
    ``--base-image`` on it carries that layer, one built on the default base does not."""
    context = tmp_path / "derived-base"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base_image}\nRUN echo {uuid.uuid4().hex} > /flags-base-marker\n")
    tag = f"msh-flags-base:{uuid.uuid4().hex[:8]}"
    docker_client.images.build(path=str(context), tag=tag, rm=True, forcerm=True, network_mode="host")
    yield tag
    remove_tags(docker_client, tag)


def layers(docker_client, ref: str) -> list[str]:
    return docker_client.images.get(ref).attrs["RootFS"]["Layers"]


def remove_tags(docker_client, *refs: str) -> None:
    """Untag what a test built (its layers stay as build cache)."""
    import docker

    for ref in refs:
        try:
            docker_client.images.remove(ref, noprune=True)
        except docker.errors.APIError:
            pass


def host_env(cluster, ssh_server, tmp_path: Path, known_hosts: Path, **settings) -> dict:
    """`inv deploy` (and release, migrate) with its host step on the SSH test host, whose client.hcl and
    volume folders are the cluster's (configure-host finds them in place, so Nomad is not restarted; if it
    were, the restart command restarts the double's agent)."""
    restart = tmp_path / "restart-nomad.sh"
    restart.write_text(f"#!/bin/sh\necho restarted >> {tmp_path / 'restarts.log'}\nexec curl -fsS -X POST "
                       f"-d '{{\"seconds\": 1}}' {cluster.nomad.address}/_double/agent/restart\n")
    os.chmod(restart, 0o755)
    env = clean_env()
    env.update(cluster.env(backups_path=str(tmp_path / "backups"), **settings))
    env.update(ssh_server.env(), MSH_KNOWN_HOSTS=str(known_hosts),
               MSH_NOMAD_CLIENT_CONFIG=str(cluster.client_config), MSH_JOB_DIR=str(tmp_path / "jobs" / "mlflow"),
               MSH_FOLDER_OWNER="nomad", MSH_FOLDER_GROUP="root", MSH_NOMAD_RESTART_COMMAND=str(restart),
               MSH_NOMAD_HEALTH_TIMEOUT="10")
    return env


def unknown_key(tmp_path: Path) -> Path:
    """A known_hosts path that does not exist yet: the test host's key is unknown there."""
    return tmp_path / "ssh" / f"known_hosts-{uuid.uuid4().hex[:6]}"


def recorded(known_hosts: Path, server) -> bool:
    """known_hosts holds the server's key, as ssh writes it for a port other than 22."""
    return known_hosts.read_text() == f"[127.0.0.1]:{server.port} {server.host_public_key}\n"


def refused_as_unknown(done, server) -> None:
    """One red line: the host key is unknown, and the hint names the flag."""
    (line,) = errors(done)
    assert line.startswith(f"error: SSH host key of [127.0.0.1]:{server.port} is unknown"), line
    assert "--accept-host-key" in done.stderr
