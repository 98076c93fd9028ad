"""configure-host: make the Nomad client ready for MLflow over SSH, as the kept playbook does.

1. read facts from the host (``read_facts``: client.hcl, folders, job file, users),
2. compute a plan (``make_plan``, pure: each change carries its ``Op``): the folders
   first (the two volume folders belong to ``image_user``, the uid:gid the image runs as, compared
   by number; ``job_dir`` to ``folder_owner:folder_group``), then client.hcl (a managed block that
   differs from ours only in whitespace, as the original recipe left it unindented, is in place and
   kept byte for byte: no write, no restart), the job file,
3. show it; with ``dry_run`` stop there, else apply it step by step (``runner.run`` with ``Apply.apply_one``),
4. restart Nomad only when client.hcl changed, then wait for ``/v1/agent/health``.

The folders come before client.hcl: a host that refuses them (an NFS export with root_squash)
stops the run before client.hcl changes, so the run after the fix still restarts Nomad.

``use_ansible`` runs ansible/setup_mlflow.yml with the same settings instead (see ``playbook.py``).
"""
from __future__ import annotations

import os
import posixpath
import shlex
from dataclasses import dataclass
from pathlib import Path

from ...core import plan as plans
from ...core.errors import UserError
from ...core.plan import Plan
from . import client_hcl

JOB_FILE_MODE = "0644"


@dataclass(frozen=True)
class Op:
    """One operation on the host: ``write`` a file, ``folder`` (mkdir/chown/chmod), ``restart``.

    For ``folder``: ``owner``/``group`` None means the owner is right already (no chown), ``mode``
    None the mode (no chmod); an owner or group made of digits is a number (``chown +1000``).
    """

    kind: str
    path: str = ""
    content: bytes = b""
    owner: str | None = None
    group: str | None = None
    mode: str | None = None


@dataclass(frozen=True)
class Folder:
    """A folder as wanted: ``owner`` and ``group`` are names, or numbers (digits) that need not name
    anyone on the host; ``mode`` as "0774"."""

    path: str
    owner: str
    group: str
    mode: str


@dataclass
class HostFacts:
    client_config: bytes | None
    folders: dict  # path -> (uid, gid, mode, owner name, group name) | None
    job_file: bytes | None
    job_file_stat: tuple | None
    missing_users: list
    missing_groups: list


def job_source(settings) -> Path:
    return settings.path(settings.job_file)


def job_target(settings) -> str:
    return posixpath.join(settings.job_dir, os.path.basename(settings.job_file))


def wanted_folders(settings) -> list[Folder]:
    """The volume folders for the image's user (the service's two, the backups folder the nightly backup writes,
    the second folder when set), then ``job_dir`` for ``folder_owner``."""
    uid, gid = (str(i) for i in settings.image_user_ids())
    mode = _mode(settings.folder_mode)
    volumes = [settings.backend_path, settings.artifacts_path, settings.backups_path,
               str(settings.backup_copy_path or "").strip()]
    return [Folder(path, uid, gid, mode) for path in volumes if path] + \
        [Folder(settings.job_dir, settings.folder_owner, settings.folder_group, mode)]


def folders(settings) -> list[str]:
    return [folder.path for folder in wanted_folders(settings)]


def read_facts(remote, settings) -> HostFacts:
    """What is on the host now (read with sudo: /opt/nomad is usually root's)."""
    owner, group = settings.folder_owner, settings.folder_group
    missing_users = [u for u in [owner] if not _getent(remote, "passwd", u)]
    missing_groups = [g for g in dict.fromkeys([group, owner]) if not _getent(remote, "group", g)]
    target = job_target(settings)
    return HostFacts(
        client_config=remote.read_bytes(settings.nomad_client_config, sudo=True),
        folders={path: remote.stat_ids(path, sudo=True) for path in folders(settings)},
        job_file=remote.read_bytes(target, sudo=True),
        job_file_stat=remote.stat(target, sudo=True),
        missing_users=missing_users,
        missing_groups=missing_groups,
    )


def _getent(remote, database: str, name: str) -> bool:
    return remote.run(f"getent {database} {shlex.quote(name)}", check=False).ok


