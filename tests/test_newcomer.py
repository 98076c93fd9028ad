"""A newcomer's first hour, on the real parts: a fresh clone of the committed project, the README's first
command, `inv init` with flags (the test sshd, registry, dnsmasq and the Nomad double), `inv dns`, then
`inv deploy` succeeds with no other edit: invoke.yaml untouched, settings.yaml the only new file.

The README's first command ends with `inv up`; here its install part runs as written (a new .venv in the
clone, the package installed from it) and `inv up` runs with --dry-run: a local server is test_local.py's,
and the cluster is what this test is about. The environment holds only what a user's own shell or machine
would: DOCKER_HOST (the test engine), the SSH client's key, known_hosts and the sshd's port, the dnsmasq's
port, and the test doubles' own layout where a homelab has the defaults (the Nomad client's folders and
client.hcl under a temp folder, its restart command, the proxy's port in deploy_url, the stand-in base
image, an image name of this test's own in the session's shared registry, shorter Nomad timings).
"""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from invoke.util import yaml

from tests.host.conftest import nomad_user  # noqa: F401 - the fixture (fresh_host needs it)
from tests.services import resolver
from tests.services.mlflow_image import clean_env
from tests.services.nomad_cluster import MLFLOW_TIMINGS
from tests.test_readme import _commands
from tests.test_user_path import fresh_host, proxy  # noqa: F401 - the fixtures

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "mlflow.lan"
pytestmark = pytest.mark.slow

# The test machine's facts a homelab has at their defaults (not what `inv init` asks).
HOST_LAYOUT = ("ssh_port", "ssh_key", "known_hosts", "nomad_client_config", "backend_path", "artifacts_path",
               "job_dir", "folder_owner", "folder_group", "nomad_restart_command", "nomad_health_timeout")


def run(cmd, cwd: Path, env: dict, expect: int = 0, timeout: float = 900, shell: bool = False):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, shell=shell)
    shown = cmd if isinstance(cmd, str) else " ".join(cmd)
    assert done.returncode == expect, f"{shown} → {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert "Traceback" not in done.stderr
    return done


def test_a_fresh_clone_init_then_deploy(tmp_path, fresh_host, proxy, dns_server, registry, base_image,
                                        docker_engine_service, ssh_server):
    host, double = fresh_host
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    clone = tmp_path / "mlflow-self-host"
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", head], check=True)
    assert not (clone / "settings.yaml").exists()  # the project ships none

    env = clean_env()
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if not p.startswith(str(ROOT)))
    env.update({f"MSH_{key.upper()}": str(value) for key, value in host.settings._values.items() if key in HOST_LAYOUT})
    # shorter Nomad timings, but room for a first start on a busy machine (the real image migrates its database)
    env.update({f"MSH_{k.upper()}": str(v) for k, v in
                {**MLFLOW_TIMINGS, "healthy_deadline": "4m", "progress_deadline": "6m"}.items()})
    env.update(DOCKER_HOST=docker_engine_service.base_url, MSH_DNS_PORT=str(dns_server.port),
               MSH_DNSMASQ_DIR=str(dns_server.conf_dir), MSH_DNSMASQ_FILE="05-mlflow-newcomer.conf",
               MSH_DNSMASQ_RESTART_COMMAND=dns_server.restart_command, MSH_BASE_IMAGE=base_image,
               MSH_IMAGE=f"mlflow-newcomer-{uuid.uuid4().hex[:8]}",
               MSH_BACKUPS_PATH=str(tmp_path / "host" / "data" / "backups"),
               MSH_DEPLOY_URL=f"http://{DOMAIN}:{proxy.port}/", MSH_DEPLOY_POLL="0.2", MSH_DOCTOR_TIMEOUT="5")
    env.update(resolver.env_for_subprocess(dns_server.port))

    # 1. the README's first command: its install part as written, its `inv up` as a dry run
    first = _commands()[0]
    install, _, up = first.rpartition("&& ")
    assert up.strip().endswith("inv up") and install.strip()
    run(install.strip(), clone, env, shell=True, timeout=600)
    inv = [str(clone / ".venv" / "bin" / "inv")]
    run(inv + ["up", "--dry-run"], clone, env, timeout=120)

    # 2. inv init with flags: checked, written, then doctor's table
    init = run(inv + ["init", "--registry", registry.address, "--host", ssh_server.host, "--ssh-user",
                      ssh_server.user, "--nomad-addr", double.address, "--domain", DOMAIN, "--dns-target",
                      "traefik.lan", "--dns-backend", "dnsmasq", "--dns-server", "127.0.0.1", "--store", "sqlite"],
               clone, env, timeout=300)
    assert "inv doctor" in init.stdout
    mine = yaml.safe_load((clone / "settings.yaml").read_text())["mlflow"]
    assert mine["image"] == {"registry": registry.address} and mine["host"]["host"] == ssh_server.host

    # 3. the name, then the deploy (configure-host, build, push, register, healthy, answering through the name)
    record = dns_server.conf_dir / env["MSH_DNSMASQ_FILE"]
    try:
        run(inv + ["dns"], clone, env, timeout=300)
        deployed = run(inv + ["deploy"], clone, env, timeout=1200)
        assert "deployed v" in deployed.stderr
        (alloc,) = double.running_allocs()
        assert double.container_of(alloc["ID"]).attrs["Config"]["Image"].startswith(
            f"{registry.address}/mlflow-newcomer-")
    finally:  # the session's dnsmasq serves the next test too (the whole user path names mlflow.lan in its own file)
        if record.exists():
            record.unlink()
            subprocess.run(dns_server.restart_command, shell=True, check=True, timeout=60)

    # no other edit: the one new file is settings.yaml (the .venv and ./data are ignored)
    status = subprocess.run(["git", "-C", str(clone), "status", "--porcelain"], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    assert status == ["?? settings.yaml"], status
