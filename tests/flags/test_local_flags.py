"""Local mode through `inv`, as the README's first command runs it: `inv up` (natively when no Docker engine
answers, from the cached virtual environment with the image's pinned MLflow; in a container with --docker),
`inv smoke`, `inv backup --local`, `inv restore --local`, `inv down`, with each flag's effect and the exit
codes 4, 16 (up not healthy) and 17 (smoke failed) by number."""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from tests.flags.conftest import ROOT, STUB_CONTEXT, errors, inv, layers, make_project, remove_tags
from tests.services import free_port, port_open
from tests.services.mlflow_image import clean_env


def healthy(url: str) -> bool:
    try:
        return requests.get(url + "health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def run_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {row[0] for row in con.execute("SELECT run_uuid FROM runs")}


def smoked_run(done) -> str:
    """The run id `inv smoke` names in its last line ("smoke test passed: URL (run ID)")."""
    line = next(line for line in done.stderr.splitlines() if "smoke test passed" in line)
    return line.rsplit("(run ", 1)[1].rstrip(")")


@pytest.mark.slow  # the native MLflow server's environment, then MLflow itself
def test_native_up_smoke_backup_restore_and_down(tmp_path):
    """No Docker engine answers (DOCKER_HOST names a socket nobody serves): up runs MLflow natively."""
    project = make_project(tmp_path / "project")  # the real docker/: entrypoint and requirements.lock
    env = clean_env()
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    on_port = {**env, "MSH_LOCAL_PORT": str(port)}  # for the tasks without --port (smoke's default, restore)
    data = project / "data"
    db = data / "backend" / "mlflow.db"
    try:
        dry = inv("up", "--dry-run", "--port", str(port), cwd=project, env=env)
        assert "native MLflow server" in dry.stderr and f"port {port}" in dry.stderr
        assert "dry run: nothing was changed" in dry.stderr
        assert not port_open(port) and not (data / "mlflow-server.pid").exists()

        no_engine = inv("up", "--docker", "--port", str(port), cwd=project, env=env, expect=4)
        assert "no Docker engine" in errors(no_engine)[0] and not port_open(port)

        db.parent.mkdir(parents=True)
        db.write_bytes(b"not a database at all\n" * 100)  # MLflow cannot open it: never healthy
        broken = inv("up", "--port", str(port), cwd=project, env=env, expect=16)
        assert errors(broken)[0].startswith("error: MLflow exited before it was healthy:")
        assert f"see {data / 'mlflow-server.log'}" in broken.stderr
        assert not port_open(port) and not (data / "mlflow-server.pid").exists()
        db.unlink()

        started = inv("up", "--port", str(port), cwd=project, env=env)
        assert started.stdout.strip() == url  # the result line: the URL on the port the flag named
        assert "no Docker engine" in started.stderr and "natively" in started.stderr
        assert healthy(url) and db.exists()
        pid = (data / "mlflow-server.pid").read_text().strip()
        again = inv("up", "--port", str(port), cwd=project, env=env)
        assert "already running" in again.stderr and (data / "mlflow-server.pid").read_text().strip() == pid

        first = smoked_run(inv("smoke", "--url", url, cwd=project, env=env))  # default Host: the domain
        (artifact,) = (data / "artifacts").glob(f"*/{first}/artifacts/smoke.txt")  # served: stored in ./data
        rejected = inv("smoke", "--url", url, "--host-header", "evil.example", cwd=project, env=env, expect=17)
        assert "evil.example" in errors(rejected)[0] and "403 Invalid Host header" in errors(rejected)[0]

        taken = inv("backup", "--local", cwd=project, env=env)
        copy = Path(taken.stdout.strip())
        assert copy.parent == data / "backups" and first in run_ids(copy)

        second = smoked_run(inv("smoke", cwd=project, env=on_port))  # after the backup
        assert {first, second} <= run_ids(db)
        dry = inv("restore", copy.name, "--local", "--dry-run", cwd=project, env=on_port)
        assert "dry run: nothing was changed" in dry.stderr
        assert second in run_ids(db) and (data / "mlflow-server.pid").read_text().strip() == pid and healthy(url)

        restored = inv("restore", copy.name, "--local", cwd=project, env=on_port)
        assert "restored" in restored.stderr and healthy(url)
        assert (data / "mlflow-server.pid").read_text().strip() != pid  # down, then up again on the backup
        assert first in run_ids(db) and second not in run_ids(db)
        (aside,) = db.parent.glob("mlflow.db.before-restore-*")
        assert second in run_ids(aside)

        dry = inv("down", "--dry-run", cwd=project, env=env)
        assert "dry run: nothing was changed" in dry.stderr and healthy(url)
        down = inv("down", cwd=project, env=env)
        assert "data kept" in down.stderr
        assert not port_open(port) and not (data / "mlflow-server.pid").exists()
        assert artifact.exists() and first in run_ids(db)  # ./data stays
    finally:
        subprocess.run([sys.executable, "-m", "invoke", "down"], cwd=project, env=env, capture_output=True,
                       timeout=60)


def test_container_up_builds_on_the_base_image_flag_and_down_removes_it(tmp_path, docker_client, registry,
                                                                        base_image, derived_base,
                                                                        docker_engine_service):
    """`inv up --docker` with a project whose image is the stub (the MLflow image's contract: port, /health,
    uid 1000, the two mounts): built first, on --base-image rather than the base_image setting."""
    project = make_project(tmp_path / "project", docker=STUB_CONTEXT)
    name = f"flags-up-{uuid.uuid4().hex[:8]}"
    env = clean_env()
    env.update(DOCKER_HOST=docker_engine_service.base_url, MSH_REGISTRY=registry.address, MSH_IMAGE=name,
               MSH_LOCAL_CONTAINER=name, MSH_BASE_IMAGE=base_image)
    port = free_port()
    ref = f"{registry.address}/{name}:v0.99"
    try:
        done = inv("up", "--docker", "--port", str(port), "--base-image", derived_base, cwd=project, env=env)
        assert done.stdout.strip() == f"http://127.0.0.1:{port}/" and healthy(f"http://127.0.0.1:{port}/")
        assert f"{ref} is not built yet: building it" in done.stderr
        base = layers(docker_client, derived_base)
        assert layers(docker_client, ref)[:len(base)] == base  # built on the flag's image, marker layer and all
        container = docker_client.containers.get(name)
        assert container.status == "running" and container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert (project / "data" / "backend" / "stub-starts.log").read_text() == "serve uid=1000\n"  # ./data mounted

        down = inv("down", cwd=project, env=env)
        assert f"stopped container {name}" in down.stderr
        assert name not in [c.name for c in docker_client.containers.list(all=True)]
        assert not port_open(port) and (project / "data" / "backend" / "stub-starts.log").exists()
    finally:
        subprocess.run([sys.executable, "-m", "invoke", "down"], cwd=project, env=env, capture_output=True,
                       timeout=60)
        remove_tags(docker_client, ref)


STUB_NATIVE_SERVER = '''import http.server, os, sys

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass

http.server.HTTPServer((os.environ["MLFLOW_HOST"], int(os.environ["MLFLOW_PORT"])), Health).serve_forever()
'''


def stub_native_project(tmp_path: Path) -> tuple[Path, dict]:
    """A project whose native server is a stub that answers /health on MLFLOW_PORT (docker/entrypoint.sh execs
    it, as the real one execs mlflow), its virtual environment already made (the marker under MSH_CACHE_DIR):
    `inv up` without an engine starts it in a second, with the real code around it."""
    import hashlib

    from mlflow_self_host.steps.local import VENV_MARKER

    project = make_project(tmp_path / "project", docker=None)
    (project / "docker").mkdir()
    shutil.copy(ROOT / "docker" / "requirements.lock", project / "docker" / "requirements.lock")
    (project / "docker" / "mlflow_stub_server.py").write_text(STUB_NATIVE_SERVER)
    (project / "docker" / "entrypoint.sh").write_text(
        f'#!/bin/sh\nexec {sys.executable} "$(dirname "$0")/mlflow_stub_server.py"\n')
    cache = tmp_path / "cache"
    recipe = (project / "docker" / "requirements.lock").read_bytes() + sys.version.encode()
    venv = cache / f"mlflow-server-{hashlib.sha256(recipe).hexdigest()[:12]}"
    venv.mkdir(parents=True)
    (venv / VENV_MARKER).write_text("stub\n")
    env = {**clean_env(), "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock", "MSH_CACHE_DIR": str(cache)}
    return project, env


def test_up_on_another_port_restarts_the_native_server_there_or_refuses(tmp_path):
    """`inv up --port B` while the server runs on A: it is stopped and started on B, and the URL printed is one
    that answers; with B held by another program: refused (exit 1), the server on A left running."""
    import socket

    project, env = stub_native_project(tmp_path)
    first, second, third = free_port(), free_port(), free_port()
    try:
        started = inv("up", "--port", str(first), cwd=project, env=env)
        assert started.stdout.strip() == f"http://127.0.0.1:{first}/" and healthy(f"http://127.0.0.1:{first}/")

        dry = inv("up", "--port", str(second), "--dry-run", cwd=project, env=env)
        assert f"it serves port {first}, not {second}" in dry.stderr and healthy(f"http://127.0.0.1:{first}/")

        moved = inv("up", "--port", str(second), cwd=project, env=env)
        assert moved.stdout.strip() == f"http://127.0.0.1:{second}/" and healthy(f"http://127.0.0.1:{second}/")
        assert not port_open(first) and "already running" not in moved.stderr

        again = inv("up", "--port", str(second), cwd=project, env=env)
        assert "already running" in again.stderr and again.stdout.strip() == f"http://127.0.0.1:{second}/"

        with socket.socket() as busy:
            busy.bind(("127.0.0.1", third))
            busy.listen()
            taken = inv("up", "--port", str(third), cwd=project, env=env, expect=1)
        assert errors(taken) == [f"error: port {third} is already in use by another program"]
        assert not taken.stdout.strip() and healthy(f"http://127.0.0.1:{second}/")
    finally:
        subprocess.run([sys.executable, "-m", "invoke", "down"], cwd=project, env=env, capture_output=True, timeout=60)
    assert not port_open(second)
