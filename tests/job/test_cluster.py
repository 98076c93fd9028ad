"""Build for the cluster, not for the laptop: the clients' architectures decide what is built, the job is
constrained to the image's, and deploy refuses an image no client can run before it pushes or registers.

The double's clients report ``cpu.arch`` as Nomad's do (a Raspberry Pi: arm64); the stub images are this
machine's architecture (``NATIVE_ARCH``), which an arm64 Pi (``PI_ARCH``) cannot run.
"""
from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.steps.image import platform
from mlflow_self_host.steps.job import cluster
from mlflow_self_host.flows import deploy as job_deploy
from mlflow_self_host.core.settings import PROJECT_ROOT
from mlflow_self_host.core.version import read_version
from tests.job.conftest import NATIVE_ARCH, PI_ARCH, job_settings
from tests.services.mlflow_image import clean_env


def red_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_deploy_refuses_an_image_no_client_runs_before_the_push(pi_double, docker_engine_service, docker_client,
                                                                registry):
    """`inv deploy` of an image built for this machine (platform set to it) to a cluster of Raspberry Pis:
    exit 10, one line naming both architectures; the registry and Nomad are untouched."""
    cluster_ = pi_double.cluster
    version = read_version(PROJECT_ROOT).text
    image = f"mlflow-arch-{uuid.uuid4().hex[:8]}"
    stub = cluster_.images.image()  # this machine's architecture, like an image built on the laptop
    docker_client.api.tag(stub, f"{cluster_.images.registry}/{image}", f"v{version}")
    env = clean_env()
    env.update(cluster_.env(image=image, platform=f"linux/{NATIVE_ARCH}"))
    env["DOCKER_HOST"] = docker_engine_service.base_url
    try:
        done = subprocess.run([sys.executable, "-m", "invoke", "deploy", "--skip-host"], cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    finally:
        docker_client.api.remove_image(f"{cluster_.images.registry}/{image}:v{version}", noprune=True)
    assert done.returncode == 10, done.stderr
    assert "Traceback" not in done.stderr
    [line] = red_lines(done.stderr)
    assert f"is linux/{NATIVE_ARCH}" in line and f"client-1 {PI_ARCH}" in line
    assert "refusing before the push; nothing was pushed or registered" in line
    assert f"the platform setting is linux/{NATIVE_ARCH} (env MSH_PLATFORM): set it to linux/{PI_ARCH}" \
        in done.stderr  # the hint
    assert registry.tags(image) == []
    assert pi_double.registrations() == [] and pi_double.job() is None


def test_skip_build_refuses_before_the_register_when_the_registry_image_runs_nowhere(pi_double, capsys):
    settings = job_settings(pi_double)
    with pytest.raises(UserError) as caught:
        job_deploy.deploy(settings, "0.99", skip_host=True, skip_build=True, backup=False)
    assert caught.value.code == 10
    assert f"{pi_double.cluster.images.ref('0.99')} is linux/{NATIVE_ARCH}" in caught.value.message
    assert f"client-1 {PI_ARCH}" in caught.value.message and "refusing before the register" in caught.value.message
    assert f"`inv build --platform linux/{PI_ARCH} && inv push`" in caught.value.hint
    assert pi_double.registrations() == []
    assert "planning job" not in capsys.readouterr().err  # refused before the agent parsed or planned anything


def test_a_dry_run_warns_of_the_mismatch_and_registers_nothing(pi_double, capsys):
    result = job_deploy.deploy(job_settings(pi_double), "0.99", skip_host=True, skip_build=True, dry_run=True)
    assert result.status == "dry-run"
    err = capsys.readouterr().err
    assert f"is linux/{NATIVE_ARCH}, but the Nomad clients that can run the job are client-1 {PI_ARCH}" in err
    assert "${attr.cpu.arch}" in err  # the plan still shows the job, with its constraint
    assert pi_double.registrations() == []


def test_the_plan_shows_the_constraint_and_a_mixed_cluster_runs_the_job_on_the_images_arch(nomad_double):
    """An x86 mini PC and a Raspberry Pi with the same host volumes: the scheduler would prefer the Pi
    (fuller: binpack); the constraint from the image keeps the job on the node that can run it."""
    cluster_ = nomad_double.cluster
    nomad_double.add_node("pi4", cpu_arch=PI_ARCH, client_config=cluster_.client_config, memory_mb=2048)
    result = job_deploy.deploy(job_settings(nomad_double), "0.99", skip_host=True, skip_build=True, backup=False)
    assert result.status == "deployed"
    assert '+ LTarget: "${attr.cpu.arch}"' in result.diff and '+ Operand: "set_contains_any"' in result.diff
    assert f'+ RTarget: "{NATIVE_ARCH}"' in result.diff
    (alloc,) = nomad_double.running_allocs()
    assert alloc["NodeName"] == "client-1"


def test_the_clients_the_job_can_go_to_decide_the_platform(nomad_double):
    """Only the clients of the job's datacenters with a docker driver count, those with the job's host
    volumes first; with several architectures left, the host setting's node decides."""
    cluster_ = nomad_double.cluster
    nomad_double.add_node("pi4", cpu_arch=PI_ARCH)  # no host volumes: configure-host never ran there
    nomad_double.add_node("nuc", datacenter="DC1", client_config=cluster_.client_config)
    nomad_double.add_node("pi-nodocker", cpu_arch=PI_ARCH, client_config=cluster_.client_config, docker=False)
    settings = job_settings(nomad_double)
    nodes = cluster.read(settings)
    assert {n.name: n.arch for n in nodes} == {"client-1": NATIVE_ARCH, "pi4": PI_ARCH, "pi-nodocker": PI_ARCH}
    targets, why = cluster.targets(settings, nodes)
    assert [n.name for n in targets] == ["client-1"] and "with the job's host volumes" in why
    choice = platform.wanted(settings)
    assert str(choice) == f"linux/{NATIVE_ARCH}" and "client-1" in choice.source

    # the x86 client loses its volumes: the Pi and it are equal candidates, and the host setting decides
    cluster_.client_config.write_text(cluster_.client_config.read_text().split("# MLFLOW_BEGIN")[0] + "}\n")
    nomad_double.restart_agent(0.1)
    undecided = platform.wanted(settings)
    assert undecided.problem and f"client-1 {NATIVE_ARCH}, pi4 {PI_ARCH}" in undecided.problem
    with pytest.raises(UserError):
        undecided.single()
    assert str(platform.wanted(settings.with_overrides({"host": "pi4"}))) == f"linux/{PI_ARCH}"
    assert str(platform.wanted(settings.with_overrides({"platform": "linux/arm/v7"}))) == "linux/arm/v7"


def test_no_nomad_answer_builds_for_this_machine():
    from tests.services import free_port

    settings = job_settings(f"http://127.0.0.1:{free_port()}")
    choice = platform.wanted(settings)
    assert choice.platforms == [platform.this_machine()]
    assert choice.source.startswith("this machine: the Nomad clients could not be read (cannot reach")


def test_a_token_without_node_read_deploys_with_the_constraint_only(nomad_double, capsys):
    from tests.doubles.nomad import ALL_CAPS

    nomad_double.acl_tokens = {"jobs-only": {"default": ALL_CAPS}}
    settings = job_settings(nomad_double, env={"NOMAD_TOKEN": "jobs-only"})
    assert job_deploy.deploy(settings, "0.99", skip_host=True, skip_build=True, backup=False).status == "deployed"
    assert "give the token node:read" in capsys.readouterr().err
    task = nomad_double.job()["TaskGroups"][0]["Tasks"][0]
    assert task["Constraints"][0]["RTarget"] == NATIVE_ARCH  # from the registry's image, not from the clients


def test_without_node_read_nomad_refuses_the_other_arch_by_the_constraint(pi_double):
    """deploy cannot compare (the token may not read nodes): the plan's placement failure says it."""
    from tests.doubles.nomad import ALL_CAPS

    pi_double.acl_tokens = {"jobs-only": {"default": ALL_CAPS}}
    settings = job_settings(pi_double, env={"NOMAD_TOKEN": "jobs-only"})
    with pytest.raises(UserError) as caught:
        job_deploy.deploy(settings, "0.99", skip_host=True, skip_build=True, backup=False)
    assert caught.value.code == 10
    assert f"constraint ${{attr.cpu.arch}} set_contains_any {NATIVE_ARCH} filtered 1 node" in caught.value.message
    assert "no client runs the image's architecture" in caught.value.hint
    assert pi_double.registrations() == []
