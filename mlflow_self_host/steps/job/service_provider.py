"""Where the job's service is registered, so that the user's proxy finds it: the ``service_provider`` setting.

Traefik routes from one catalogue: its ``consulCatalog`` provider reads Consul's, its ``nomad`` provider
Nomad's own. A service block without ``provider`` is Consul's (Nomad's default: structs.go
``Service.IsConsul``), so the original recipe's job is in Consul's catalogue and the Traefik set up with
it reads that one; a service moved to Nomad's catalogue disappears from that Traefik while Nomad still
reports the job healthy. A group with a Consul service only goes to clients with a Consul agent: Nomad
adds the constraint ``${attr.consul.version} semver >= 1.8.0`` (nomad/job_endpoint_hooks.go).

``wanted(settings)`` says which one deploy registers the service in, and why (``inv config``):
1. ``consul`` or ``nomad``: as set (invoke.yaml, ``MSH_SERVICE_PROVIDER``);
2. ``auto`` (the default): the Nomad clients the job can go to (cluster.py). With Consul on them (Nomad's
   consul fingerprinter sets ``consul.version``): consul, as the original job; without: nomad; on some
   only: the one the ``host`` setting names decides, else consul (Nomad places the job where Consul is);
3. ``auto`` when the clients cannot be read (a token without node:read): the registered job's provider,
   so a deploy keeps the service where it is; no job either: nomad.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...core.errors import UserError
from . import cluster

PROVIDERS = ("consul", "nomad")
AUTO = "auto"
CONFIG_TIMEOUT = 5  # seconds `inv config` waits for Nomad to say what its clients are


@dataclass(frozen=True)
class Choice:
    value: str  # consul or nomad
    source: str

    def __str__(self) -> str:
        return self.value


def setting(settings) -> str:
    """The ``service_provider`` setting: auto, consul or nomad (a UserError for anything else)."""
    raw = str(settings.service_provider or "").strip().lower() or AUTO
    if raw not in PROVIDERS + (AUTO,):
        raise UserError(f"service_provider must be auto, consul or nomad, not {settings.service_provider!r} "
                        f"({settings.sources.get('service_provider', 'setting')})",
                        hint="consul when your Traefik reads Consul's catalogue (providers.consulCatalog), nomad "
                             "when it reads Nomad's (providers.nomad), auto to follow the clients")
    return raw


def wanted(settings, nodes=None, n=None, unreadable: str = "", timeout: float = CONFIG_TIMEOUT) -> Choice:
    """Where deploy registers the service (see the module's docstring). ``nodes``: the clients already
    read (cluster.py); ``unreadable``: why they could not be, else they are read here within ``timeout``."""
    raw = setting(settings)
    if raw != AUTO:
        return Choice(raw, settings.sources.get("service_provider", "setting"))
    if nodes is None and not unreadable:
        try:
            nodes = cluster.read(settings, n, timeout=timeout)
        except UserError as exc:
            unreadable = exc.message
    if nodes is None:
        return _without_clients(settings, n, unreadable, timeout)
    return _from_clients(settings, nodes)


def _from_clients(settings, nodes) -> Choice:
    targets, why = cluster.targets(settings, nodes)
    if not targets:
        return Choice("nomad", f"auto: Nomad's own catalogue ({why})")
    with_consul = [node for node in targets if node.consul]
    if not with_consul:
        return Choice("nomad", f"auto: {consul_on(targets)} ({why})")
    if len(with_consul) == len(targets):
        return Choice("consul", f"auto: {consul_on(targets)} ({why})")
    mine = [node for node in targets if node.is_host(settings.host)]
    if mine:
        return Choice("consul" if mine[0].consul else "nomad",
                      f"auto: {consul_on(mine[:1])}, the host setting ({why}; {consul_on(targets)})")
    return Choice("consul", f"auto: {consul_on(targets)}, and none is the host setting ({why})")


def _without_clients(settings, n, unreadable: str, timeout: float) -> Choice:
    """The registered job's provider when the clients cannot be read: a deploy then moves nothing."""
    from ...adapters import nomad_api

    try:
        job = nomad_api.registered_job(settings, n if n is not None else nomad_api.client(settings, timeout=timeout))
    except UserError:
        job = None
    running = provider_of(job)
    if running:
        return Choice(running, f"auto: the registered job's (the Nomad clients could not be read: {unreadable})")
    return Choice("nomad", f"auto: Nomad's own catalogue (the Nomad clients could not be read: {unreadable})")


def consul_on(nodes) -> str:
    """'the Nomad client m700 has Consul 1.17.1', 'the Nomad clients m700, pi4 have no Consul',
    'the Nomad clients m700 (Consul 1.17.1), pi4 (no Consul)'."""
    versions = {node.consul for node in nodes}
    many = len(nodes) > 1
    lead = f"the Nomad client{'s' if many else ''} {cluster.names(nodes)} ha{'ve' if many else 's'}"
    if versions == {""}:
        return f"{lead} no Consul"
    if len(versions) == 1:
        return f"{lead} Consul {versions.pop()}"
    return "the Nomad clients " + ", ".join(f"{node.name} ({f'Consul {node.consul}' if node.consul else 'no Consul'})"
                                            for node in nodes)


def services_of(job: dict | None) -> list[tuple[str, str]]:
    """(name, provider) of every service of a registered job, group and task ones; a service without a
    provider is Consul's, as Nomad takes it (structs.go ``Service.IsConsul``)."""
    out = []
    for group in (job or {}).get("TaskGroups") or []:
        services = list(group.get("Services") or [])
        for task in group.get("Tasks") or []:
            services += task.get("Services") or []
        out += [(service.get("Name", ""), service.get("Provider") or "consul") for service in services]
    return out


def provider_of(job: dict | None) -> str:
    """The provider of the job's (first) service, or "" when it has none."""
    found = services_of(job)
    return found[0][1] if found else ""
