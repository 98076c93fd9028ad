"""Short flags agree across tasks: one letter, one long flag, in every task (`-d` is --dry-run wherever a
task has a dry run), as `inv --help TASK` shows them to the user."""
from __future__ import annotations

import re
from collections import defaultdict

from tests.flags.conftest import ROOT, inv

FLAG = re.compile(r"^\s+-(\w)(?: \w+)?, --([\w-]+)", re.MULTILINE)


def task_names() -> list[str]:
    import json

    return [t["name"] for t in json.loads(inv("--list", "--list-format", "json").stdout)["tasks"]]


def short_flags(task: str) -> dict[str, str]:
    """{letter: long flag} as `inv --help TASK` lists them."""
    return dict(FLAG.findall(inv("--help", task, cwd=ROOT).stdout))


def test_no_short_flag_means_two_different_long_flags_across_tasks():
    tasks = task_names()
    assert {"up", "backup", "release", "deploy", "configure-host", "dns"} <= set(tasks), tasks
    meanings: dict[str, set[str]] = defaultdict(set)
    where: dict[str, list[str]] = defaultdict(list)
    for task in tasks:
        for letter, long in short_flags(task).items():
            meanings[letter].add(long)
            where[letter].append(f"{task} --{long}")
    clashes = {letter: where[letter] for letter, longs in meanings.items() if len(longs) > 1}
    assert not clashes, clashes
    assert meanings["d"] == {"dry-run"} and meanings["a"] == {"accept-host-key"}


def test_up_and_backup_take_d_for_the_dry_run():
    up = short_flags("up")
    assert up["d"] == "dry-run" and up["D"] == "docker" and "r" not in up
    assert short_flags("backup")["d"] == "dry-run"
    assert short_flags("release")["A"] == "allow-dirty" and short_flags("deploy")["a"] == "accept-host-key"


def test_d_is_a_dry_run_through_inv(tmp_path):
    """`inv up -d` plans and starts nothing (it used to require the Docker engine: exit 4 without one)."""
    from tests.flags.conftest import make_project
    from tests.services import free_port, port_open
    from tests.services.mlflow_image import clean_env

    project = make_project(tmp_path / "project")
    env = {**clean_env(), "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock", "MSH_CACHE_DIR": str(tmp_path / "cache")}
    port = free_port()
    done = inv("up", "-d", "-p", str(port), cwd=project, env=env)
    assert "dry run: nothing was changed" in done.stderr and f"port {port}" in done.stderr
    assert not port_open(port) and not (project / "data" / "mlflow-server.pid").exists()