def make_plan(settings, facts: HostFacts, job_content: bytes, host: str = "") -> Plan:
    """Compare the wanted state with the facts; refuse (UserError) before any change when the host
    cannot be configured. Pure: no I/O."""
    where = f" on {host}" if host else ""
    path = settings.nomad_client_config
    if facts.client_config is None:
        raise UserError(
            f"Nomad client config {path} not found{where}",
            hint="install and configure the Nomad client first, or set nomad_client_config to its client.hcl",
        )
    client_hcl.check_closing_brace(facts.client_config, path)
    for user in facts.missing_users:
        raise UserError(f"user {user} does not exist{where}",
                        hint="install Nomad on the host (its package creates the user), or set folder_owner")
    for group in facts.missing_groups:
        raise UserError(f"group {group} does not exist{where}", hint="create it, or set folder_group / folder_owner")

    result = Plan(title=f"configure-host{' ' + host if host else ''}")
    for folder in wanted_folders(settings):
        change = _folder_change(folder, facts.folders.get(folder.path))
        if change:
            action, target, detail, op = change
            result.add(action, target, detail, op=op)

    block = client_hcl.client_config_block(settings.backend_path, settings.artifacts_path, settings.backups_path,
                                           str(settings.backup_copy_path or "").strip())
    wanted = client_hcl.with_block(facts.client_config, block)
    if wanted != facts.client_config and client_hcl.block_in_place(facts.client_config, block):
        result.notes.append(f"{path}: the MLflow host volumes are in place (same host volumes, only whitespace "
                           f"differs): kept as they are, Nomad not restarted")
    restart = wanted != facts.client_config and not client_hcl.block_in_place(facts.client_config, block)
    if restart:  # Nomad reads client.hcl only when it starts
        had = client_hcl.current_block(facts.client_config) is not None
        result.add("update", path, "replace the MLflow host volumes" if had else "add the MLflow host volumes",
                   diff=client_hcl.unified_diff(facts.client_config, wanted, path), op=Op("write", path, wanted))

    owner = settings.folder_owner
    target = job_target(settings)
    wanted_attrs = (owner, owner, JOB_FILE_MODE)
    op = Op("write", target, job_content, owner=owner, group=owner, mode=JOB_FILE_MODE)
    if facts.job_file is None:
        result.add("create", target, f"copy {settings.job_file} ({owner}:{owner} {JOB_FILE_MODE})", op=op)
    elif facts.job_file != job_content:
        result.add("update", target, f"copy {settings.job_file}", op=op,
                   diff=client_hcl.unified_diff(facts.job_file, job_content, target))
    elif facts.job_file_stat != wanted_attrs:
        result.add("update", target, _attr_change(facts.job_file_stat, wanted_attrs), op=op)

    if restart:
        result.add("restart", "nomad", f"`{settings.nomad_restart_command}`, then wait for {_health_url(settings)}",
                   op=Op("restart"))
    return result



def _mode(value) -> str:
    try:
        return f"{int(str(value), 8):04o}"
    except ValueError:
        raise UserError(f"folder_mode must be an octal mode like 0774, not {value!r}") from None


def _folder_change(folder: Folder, now) -> tuple[str, str, str, Op] | None:
    """(action, path, detail, op) making ``folder`` as wanted from ``now`` (``stat_ids``), or None."""
    owner_group = f"{folder.owner}:{folder.group}"
    if now is None:
        return ("create", folder.path, f"folder {owner_group} {folder.mode}",
                Op("folder", folder.path, owner=folder.owner, group=folder.group, mode=folder.mode))
    uid, gid, mode, owner_name, group_name = now
    owner_ok = _same_id(folder.owner, uid, owner_name) and _same_id(folder.group, gid, group_name)
    mode_ok = mode == folder.mode
    if owner_ok and mode_ok:
        return None
    parts = [] if owner_ok else [f"owner {_shown(owner_name, uid)}:{_shown(group_name, gid)} → {owner_group}"]
    parts += [] if mode_ok else [f"mode {mode} → {folder.mode}"]
    op = Op("folder", folder.path, owner=None if owner_ok else folder.owner,
            group=None if owner_ok else folder.group, mode=None if mode_ok else folder.mode)
    return "update", folder.path, ", ".join(parts), op


def _same_id(wanted: str, number: int, name: str) -> bool:
    """A wanted owner (or group) of digits is a number (as chown and Ansible take it), else a name."""
    return int(wanted) == number if wanted.isdigit() else wanted == name


def _shown(name: str, number: int) -> str:
    return str(number) if name == "UNKNOWN" else name


def _attr_change(now, wanted) -> str:
    parts = []
    if now[:2] != wanted[:2]:
        parts.append(f"owner {now[0]}:{now[1]} → {wanted[0]}:{wanted[1]}")
    if now[2] != wanted[2]:
        parts.append(f"mode {now[2]} → {wanted[2]}")
    return ", ".join(parts)


class Apply:
    """Makes the plan's changes on the host over ``remote``."""

    def __init__(self, remote, settings):
        self.remote, self.settings = remote, settings

    def apply_one(self, change) -> object:
        """Make one change of the plan (its ``Op``); the runner says it done."""
        from ...core import console

        remote, settings, op = self.remote, self.settings, change.op
        if op.kind == "write":
            remote.write(op.path, op.content, owner=op.owner, group=op.group, mode=op.mode, sudo=True)
        elif op.kind == "folder":
            result = remote.run(folder_command(op, create=change.action == "create"), sudo=True, check=False)
            if not result.ok:
                raise folder_refused(op, result.reason, create=change.action == "create", host=settings.host)
        elif op.kind == "restart":
            console.step(f"restarting Nomad: {settings.nomad_restart_command}")
            remote.run(settings.nomad_restart_command, sudo=True)
            wait_for_agent(settings)
            return plans.QUIET
        return None


