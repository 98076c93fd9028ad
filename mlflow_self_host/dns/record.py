"""``inv dns``: the CNAME ``{domain} → {dns_target}`` on Pi-hole v6 or dnsmasq, then its check.

Both backends hold the record in the same form, ``<cname>,[<cname>,]<target>[,<TTL>]``: an item
of Pi-hole's ``dns.cnameRecords``, or the value of a dnsmasq ``cname=`` line. So the plan is
computed the same way for both (``plan_record``) from the entries read:

- no entry names the domain: add the wanted one,
- an entry names it with another target (or TTL): replace it,
- an entry is already right: no change (other entries naming the domain are taken away),
- ``remove``: take away every entry naming the domain.

An entry that also names other domains keeps them (``a.lan,mlflow.lan,old.lan`` becomes
``a.lan,old.lan``). After a change the answer of the DNS server is checked (``check.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UserError
from ..plan import Plan

BACKENDS = ("pihole", "dnsmasq")


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


@dataclass
class RecordPlan(Plan):
    """A Plan whose ``ops`` say how to get there: ("delete", entry) and ("add", entry), in order."""

    ops: list[tuple[str, str]] = field(default_factory=list)


def plan_record(entries: list[str], wanted: Record, remove: bool = False, title: str = "DNS") -> RecordPlan:
    """What to delete and add among ``entries`` so that the domain is ``wanted`` (or gone)."""
    domain = wanted.names[0]
    plan = RecordPlan(title)
    naming = [(e, r) for e in entries if (r := Record.parse(e)) is not None and r.names_domain(domain)]
    keep = None if remove else next((e for e, r in naming if r.same_target(wanted)), None)
    stale = [(e, r) for e, r in naming if e != keep]
    for entry, record in stale:
        plan.ops.append(("delete", entry))
        rest = record.without(domain)
        if rest is not None and rest.entry not in entries:
            plan.ops.append(("add", rest.entry))
    if remove:
        for entry, record in stale:
            plan.add("delete", domain, _detail(record, domain))
        return plan
    if keep is None:
        plan.ops.append(("add", wanted.entry))
        if stale:
            old = ", ".join(_detail(r, domain) for _, r in stale)
            plan.add("replace", domain, f"{old} → {_detail(wanted, domain)}")
        else:
            plan.add("create", domain, wanted.describe().split(" ", 1)[1])
    else:
        for entry, record in stale:
            plan.add("delete", domain, "duplicate " + _detail(record, domain))
    return plan


def _detail(record: Record, domain: str) -> str:
    """``CNAME old.lan`` and, for a shared entry, the names that keep it."""
    text = f"CNAME {record.target}" + (f" (TTL {record.ttl})" if record.ttl is not None else "")
    rest = record.without(domain)
    return text + (f"; kept for {', '.join(rest.names)}" if rest else "")


def run(settings, check_only: bool = False, remove: bool = False, dry_run: bool = False) -> RecordPlan | None:
    """The task: check only, or sync the record on the backend, then check the DNS answer."""
    from . import check

    wanted = wanted_cname(settings)
    if check_only:
        check.report(settings, wanted)
        return None
    backend = settings.dns_backend.strip().lower()
    if backend == "pihole":
        from . import pihole

        plan = pihole.sync(settings, wanted, remove=remove, dry_run=dry_run)
    elif backend == "dnsmasq":
        from . import dnsmasq

        plan = dnsmasq.sync(settings, wanted, remove=remove, dry_run=dry_run)
    else:
        raise UserError(f"dns_backend is {settings.dns_backend!r}: not a DNS backend",
                        hint="set dns_backend (MSH_DNS_BACKEND or --backend) to pihole or dnsmasq")
    if not dry_run and not plan.empty:
        check.verify(settings, wanted, present=not remove)
    return plan
