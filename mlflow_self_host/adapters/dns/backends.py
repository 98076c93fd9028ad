"""The DNS backends of ``inv dns``, by the name ``dns_backend`` gives: one protocol, one registry.

A backend is made from the settings (``BACKENDS[name](settings)``) and used as a context manager
(a Pi-hole API session that always logs out, an SSH connection). Inside it:

- ``read_facts()``: the facts, as plain data (Pi-hole: the ``dns.cnameRecords`` entries; dnsmasq: the
  file's text, None when there is none); the only part that asks the server;
- ``make_plan(facts, wanted, remove)``: pure, a ``record.RecordPlan`` (the record changes, each with
  its ``Edit``, and whatever else the backend does: dnsmasq's write, check and restart);
- ``apply_one(change, plan)``: makes one change (the plan says where it is: Pi-hole restarts on the
  last call); on a failure it puts back what it can before raising;
- ``where``: what the line after a change names ("Pi-hole https://pi.hole", "dnsmasq on pi@host").

A new backend is one module with such a class and one ``register`` line below. The module is
imported only when its backend is used (Pi-hole's brings requests).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

from ...core.errors import UserError
from ...core.plan import Change, Plan
from .record import Record


class Backend(Protocol):
    where: str

    def __enter__(self) -> "Backend": ...

    def __exit__(self, *exc) -> None: ...

    def read_facts(self) -> Any: ...

    def make_plan(self, facts: Any, wanted: Record, remove: bool = False) -> Plan: ...

    def apply_one(self, change: Change, plan: Plan) -> object: ...


BACKENDS: dict[str, Callable[[Any], Backend]] = {}


def register(name: str, factory: Callable[[Any], Backend]) -> None:
    """Make ``factory(settings)`` the backend ``dns_backend: name`` selects."""
    BACKENDS[name] = factory


def _pihole(settings) -> Backend:
    from .pihole import PiholeBackend

    return PiholeBackend(settings)


def _dnsmasq(settings) -> Backend:
    from .dnsmasq import Dnsmasq

    return Dnsmasq(settings)


register("pihole", _pihole)
register("dnsmasq", _dnsmasq)


def backend(settings) -> Backend:
    """The backend ``dns_backend`` names (case and spaces aside), not yet entered."""
    name = settings.dns_backend.strip().lower()
    if name not in BACKENDS:
        names = list(BACKENDS)
        choices = " or ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " or " + names[-1]
        raise UserError(f"dns_backend is {settings.dns_backend!r}: not a DNS backend",
                        hint=f"set dns_backend (MSH_DNS_BACKEND or --backend) to {choices}")
    return BACKENDS[name](settings)
