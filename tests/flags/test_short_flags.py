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


def test_a_short_flag_whose_meaning_moved_where_the_new_one_would_quietly_do_less_is_refused_for_now(tmp_path):
    """`inv backup -d` was --download: a cron line would now take no backup, so the letter is refused (exit 2),
    saying both long flags; nothing is backed up or contacted."""
    done = inv("backup", "-d", cwd=ROOT, expect=2)
    assert "in `inv backup` it was --download (now -x)" in done.stderr and "--dry-run or --download" in done.stderr
    done = inv("configure-host", "-a", cwd=ROOT, expect=2)
    assert "it was --ansible" in done.stderr and "Traceback" not in done.stderr


def test_a_flag_invoke_cannot_parse_exits_2_like_a_bad_value():
    missing = inv("up", "--port", cwd=ROOT, expect=2)
    assert "needed value" in missing.stderr
    unknown = inv("build", "--no-such-flag", cwd=ROOT, expect=2)
    assert "--no-such-flag" in unknown.stderr
