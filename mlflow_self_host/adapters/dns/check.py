"""Ask the DNS server what ``{domain}`` is: the CNAME chain and the addresses (dnspython).

The server is ``dns_server:dns_port``, or the system's resolvers when ``dns_server`` is empty.
``report`` is ``inv dns --check``; ``verify`` runs after a change and asks again until the answer is
right or ``dns_check_timeout`` seconds have passed: a Pi-hole restarts after a change (FTL re-executes
itself, src/api/api.c ``restart_ftl``) and dnsmasq after ``dnsmasq_restart_command``, so a timeout,
a refused query or the old answer mean "not yet", not "wrong", until the deadline.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field

from ...core import poll
from ...core.errors import UserError, first_line
from .record import Record, _name

QUERY_LIFETIME = 3.0
RETRY_INTERVAL = 0.5


class NoAnswer(UserError):
    """The DNS server did not answer (down, restarting, or the wrong address)."""


@dataclass
class Answer:
    domain: str
    server: str  # what was asked, for the user
    status: str  # "ok", "nxdomain", "refused" or "noanswer"
    chain: list[str] = field(default_factory=list)  # CNAME targets, in order
    addresses: list[str] = field(default_factory=list)

    @property
    def cname(self) -> str | None:
        return self.chain[0] if self.chain else None

    def points_at(self, target: str) -> bool:
        return self.cname is not None and _name(self.cname) == _name(target)

    def describe(self) -> str:
        if self.status == "nxdomain":
            return f"{self.domain}: no such name (NXDOMAIN)"
        if self.status == "refused":
            return f"{self.domain}: the server does not serve this name (REFUSED)"
        steps = [self.domain] + [f"CNAME {name}" for name in self.chain]
        steps.append(", ".join(self.addresses) if self.addresses else "no address")
        return " → ".join(steps)


def _resolver(settings):
    import dns.resolver

    server = settings.dns_server.strip()
    if not server:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            raise UserError("no system DNS resolver is configured (/etc/resolv.conf)",
                            hint="set dns_server (MSH_DNS_SERVER) to the DNS server's address") from None
        shown = "system resolver (" + ", ".join(str(n) for n in resolver.nameservers) + ")"
    else:
        try:
            address = socket.getaddrinfo(server, None, proto=socket.IPPROTO_UDP)[0][4][0]
        except socket.gaierror:
            raise UserError(f"dns_server {server!r}: unknown host name",
                            hint="set dns_server (MSH_DNS_SERVER) to the DNS server's IP address") from None
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [address]
        resolver.port = int(settings.dns_port)
        shown = f"{server}:{settings.dns_port}"
    resolver.lifetime = QUERY_LIFETIME
    resolver.cache = None
    return resolver, shown


def resolve(settings, domain: str, lifetime: float = QUERY_LIFETIME, attempt: float | None = None) -> Answer:
    """One question (``A``) to the server, sent again every ``attempt`` seconds (dnspython's default
    2 s) within ``lifetime``; NoAnswer when it does not answer."""
    import dns.exception
    import dns.rdatatype
    import dns.resolver

    resolver, shown = _resolver(settings)
    resolver.lifetime = lifetime
    if attempt is not None:
        resolver.timeout = attempt
    try:
        result = resolver.resolve(domain, "A", raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return Answer(domain, shown, "nxdomain")
    except dns.resolver.LifetimeTimeout:
        raise NoAnswer(f"DNS server {shown} did not answer within {lifetime:.0f}s",
                       hint="check that it runs and dns_server / dns_port (MSH_DNS_SERVER, MSH_DNS_PORT) "
                            "name it") from None
    except dns.resolver.NoNameservers as exc:
        if _all_refused(exc):  # e.g. dnsmasq without upstreams: it does not know the name
            return Answer(domain, shown, "refused")
        raise NoAnswer(f"DNS server {shown} failed to answer for {domain}: {first_line(exc)}",
                       hint="check dns_server / dns_port (MSH_DNS_SERVER, MSH_DNS_PORT)") from None
    except dns.exception.DNSException as exc:
        raise UserError(f"asking {shown} for {domain} failed: {first_line(exc)}",
                        hint="check dns_server / dns_port (MSH_DNS_SERVER, MSH_DNS_PORT)") from None
    chain, addresses = [], []
    current = _name(domain)
    rrsets = list(result.response.answer)
    for _ in range(len(rrsets) + 1):  # follow CNAMEs in order
        step = next((r for r in rrsets if r.rdtype == dns.rdatatype.CNAME and _name(r.name.to_text()) == current),
                    None)
        if step is None:
            break
        current = _name(step[0].target.to_text())
        chain.append(current)
    for rrset in rrsets:
        if rrset.rdtype == dns.rdatatype.A:
            addresses.extend(rr.address for rr in rrset)
    status = "ok" if chain or addresses else "noanswer"
    return Answer(domain, shown, status, chain, sorted(set(addresses)))


def _is_right(answer: Answer, wanted: Record, present: bool) -> bool:
    if present:
        return answer.points_at(wanted.target) and bool(answer.addresses)
    return not answer.points_at(wanted.target)


def _wrong(answer: Answer, wanted: Record, present: bool) -> UserError:
    domain = wanted.names[0]
    if not present:
        return UserError(f"{domain} still resolves via {answer.server}: {answer.describe()}",
                         hint="the record may be cached or defined elsewhere on the DNS server; "
                              "check with `inv dns --check`")
    if answer.points_at(wanted.target):
        return UserError(f"{domain} is a CNAME of {wanted.target} on {answer.server}, "
                         f"but {wanted.target} has no address",
                         hint=f"give {wanted.target} an address on the DNS server (a local DNS record), "
                              f"or set dns_target to a name it knows")
    return UserError(f"{domain} does not resolve to CNAME {wanted.target} via {answer.server}: {answer.describe()}",
                     hint="if the record was just changed, the resolver may still cache the old answer; "
                          "otherwise set dns_server / dns_port to the DNS server that holds the record")


def report(settings, wanted: Record) -> Answer:
    """``inv dns --check``: print the answer; fail when it is not the wanted CNAME."""
    from ...core import console

    answer = resolve(settings, wanted.names[0])
    console.result(f"{answer.describe()}  ({answer.server})")
    if not _is_right(answer, wanted, present=True):
        raise _wrong(answer, wanted, present=True)
    return answer


def verify(settings, wanted: Record, present: bool = True) -> Answer:
    """After a change: ask until the answer is right, or fail after ``dns_check_timeout`` seconds.

    No answer (the server restarting) and a wrong answer (the old one) are retried alike; the error
    at the deadline is the last one seen.
    """
    from ...core import console

    timeout = max(float(settings.dns_check_timeout), 0.0)
    deadline = poll.Deadline(timeout)
    waiting, last = False, None  # last: the Answer, or the NoAnswer, of the last question

    def right() -> Answer | None:
        nonlocal waiting, last
        try:
            # a query lost while the server restarts is sent again after a second, not dnspython's 2 s
            last = resolve(settings, wanted.names[0], lifetime=min(QUERY_LIFETIME, max(deadline.left(), 1.0)),
                           attempt=1.0)
        except NoAnswer as exc:
            last = exc
            if not waiting and not deadline.passed:
                console.info(f"waiting for the DNS server to answer again (it restarts after a change; "
                             f"up to {timeout:.0f}s, dns_check_timeout)")
                waiting = True
            return None
        return last if _is_right(last, wanted, present) else None

    def at_deadline(_):
        if isinstance(last, NoAnswer):
            raise NoAnswer(f"{last.message}; still so {timeout:.0f}s after the change (dns_check_timeout)",
                           hint=f"the DNS server may still be restarting (a Raspberry Pi can take long): "
                                f"`inv dns --check` later, or raise dns_check_timeout "
                                f"(MSH_DNS_CHECK_TIMEOUT); else {last.hint}") from None
        raise _wrong(last, wanted, present)

    answer = poll.until(right, deadline, interval=RETRY_INTERVAL, on_timeout=at_deadline)
    console.done(f"DNS {answer.server}: {answer.describe()}")
    return answer


def _all_refused(exc) -> bool:
    """Whether every server answered REFUSED (an answer, unlike a timeout or SERVFAIL)."""
    import dns.rcode

    errors = exc.kwargs.get("errors") or []
    responses = [e[-1] for e in errors if e and hasattr(e[-1], "rcode")]
    return bool(responses) and len(responses) == len(errors) and all(
        r.rcode() == dns.rcode.REFUSED for r in responses)
