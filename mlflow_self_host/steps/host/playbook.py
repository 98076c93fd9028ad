"""``inv configure-host --ansible``: run the kept playbook (ansible/setup_mlflow.yml) with the settings.

The effective settings go in as extra vars (same flat names), the SSH target as a one-host
inventory; host keys are checked against the ``known_hosts`` setting as with Fabric
(``StrictHostKeyChecking=yes``, or ``accept-new`` with ``accept_host_key``). The sudo password is
never written anywhere: the inventory names the variable ``MSH_SUDO_PASSWORD`` (Ansible looks it up),
and ``ask_sudo_pass`` becomes ``--ask-become-pass``.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ...core.errors import UserError
from ...core.plan import Plan
from ...adapters.ssh import SUDO_PASS_ENV

PLAYBOOK = "ansible/setup_mlflow.yml"
SETTINGS = ("nomad_client_config", "backend_path", "artifacts_path", "backups_path", "backup_copy_path", "job_dir", "folder_owner", "folder_group",
            "folder_mode", "image_user", "nomad_restart_command", "nomad_addr", "nomad_health_timeout")


def playbook_path(settings) -> Path:
    return settings.root / PLAYBOOK


def extra_vars(settings) -> dict:
    """The settings the playbook reads, by their setting names."""
    values = {key: settings[key] for key in SETTINGS}
    values["job_file"] = str(settings.path(settings.job_file))
    return values


def inventory(settings) -> dict:
    """A one-host inventory for the configured SSH target."""
    known_hosts = os.path.expanduser(settings.known_hosts or "~/.ssh/known_hosts")
    checking = "accept-new" if settings.accept_host_key else "yes"
    host = {
        "ansible_host": settings.host,
        "ansible_port": int(settings.ssh_port),
        "ansible_user": settings.ssh_user,
        "ansible_python_interpreter": "auto_silent",
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={shlex.quote(known_hosts)} "
                                   f"-o StrictHostKeyChecking={checking}",
    }
    if settings.ssh_key:
        host["ansible_ssh_private_key_file"] = os.path.expanduser(settings.ssh_key)
    if settings.sudo_password:
        host["ansible_become_password"] = "{{ lookup('ansible.builtin.env', '%s') }}" % SUDO_PASS_ENV
    return {"all": {"hosts": {"nomad_client": host}}}


def ansible_playbook() -> str:
    beside = Path(sys.executable).parent / "ansible-playbook"
    found = str(beside) if beside.exists() else shutil.which("ansible-playbook")
    if not found:
        raise UserError("ansible-playbook is not installed",
                        hint="install the project's dependencies (`pip install -e .` brings ansible-core)")
    return found


def command(settings, workdir: Path, dry_run: bool = False) -> list[str]:
    """The ansible-playbook command line; writes the inventory and extra vars into ``workdir``."""
    inv = workdir / "inventory.yml"  # JSON is YAML: Ansible's yaml inventory plugin reads it
    inv.write_text(json.dumps(inventory(settings)))
    variables = workdir / "settings.json"
    variables.write_text(json.dumps(extra_vars(settings)))
    cmd = [ansible_playbook(), "-i", str(inv), "-e", f"@{variables}", str(playbook_path(settings))]
    if dry_run:
        cmd += ["--check", "--diff"]
    if settings.ask_sudo_pass and not settings.sudo_password:
        cmd.append("--ask-become-pass")
    return cmd


def run_playbook(settings, dry_run: bool = False) -> Plan:
    """Run the playbook; its output goes to the terminal. Raise UserError when it fails."""
    from ...core import console

    if not playbook_path(settings).exists():
        raise UserError(f"{playbook_path(settings)} is missing", hint="run from the project folder")
    env = dict(os.environ, ANSIBLE_RETRY_FILES_ENABLED="false", ANSIBLE_HOST_KEY_CHECKING="true",
               ANSIBLE_NOCOLOR=os.environ.get("ANSIBLE_NOCOLOR", "1" if not sys.stdout.isatty() else "0"))
    if settings.nomad_token:
        env["NOMAD_TOKEN"] = settings.nomad_token
    if settings.sudo_password:  # the inventory looks it up there: never written to a file
        env[SUDO_PASS_ENV] = settings.sudo_password
    if settings.nomad_skip_verify:
        env["NOMAD_SKIP_VERIFY"] = "true"
    with tempfile.TemporaryDirectory(prefix="msh-ansible-") as tmp:
        # A connection of our own each run (not a ControlPersist master left by an earlier run, which
        # would skip the host key check), gone a few seconds after the playbook ends.
        env.update(ANSIBLE_SSH_CONTROL_PATH_DIR=tmp,
                   ANSIBLE_SSH_ARGS="-C -o ControlMaster=auto -o ControlPersist=5s")
        cmd = command(settings, Path(tmp), dry_run=dry_run)
        console.step(f"ansible-playbook {PLAYBOOK} on {settings.ssh_user}@{settings.host}:{settings.ssh_port}"
                     + (" (check mode)" if dry_run else ""))
        proc = subprocess.run(cmd, env=env, cwd=settings.root)
    if proc.returncode != 0:
        raise UserError(f"ansible-playbook failed (exit {proc.returncode})",
                        hint="see its output above; `inv configure-host` without --ansible gives shorter errors")
    plan = Plan(title=f"configure-host {settings.host} (ansible)")
    plan.add("run", PLAYBOOK, "check mode" if dry_run else "applied")
    return plan
