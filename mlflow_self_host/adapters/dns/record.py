"""The CNAME ``{domain} → {dns_target}`` as data, and the pure plan from the entries a backend holds.

Both backends hold the record in the same form, ``<cname>,[<cname>,]<target>[,<TTL>]``: an item
of Pi-hole's ``dns.cnameRecords``, or the value of a dnsmasq ``cname=`` line. So the plan is
computed the same way for both (``make_record_plan``) from the entries read:

- no entry names the domain: add the wanted one,
- an entry names it with another target (or TTL): replace it,
- an entry is already right: no change (other entries naming the domain are taken away),
- ``remove``: take away every entry naming the domain.

An entry that also names other domains keeps them (``a.lan,mlflow.lan,old.lan`` becomes
``a.lan,old.lan``). Each change carries its ``Edit``: the entries to delete and add, in order,
which a backend applies (``backends.py``); the task that reads, plans, applies and then checks the
DNS answer is ``task.py``. No I/O here.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...core.errors import UserError
from ...core.plan import Plan


def _name(text: str) -> str:
    return text.strip().rstrip(".").lower()


@dataclass(frozen=True)
class Record:
    """One CNAME entry: ``names`` are aliases of ``target``; ``ttl`` None when not given."""

    names: tuple[str, ...]
    target: str
    ttl: int | None = None

    @classmethod
    def parse(cls, entry: str) -> "Record | None":
        """``a.lan,[b.lan,]target[,TTL]``; None when it is not a CNAME definition."""
        parts = [p.strip() for p in entry.strip().split(",")]
        ttl = None
        if len(parts) > 2 and parts[-1].isdigit():
            ttl = int(parts.pop())
        if len(parts) < 2 or not all(parts):
            return None
        *names, target = parts
        return cls(tuple(names), target, ttl)

    @property
    def entry(self) -> str:
        return ",".join([*self.names, self.target] + ([str(self.ttl)] if self.ttl is not None else []))

    def names_domain(self, domain: str) -> bool:
        return _name(domain) in {_name(n) for n in self.names}

    def same_target(self, other: "Record") -> bool:
        return _name(self.target) == _name(other.target) and self.ttl == other.ttl

    def without(self, domain: str) -> "Record | None":
        """This entry minus ``domain``; None when no name is left."""
        rest = tuple(n for n in self.names if _name(n) != _name(domain))
        return Record(rest, self.target, self.ttl) if rest else None

    def describe(self) -> str:
        text = f"{', '.join(self.names)} CNAME {self.target}"
        return text + (f" (TTL {self.ttl})" if self.ttl is not None else "")


def wanted_cname(settings) -> Record:
    """The record the settings ask for, checked for what both backends refuse."""
    domain, target = settings.domain.strip().rstrip("."), settings.dns_target.strip().rstrip(".")
    for key, value in (("domain", domain), ("dns_target", target)):
        if not value or any(c in value for c in ", /\t") or "=" in value:
            raise UserError(f"setting {key} is {value!r}: not a DNS name",
                            hint=f"set {key} (MSH_{key.upper()}) to a name like mlflow.lan")
    if _name(domain) == _name(target):
        raise UserError(f"domain and dns_target are both {domain}: a CNAME cannot point at itself",
                        hint="set dns_target (MSH_DNS_TARGET) to the proxy's name, e.g. traefik.lan")
    ttl = int(settings.dns_ttl)
    if ttl < 0:
        raise UserError(f"setting dns_ttl is {ttl}: must be 0 (none) or a number of seconds")
    return Record((domain,), target, ttl or None)


@dataclass(frozen=True)
class Edit:
    """What one change does to the list of entries: ``steps`` are ("delete", entry) and
    ("add", entry), in order (a replace deletes the old entry and adds the new one; a shared
    entry is deleted and added again without the domain)."""

    steps: tuple[tuple[str, str], ...]
    kind: str = "edit"


@dataclass
class RecordPlan(Plan):
    """A Plan of record changes (each with its ``Edit``) and, for a backend that needs them, more
    (a file write, a check, a restart). ``ops`` are the record steps of all changes, in order."""

    @property
    def ops(self) -> list[tuple[str, str]]:
        return [step for change in self.changes if isinstance(change.op, Edit) for step in change.op.steps]


def make_record_plan(entries: list[str], wanted: Record, remove: bool = False, title: str = "DNS") -> RecordPlan:
    """What to delete and add among ``entries`` so that the domain is ``wanted`` (or gone)."""
    domain = wanted.names[0]
    plan = RecordPlan(title)
    naming = [(e, r) for e in entries if (r := Record.parse(e)) is not None and r.names_domain(domain)]
    keep = None if remove else next((e for e, r in naming if r.same_target(wanted)), None)
    stale = [(e, r) for e, r in naming if e != keep]
    taken = [_take_away(entry, record, domain, entries) for entry, record in stale]
    if remove or keep is not None:
        for (entry, record), steps in zip(stale, taken):
            plan.add("delete", domain, ("" if remove else "duplicate ") + _detail(record, domain), op=Edit(steps))
        if plan.empty:
            plan.reason = "no change"  # removed already, or the one entry naming the domain is right
        return plan
    steps = tuple(step for some in taken for step in some) + (("add", wanted.entry),)
    if stale:
        old = ", ".join(_detail(r, domain) for _, r in stale)
        plan.add("replace", domain, f"{old} → {_detail(wanted, domain)}", op=Edit(steps))
    else:
        plan.add("create", domain, wanted.describe().split(" ", 1)[1], op=Edit(steps))
    return plan


def _take_away(entry: str, record: Record, domain: str, entries: list[str]) -> tuple[tuple[str, str], ...]:
    """Delete ``entry``; when it names other domains too, add it back without ``domain``."""
    rest = record.without(domain)
    if rest is not None and rest.entry not in entries:
        return (("delete", entry), ("add", rest.entry))
    return (("delete", entry),)


def _detail(record: Record, domain: str) -> str:
    """``CNAME old.lan`` and, for a shared entry, the names that keep it."""
    text = f"CNAME {record.target}" + (f" (TTL {record.ttl})" if record.ttl is not None else "")
    rest = record.without(domain)
    return text + (f"; kept for {', '.join(rest.names)}" if rest else "")
