"""dnsmasq (and Pi-hole v5) over SSH: a ``cname={domain},{target}[,{ttl}]`` line, then a restart.

The record lives in ``{dnsmasq_dir}/{dnsmasq_file}`` on ``host`` (the same SSH settings as
configure-host). The default file, ``05-pihole-custom-cname.conf``, is the one Pi-hole v5 keeps
its CNAMEs in: the other lines of the file are kept as they are.

dnsmasq refuses to start on a configuration it cannot parse, and a second definition of one alias
anywhere in what it reads is such a failure ("duplicate CNAME", dnsmasq's option.c). So that a run
never takes the LAN's DNS down:

1. a host with ``pihole_config`` (``/etc/pihole/pihole.toml``) runs Pi-hole v6, which ignores
   /etc/dnsmasq.d unless ``misc.etc_dnsmasq_d`` is on and keeps its records in ``dns.cnameRecords``
   (FTL src/config/dnsmasq_config.c): refused, the pihole backend is the way there;
2. the file is replaced atomically (with sudo), then ``dnsmasq_test_command`` (``dnsmasq --test``
   on the whole configuration) runs before any restart; if it fails, the previous file is put back;
3. ``dnsmasq_restart_command`` runs (with sudo); if it fails, the previous file is put back and
   dnsmasq restarted again with it, and the error says which of the two worked.

The plan (``make_file_plan``, pure) is the record's changes (``record.make_record_plan`` on the
``cname=`` values), then the file's write, the check and the restart, each with its ``FileOp``. ``Dnsmasq``
is this backend for ``inv dns`` (``backends.py``): the record changes are made by the write, so
applying them alone does nothing.
"""
from __future__ import annotations

import difflib
import posixpath
import re
from dataclasses import dataclass

from ...core import plan as plans
from ...core.errors import UserError
from .record import Record, RecordPlan, make_record_plan

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


@dataclass(frozen=True)
class FileOp:
    """One step on the host: ``write`` the new file (``content``), ``check`` the configuration with
    it, or ``restart`` dnsmasq (``command``). ``previous`` is the file as read (None: there was
    none), put back when the check or the restart fails; ``domain`` is named in the hint when dnsmasq
    finds a second definition."""

    kind: str
    path: str
    content: str = ""
    command: str = ""
    previous: str | None = None
    domain: str = ""


def make_file_plan(text: str | None, wanted: Record, path: str, restart_command: str,
                   remove: bool = False, test_command: str = "") -> RecordPlan:
    """The plan (record changes, the file's write with its diff, the check, the restart) for the file
    ``text`` (None: there is none). A change with no ``restart_command`` is refused: dnsmasq would not
    see it."""
    current = text or ""
    plan = make_record_plan([v for _, v in cname_lines(current)], wanted, remove=remove,
                            title=f"dnsmasq {path}")
    if plan.empty:
        return plan
    if not restart_command.strip():
        raise UserError("dnsmasq_restart_command is empty: dnsmasq would not see the change",
                        hint="set it (MSH_DNSMASQ_RESTART_COMMAND), e.g. `systemctl restart dnsmasq` "
                             "or `pihole restartdns` on Pi-hole v5")
    new = edited(current, plan.ops)
    diff = "".join(difflib.unified_diff(current.splitlines(True), new.splitlines(True),
                                        "a" + path if text is not None else "/dev/null", "b" + path, n=1))
    domain = wanted.names[0]
    plan.add("create" if text is None else "update", path, "new file" if text is None else "", diff,
             op=FileOp("write", path, content=new, previous=text, domain=domain))
    if test_command:
        plan.add("check", "dnsmasq", test_command,
                 op=FileOp("check", path, command=test_command, previous=text, domain=domain))
    plan.add("restart", "dnsmasq", restart_command,
             op=FileOp("restart", path, command=restart_command, previous=text, domain=domain))
    return plan


def _read(remote, path: str) -> str | None:
    """The file's text, or None when missing; read as the user, else with sudo."""
    try:
        return remote.read(path)
    except UserError:
        return remote.read(path, sudo=True)


def check_command(settings) -> str:
    """``dnsmasq_test_command`` with ``{dnsmasq_dir}`` filled in; empty: no check."""
    folder = settings.dnsmasq_dir.rstrip("/") or "/"
    return settings.dnsmasq_test_command.strip().replace("{dnsmasq_dir}", folder)