def _chown_spec(owner: str, group: str) -> str:
    """``owner:group`` for chown; digits get GNU chown's ``+`` (a number even where a user has that name)."""
    return ":".join(f"+{v}" if v.isdigit() else v for v in (owner, group))


def folder_command(op: Op, create: bool = False) -> str:
    """The shell command for a ``folder`` op: only the parts that differ (mkdir, chown, chmod)."""
    q = shlex.quote(op.path)
    steps = [f"mkdir -p {q}"] if create else []
    if op.owner is not None:
        steps.append(f"chown {shlex.quote(_chown_spec(op.owner, op.group))} {q}")
    if op.mode is not None:
        steps.append(f"chmod {op.mode} {q}")
    return " && ".join(steps)


def folder_refused(op: Op, reason: str, create: bool = False, host: str = "") -> UserError:
    """The one red line for a folder the host would not make or give away (``reason``: the failing
    command's message). "Operation not permitted"/"Permission denied" for root is an NFS export with
    root_squash (root is nobody there): the fix is on the NFS server."""
    where = f" on {host}" if host else ""
    if reason.startswith("mkdir:"):
        message = f"cannot create {op.path}{where}: {reason}"
    elif reason.startswith("chmod:"):
        message = f"cannot set mode {op.mode} on {op.path}{where}: {reason}"
    else:
        message = f"cannot give {op.path} to {op.owner}:{op.group}{where}: {reason}"
    if "Operation not permitted" not in reason and "Permission denied" not in reason:
        return UserError(message, hint="fix it on the host, then run configure-host again")
    fix = ([f"mkdir -p {op.path}"] if create else []) + \
          ([f"chown {op.owner}:{op.group} {op.path}"] if op.owner is not None else []) + \
          ([f"chmod {op.mode} {op.path}"] if op.mode is not None else [])
    squash = ""
    if op.owner is not None and op.owner.isdigit() and op.group.isdigit():
        squash = f", or export it with all_squash,anonuid={op.owner},anongid={op.group}"
    return UserError(message, hint=f"it is probably on an NFS export with root_squash: on the NFS server run "
                                   f"`{' && '.join(fix)}` (the folder's path may differ there){squash}; "
                                   f"then run configure-host again")


# --- Nomad agent health ---------------------------------------------------------------------------
def _health_url(settings) -> str:
    from ...adapters import nomad_api

    return nomad_api.address(settings) + "/v1/agent/health"


def agent_healthy(settings, timeout: float = 5) -> bool:
    """True when ``/v1/agent/health`` answers 200, asked with the Nomad client every task uses (nomad_api:
    the same address, token and TLS); a TLS setting that names a missing file is refused at once."""
    from ...adapters import nomad_api

    n = nomad_api.client(settings, timeout=timeout)
    try:
        n.agent.request("health", method="get")
        return True
    except Exception:  # noqa: BLE001 - down, restarting, refusing: not healthy yet
        return False


def wait_for_agent(settings) -> None:
    """Wait until the agent answers healthy, at most ``nomad_health_timeout`` seconds."""
    from ...core import console
    from ...adapters import nomad_api
    from ...core.poll import until

    timeout = float(settings.nomad_health_timeout)

    def timed_out(_last):
        raise UserError(
            f"the Nomad agent at {nomad_api.address(settings)} did not answer healthy within {timeout:.0f}s after the "
            "restart",
            hint="check it on the host (`systemctl status nomad`, `journalctl -u nomad`); "
                 "the new client.hcl may be invalid. Raise nomad_health_timeout if it is just slow",
        )

    with console.err.status(f"waiting for the Nomad agent at {_health_url(settings)}"):
        until(lambda: agent_healthy(settings, timeout=min(5.0, max(timeout, 0.5))), timeout, on_timeout=timed_out)
    console.done("Nomad agent healthy")


# --- the task -------------------------------------------------------------------------------------
def run(settings, dry_run: bool = False, use_ansible: bool = False) -> Plan:
    """configure-host: show the plan, apply it (unless dry_run); return the plan."""
    wanted_folders(settings)  # a bad image_user or folder_mode is refused before connecting
    if use_ansible:
        from . import playbook

        return playbook.run_playbook(settings, dry_run=dry_run)
    from ...core import console
    from ...adapters.ssh import connect

    source = job_source(settings)
    try:
        job_content = source.read_bytes()
    except FileNotFoundError:
        raise UserError(f"job file {source} not found",
                        hint="run from the project folder, or set job_file to the Nomad job file") from None
    console.step(f"reading {settings.ssh_user}@{settings.host}:{settings.ssh_port}")
    from .. import runner

    with connect(settings) as remote:
        outcome = runner.run([runner.Step("configure-host", read=lambda: read_facts(remote, settings),
                                          plan=lambda facts: make_plan(settings, facts, job_content, host=settings.host),
                                          apply_one=Apply(remote, settings).apply_one)], dry_run=dry_run)
        plan = outcome.plans["configure-host"]
        if dry_run or plan.empty:
            return plan
    console.done(f"host {settings.host} configured ({len(plan)} change{'s' if len(plan) != 1 else ''})")
    return plan
