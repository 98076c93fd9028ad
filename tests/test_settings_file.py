"""settings.yaml, the user's own file: over invoke.yaml's defaults, under the environment and flags, named as
the source in `inv config`; a secret or a key that is not a setting refused with one red line (exit 2)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_self_host.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def inv(*args, cwd, env=None, expect=0):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MSH_", "NOMAD_", "PIHOLE_"))}
    full_env.update(env or {})
    done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == expect, f"inv {' '.join(args)} → {done.returncode}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    return done


@pytest.fixture
def project(tmp_path):
    for name in ("tasks.py", "invoke.yaml", "version.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def red_lines(done):
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


def test_settings_yaml_is_over_the_defaults_and_named_as_the_source(project):
    (project / "settings.yaml").write_text(
        "mlflow:\n  image:\n    registry: 10.0.0.5:5000\n  dns:\n    domain: ml.home\n  cpu: 300\n"
        "  nomad:\n    nomad_addr: http://nomad.home:4646\n")
    data = json.loads(inv("config", "--json", cwd=project, env={"MSH_PLATFORM": "linux/amd64",
                                                                 "MSH_SERVICE_PROVIDER": "nomad"}).stdout)
    assert data["registry"] == {"value": "10.0.0.5:5000", "source": "settings.yaml"}
    assert data["domain"] == {"value": "ml.home", "source": "settings.yaml"}
    assert data["cpu"] == {"value": 300, "source": "settings.yaml"}  # a key straight under mlflow:
    assert data["memory"] == {"value": 512, "source": "invoke.yaml"}  # not set there: the default
    table = inv("config", cwd=project, env={"MSH_PLATFORM": "linux/amd64", "MSH_SERVICE_PROVIDER": "nomad"}).stdout
    assert any("registry" in line and "settings.yaml" in line for line in table.splitlines())


def test_the_environment_and_flags_are_over_settings_yaml(project):
    (project / "settings.yaml").write_text("mlflow:\n  dns:\n    domain: ml.home\n  nomad:\n"
                                           "    nomad_addr: http://nomad.home:4646\n  local:\n    local_port: 5001\n")
    env = {"MSH_DOMAIN": "ml.other", "NOMAD_ADDR": "http://10.0.0.9:4646", "MSH_PLATFORM": "linux/amd64",
           "MSH_SERVICE_PROVIDER": "nomad"}
    data = json.loads(inv("config", "--json", cwd=project, env=env).stdout)
    assert data["domain"] == {"value": "ml.other", "source": "env MSH_DOMAIN"}
    assert data["nomad_addr"] == {"value": "http://10.0.0.9:4646", "source": "env NOMAD_ADDR"}
    settings = Settings.load(project, env={}, overrides={"local_port": 5002}, flag_names={"local_port": "--port"})
    assert (settings.local_port, settings.sources["local_port"]) == (5002, "flag --port")


@pytest.mark.parametrize("text", ["mlflow:\n  image:\n    registry_password: hunter2\n",
                                  "mlflow:\n  pihole_password: hunter2\n"])
def test_a_secret_in_settings_yaml_is_refused_without_showing_it(project, text):
    (project / "settings.yaml").write_text(text)
    done = inv("config", cwd=project, expect=2)
    (line,) = red_lines(done)
    assert "settings.yaml" in line and "secret" in line and "_password" in line
    assert "hunter2" not in done.stdout + done.stderr


@pytest.mark.parametrize("text, key", [("mlflow:\n  dns:\n    domian: ml.home\n", "domian"),
                                       ("mlflow:\n  registy: 10.0.0.5:5000\n", "registy")])
def test_an_unknown_key_in_settings_yaml_is_one_red_line_naming_it_and_the_file(project, text, key):
    (project / "settings.yaml").write_text(text)
    done = inv("version", cwd=project, expect=2)
    (line,) = red_lines(done)
    assert f"'{key}'" in line and "settings.yaml" in line


def test_a_bad_value_in_settings_yaml_names_the_file(project):
    (project / "settings.yaml").write_text("mlflow:\n  image:\n    registry: http://10.0.0.5:5000/\n")
    (line,) = red_lines(inv("config", cwd=project, expect=2))
    assert line.startswith("error: settings.yaml: registry 'http://10.0.0.5:5000/'")


def test_another_shape_is_refused(project):
    (project / "settings.yaml").write_text("registry: 10.0.0.5:5000\n")
    (line,) = red_lines(inv("config", cwd=project, expect=2))
    assert "settings.yaml" in line and "mlflow:" in line


def test_the_project_ships_no_settings_yaml_and_does_not_ignore_it():
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "settings.yaml"], capture_output=True, text=True)
    assert tracked.returncode == 0 and tracked.stdout == ""
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "settings.yaml"])
    assert ignored.returncode == 1  # not ignored: the user commits it


def test_release_finds_a_committed_settings_yaml_clean_and_an_uncommitted_one_not(tmp_path):
    from tests.services import project_repo
    from tests.services.project_repo import git

    repo = project_repo.make(tmp_path / "repo")
    env = {"MSH_NOMAD_ADDR": "http://127.0.0.1:9", "MSH_DOCTOR_TIMEOUT": "2"}
    (repo / "settings.yaml").write_text("mlflow:\n  image:\n    registry: 127.0.0.1:9\n")
    dirty = inv("release", "--bump", "minor", "--no-deploy", "--dry-run", cwd=repo, env=env, expect=1)
    assert "not clean" in dirty.stderr and "settings.yaml" in dirty.stderr
    git(repo, "add", "settings.yaml")
    git(repo, "commit", "--quiet", "-m", "my settings")
    clean = subprocess.run([sys.executable, "-m", "invoke", "release", "--bump", "minor", "--no-deploy", "--dry-run"],
                           cwd=repo, env={**{k: v for k, v in os.environ.items() if not k.startswith("MSH_")}, **env},
                           capture_output=True, text=True, timeout=120)
    assert "not clean" not in clean.stderr and "Traceback" not in clean.stderr
    assert "127.0.0.1:9" in clean.stderr  # it went on, to the registry settings.yaml names


def test_init_on_a_terminal_shows_the_current_values_and_asks_again_after_a_bad_one(project):
    """`inv init` on a terminal: each question shows the current value (settings.yaml's here), a bad answer is
    one red line and the same question again; the input ending writes nothing (exit 1)."""
    import pty
    import threading
    import time

    (project / "settings.yaml").write_text("mlflow:\n  image:\n    registry: 10.0.0.5:5000\n")
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSH_", "NOMAD_", "PIHOLE_"))}
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "init"], cwd=project, env=env, stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(slave)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()

    def wait_for(text: str, count: int = 1) -> None:
        deadline = time.monotonic() + 60
        while "".join(seen).count(text) < count:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
            time.sleep(0.05)

    try:
        wait_for("[10.0.0.5:5000]: ")  # the current value, as the answer Enter keeps
        os.write(master, b"http://registry.lan:5000\n")
        wait_for("[10.0.0.5:5000]: ", 2)  # refused, asked again with the current value
    finally:
        os.close(master)  # the input ends
        proc.wait(timeout=60)
        reader.join(timeout=10)
    text = "".join(seen)
    assert "error: your answer: registry 'http://registry.lan:5000' has a scheme" in text
    assert proc.returncode == 1 and "Traceback" not in text and "settings.yaml was not written" in text
    assert (project / "settings.yaml").read_text() == "mlflow:\n  image:\n    registry: 10.0.0.5:5000\n"
