"""The `inv` command as users run it: the task list, clear errors, exit codes, no tracebacks."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import clean_env

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["build", "push", "pushlatest", "configure-host", "deploy", "dns", "release", "version", "config",
         "up", "down", "smoke", "status", "logs", "rollback", "doctor", "backup", "restore", "migrate", "migrate-store", "lock",
         "deps", "init"]


def inv(*args, cwd=ROOT, env=None):
    full_env = clean_env()
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def project_copy(tmp_path):
    """The project's files in a temp folder, to break them without touching the checkout."""
    for name in ("tasks.py", "invoke.yaml", "version.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_every_task_is_listed_with_help():
    result = inv("--list")
    assert result.returncode == 0
    for name in TASKS:
        line = next((l for l in result.stdout.splitlines() if l.strip().startswith(name + " ")), None)
        assert line is not None and len(line.split()) > 1, name


def test_version_prints_version_txt(project_copy):
    (project_copy / "version.txt").write_text("1.4.2\n")
    result = inv("version", cwd=project_copy)
    assert (result.returncode, result.stdout.strip()) == (0, "1.4.2")


def test_a_bad_version_txt_is_one_red_line_and_exit_2(project_copy):
    (project_copy / "version.txt").write_text("v1.x\n")
    result = inv("version", cwd=project_copy)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "version.txt" in lines[0] and "'v1.x'" in lines[0]


def test_debug_shows_the_traceback(project_copy):
    (project_copy / "version.txt").write_text("nope\n")
    result = inv("--debug", "version", cwd=project_copy)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_config_shows_sources_and_masks_secrets(project_copy):
    result = inv("config", "--json", cwd=project_copy,
                 env={"MSH_DOMAIN": "ml.home", "NOMAD_TOKEN": "tok-123456", "MSH_REGISTRY_PASSWORD": "hunter2"})
    assert result.returncode == 0, result.stderr
    assert "tok-123456" not in result.stdout and "hunter2" not in result.stdout
    import json

    data = json.loads(result.stdout)
    assert data["domain"] == {"value": "ml.home", "source": "env MSH_DOMAIN"}
    assert data["nomad_token"]["source"] == "env NOMAD_TOKEN"
    assert data["memory"] == {"value": 512, "source": "invoke.yaml"}


def test_a_bad_setting_in_the_environment_is_one_red_line(project_copy):
    result = inv("config", cwd=project_copy, env={"MSH_CPU": "fast"})
    assert result.returncode == 2 and "MSH_CPU" in result.stderr and "Traceback" not in result.stderr


def test_listing_tasks_imports_nothing_heavy():
    code = ("import sys, invoke.program; sys.argv=['inv','--list'];"
            "from invoke import Program, Collection; import invoke.main as m;\n"
            "try:\n    m.program.run(['inv','--list'], exit=False)\nexcept SystemExit: pass\n"
            "heavy=[n for n in ('docker','fabric','nomad','mlflow','rich','requests','paramiko') if n in sys.modules];"
            "print('HEAVY:' + ','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY:"


def test_a_bad_number_flag_is_one_red_line_naming_the_flag(project_copy):
    logs = inv("logs", "--lines", "many", cwd=project_copy)
    assert logs.returncode == 2 and "Traceback" not in logs.stderr
    assert [l for l in logs.stderr.splitlines() if l.startswith("error:")] == \
        ["error: --lines 'many' is not a number of lines"]
    up = inv("up", "--port", "http", cwd=project_copy)
    assert up.returncode == 2 and "Traceback" not in up.stderr
    assert "error: flag --port: local_port must be a whole number, not 'http'" in up.stderr
