"""dnsmasq (and Pi-hole v5) over SSH: a ``cname={domain},{target}[,{ttl}]`` line, then a restart.

The record lives in ``{dnsmasq_dir}/{dnsmasq_file}`` on ``host`` (the same SSH settings as
configure-host). The default file, ``05-pihole-custom-cname.conf``, is the one Pi-hole v5 keeps
its CNAMEs in: the other lines of the file are kept as they are. The file is replaced atomically
(with sudo), then ``dnsmasq_restart_command`` runs (with sudo): ``systemctl restart dnsmasq``,
or ``pihole restartdns`` on Pi-hole v5.
"""
from __future__ import annotations

import difflib
import posixpath
import re

from .. import plan as plans
from ..errors import UserError
from .record import Record, RecordPlan, plan_record

_CNAME_LINE = re.compile(r"^\s*cname\s*=\s*(?P<value>[^#]*?)\s*(#.*)?$")


def cname_lines(text: str) -> list[tuple[int, str]]:
    """(line index, value) of every ``cname=`` line."""
    found = []
    for i, line in enumerate(text.splitlines()):
        match = _CNAME_LINE.match(line)
        if match:
            found.append((i, match.group("value")))
    return found


def edited(text: str, ops: list[tuple[str, str]]) -> str:
    """The file with the plan's ops applied: deletes drop a line, adds take the first freed place."""
    lines = text.splitlines()
    values = dict(cname_lines(text))
    slots: list[int] = []
    drop: set[int] = set()
    for action, entry in ops:
        if action != "delete":
            continue
        index = next((i for i, v in values.items() if v == entry and i not in drop), None)
        if index is not None:
            drop.add(index)
            slots.append(index)
    placed: dict[int, str] = {}
    appended: list[str] = []
    for action, entry in ops:
        if action != "add":
            continue
        if slots:
            placed[slots.pop(0)] = f"cname={entry}"
        else:
            appended.append(f"cname={entry}")
    out = []
    for i, line in enumerate(lines):
        if i in placed:
            out.append(placed[i])
        elif i not in drop:
            out.append(line)
    out.extend(appended)
    return "\n".join(out) + "\n" if out else ""


def plan_file(text: str | None, wanted: Record, path: str, restart_command: str,
              remove: bool = False) -> tuple[RecordPlan, str]:
    """The plan (record changes, the file's diff, the restart) and the new file content."""
    current = text or ""
    plan = plan_record([v for _, v in cname_lines(current)], wanted, remove=remove, title=f"dnsmasq {path}")
    if plan.empty:
        return plan, current
    new = edited(current, plan.ops)
    diff = "".join(difflib.unified_diff(current.splitlines(True), new.splitlines(True),
                                        "a" + path if text is not None else "/dev/null", "b" + path, n=1))
    plan.add("create" if text is None else "update", path, "new file" if text is None else "", diff)
    plan.add("restart", "dnsmasq", restart_command)
    return plan, new


def _read(remote, path: str) -> str | None:
    """The file's text, or None when missing; read as the user, else with sudo."""
    try:
        return remote.read(path)
    except UserError:
        return remote.read(path, sudo=True)


def sync(settings, wanted: Record, remove: bool = False, dry_run: bool = False,
         accept_host_key: bool = False, ask_sudo_pass: bool = False) -> RecordPlan:
    """Read the file over SSH, show the plan, write it and restart dnsmasq unless ``dry_run``."""
    from .. import console
    from ..host import ssh

    folder = settings.dnsmasq_dir.rstrip("/") or "/"
    path = posixpath.join(folder, settings.dnsmasq_file)
    restart = settings.dnsmasq_restart_command.strip()
    with ssh.connect(settings, accept_host_key=accept_host_key, ask_sudo_pass=ask_sudo_pass) as remote:
        if not (remote.exists(folder) or remote.exists(folder, sudo=True)):
            raise UserError(f"{folder} does not exist on {remote.where}",
                            hint="set dnsmasq_dir (MSH_DNSMASQ_DIR) to the folder dnsmasq reads (conf-dir), "
                                 "e.g. /etc/dnsmasq.d")
        text = _read(remote, path)
        plan, new = plan_file(text, wanted, path, restart, remove=remove)
        plans.show(plan, dry_run=dry_run)
        if dry_run or plan.empty:
            return plan
        if not restart:
            raise UserError("dnsmasq_restart_command is empty: dnsmasq would not see the change",
                            hint="set it (MSH_DNSMASQ_RESTART_COMMAND), e.g. `systemctl restart dnsmasq` "
                                 "or `pihole restartdns` on Pi-hole v5")
        remote.write(path, new, sudo=True)
        result = remote.run(restart, sudo=True, check=False)
        if not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise UserError(
                f"{path} is written, but `{restart}` failed on {remote.where} (exit {result.exited})"
                + (f": {detail[-1]}" if detail else ""),
                hint="check dnsmasq's log on the host (journalctl -u dnsmasq); `dnsmasq --test` finds errors "
                     "in its config",
            )
        console.done(f"dnsmasq on {remote.where}: " + ("removed " + wanted.names[0] if remove else wanted.describe()))
    return plan