class Dnsmasq:
    """The dnsmasq backend: one SSH connection (``with``), the file read, written, checked, restarted."""

    def __init__(self, settings):
        self.settings = settings
        self.folder = settings.dnsmasq_dir.rstrip("/") or "/"
        self.path = posixpath.join(self.folder, settings.dnsmasq_file)
        self.remote = None

    @property
    def where(self) -> str:
        return f"dnsmasq on {self.remote.where}"

    def __enter__(self) -> "Dnsmasq":
        from .. import ssh

        self.remote = ssh.connect(self.settings)
        return self

    def __exit__(self, *exc) -> None:
        self.remote.close()

    def read_facts(self) -> str | None:
        """The file's text (None: missing), after refusing a Pi-hole v6 host and a missing folder."""
        remote, folder = self.remote, self.folder
        v6_config = self.settings.pihole_config.strip()
        if v6_config and (remote.exists(v6_config) or remote.exists(v6_config, sudo=True)):
            raise UserError(
                f"{remote.where} runs Pi-hole v6 ({v6_config} exists): it keeps CNAMEs in dns.cnameRecords and "
                f"does not read {folder} unless misc.etc_dnsmasq_d is on",
                hint="use the pihole backend (dns_backend: pihole, or --backend pihole) with pihole_url "
                     "https://<that host>; nothing was changed",
            )
        if not (remote.exists(folder) or remote.exists(folder, sudo=True)):
            raise UserError(f"{folder} does not exist on {remote.where}",
                            hint="set dnsmasq_dir (MSH_DNSMASQ_DIR) to the folder dnsmasq reads (conf-dir), "
                                 "e.g. /etc/dnsmasq.d")
        return _read(remote, self.path)

    def make_plan(self, text: str | None, wanted: Record, remove: bool = False) -> RecordPlan:
        return make_file_plan(text, wanted, self.path, self.settings.dnsmasq_restart_command.strip(),
                              remove=remove, test_command=check_command(self.settings))

    def apply_one(self, change, plan) -> object:
        """The write, the check (put back on failure), the restart (put back and restarted again on
        failure); a record change is in the written file already."""
        op, remote = change.op, self.remote
        if op.kind == "edit":  # in the written file already
            return plans.QUIET
        if op.kind == "write":
            remote.write(op.path, op.content, sudo=True)
        elif op.kind == "check":
            _check_config(remote, op)
        elif op.kind == "restart":
            _restart(remote, op)
        else:
            raise ValueError(f"unknown dnsmasq operation {op.kind!r}")
        return plans.QUIET


def _restart(remote, op: FileOp) -> None:
    """Restart dnsmasq; on failure put the previous file back and restart again with it."""
    result = remote.run(op.command, sudo=True, check=False)
    if result.ok:
        return
    _put_back(remote, op.path, op.previous)
    again = remote.run(op.command, sudo=True, check=False)
    failed = f"`{op.command}` failed on {remote.where} with the new {op.path} ({result.reason})"
    if again.ok:
        raise UserError(f"{failed}; the previous file is back and dnsmasq runs with it again",
                        hint="see why in dnsmasq's log on the host (journalctl -u dnsmasq); "
                             "dnsmasq_test_command did not catch it")
    raise UserError(f"{failed}, and again with the previous file ({again.reason}): dnsmasq may not be "
                    f"running, and the LAN's DNS with it",
                    hint=f"on {remote.conn.host} see `systemctl status dnsmasq` and journalctl -u dnsmasq, "
                         f"fix, and start it; check dnsmasq_restart_command")


def _check_config(remote, op: FileOp) -> None:
    """Run the check on the configuration with the new file; on failure put the previous file back."""
    path, command = op.path, op.command
    result = remote.run(command, sudo=True, check=False)
    if result.ok:
        return
    _put_back(remote, path, op.previous)
    if result.exited == 127:
        raise UserError(f"the check `{command}` cannot run on {remote.where} ({result.reason}); the previous "
                        f"{path} is back and dnsmasq was not restarted",
                        hint="set dnsmasq_test_command (MSH_DNSMASQ_TEST_COMMAND) to the host's check "
                             "(Pi-hole v5: `pihole-FTL dnsmasq-test`), or to empty to skip the check")
    if "duplicate cname" in result.reason.lower():
        hint = (f"{op.domain} (or another alias in {path}) is defined in another file dnsmasq reads too "
                f"(the file and line named); remove one of the two, or set dnsmasq_file to the file that has it")
    else:
        hint = f"fix the file and line dnsmasq names, or see `{command}` on the host"
    raise UserError(f"dnsmasq refuses the configuration with the new {path}: {result.reason}; the previous file "
                    f"is back and dnsmasq was not restarted", hint=hint)


def _put_back(remote, path: str, previous: str | None) -> None:
    """The file as it was before this run (removed when there was none)."""
    import shlex

    if previous is None:
        remote.run(f"rm -f -- {shlex.quote(path)}", sudo=True)
    else:
        remote.write(path, previous, sudo=True)
