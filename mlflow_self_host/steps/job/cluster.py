"""The Nomad client nodes, as the scheduler will see them: where the job can go, and their platforms.

``GET /v1/nodes`` gives stubs (datacenter, status, eligibility, drivers, host volumes) but no
attributes (structs.go ``Node.Stub``); ``cpu.arch`` and ``kernel.arch`` are only in ``GET /v1/node/<id>``,
so each node of the job's datacenters is read.

The targets of the job are the nodes its scheduler could pick apart from the architecture: in one of
the job's datacenters (globs as Nomad matches them), ready, eligible, not draining, with a healthy docker
driver, and, when any of them has them, the job's host volumes (configure-host puts them on ``host``).
"""
from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass, field

from ...core.errors import ExitCode, UserError
from ...adapters import nomad_api

HOST_VOLUMES = ("mlflow-backend-store", "mlflow-artifacts")  # the job file's; steps/host/client_hcl.py writes them


@dataclass
class ClientNode:
    id: str
    name: str
    datacenter: str
    address: str = ""
    status: str = ""
    eligibility: str = ""
    drain: bool = False
    docker: bool = False
    host_volumes: set = field(default_factory=set)
    attributes: dict = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return self.attributes.get("cpu.arch") or "?"

    @property
    def platform(self):
        from ...core.platforms import Platform

        return Platform.of_node(self.attributes)

    @property
    def consul(self) -> str:
        """The version of the Consul agent Nomad found on this client, or "" without one: Nomad's consul
        fingerprinter (client/fingerprint/consul.go) sets ``consul.version``, ``consul.datacenter``,
        ``consul.server``... only when the agent answers, and a group with a Consul service gets the
        implicit constraint ``${attr.consul.version} semver >= 1.8.0`` (nomad/job_endpoint_hooks.go)."""
        return self.attributes.get("consul.version") or ""

    @property
    def schedulable(self) -> bool:
        return self.status == "ready" and self.eligibility == "eligible" and not self.drain

    def missing_volumes(self) -> list[str]:
        return [v for v in HOST_VOLUMES if v not in self.host_volumes]

    def is_host(self, host: str) -> bool:
        """Whether this is the node the ``host`` setting names (its name, short name or address)."""
        host = (host or "").strip().lower()
        if not host:
            return False
        name = self.name.lower()
        if host in (name, self.address.lower()):
            return True
        try:
            ipaddress.ip_address(host)
            return False
        except ValueError:
            return name.split(".")[0] == host.split(".")[0]

    def why_not(self) -> str:
        """Why the job cannot go to this node (apart from volumes and architecture), or ""."""
        if self.status != "ready":
            return self.status or "not ready"
        if self.drain or self.eligibility != "eligible":
            return "ineligible"
        if not self.docker:
            return "no docker driver"
        return ""


def in_datacenters(settings, node: dict) -> bool:
    """Whether a node (as GET /v1/nodes lists it) is in the job's datacenters, globs matched as Nomad does:
    the one test deploy (``read``) and doctor make."""
    return any(fnmatch.fnmatch(node.get("Datacenter", ""), dc) for dc in settings.datacenters())


def read(settings, n=None, timeout: float | None = None) -> list[ClientNode]:
    """The client nodes of the job's datacenters, with their attributes (one read per node)."""
    if n is None:
        n = nomad_api.client(settings, **({"timeout": timeout} if timeout else {}))
    stubs = nomad_api.call(settings, "listing the client nodes", n.nodes.get_nodes) or []
    nodes = []
    for stub in stubs:
        if not in_datacenters(settings, stub):
            continue
        full = nomad_api.call(settings, f"reading node {stub.get('Name') or stub['ID'][:8]}", n.node.get_node,
                              stub["ID"]) or {}
        driver = (full.get("Drivers") or stub.get("Drivers") or {}).get("docker") or {}
        nodes.append(ClientNode(
            id=stub["ID"], name=full.get("Name") or stub.get("Name") or stub["ID"][:8],
            datacenter=stub.get("Datacenter", ""), address=stub.get("Address", ""),
            status=full.get("Status") or stub.get("Status", ""),
            eligibility=full.get("SchedulingEligibility") or stub.get("SchedulingEligibility", ""),
            drain=bool(full.get("Drain") if "Drain" in full else stub.get("Drain")),
            docker=bool(driver.get("Detected") and driver.get("Healthy")),
            host_volumes=set((full.get("HostVolumes") or stub.get("HostVolumes") or {}).keys()),
            attributes=full.get("Attributes") or {}))
    return nodes


def targets(settings, nodes: list[ClientNode]) -> tuple[list[ClientNode], str]:
    """(the nodes the job can go to apart from the architecture, why those), see the module's docstring."""
    where = f"datacenter {settings.datacenter}"
    if not nodes:
        return [], f"no Nomad client in {where}"
    usable = [node for node in nodes if not node.why_not()]
    if not usable:
        return [], f"no client in {where} can run it ({describe(nodes, reasons=True)})"
    with_volumes = [node for node in usable if not node.missing_volumes()]
    if with_volumes:
        return with_volumes, f"{where}, with the job's host volumes"
    return usable, f"{where}; none has the job's host volumes yet"


def image_fits(image_platforms, nodes: list[ClientNode]) -> list[ClientNode]:
    """The nodes that run an image of one of ``image_platforms``."""
    return [node for node in nodes if any(p.runs_on(node.platform) for p in image_platforms)]


def names(nodes: list[ClientNode]) -> str:
    return ", ".join(node.name for node in nodes)


def describe(nodes: list[ClientNode], reasons: bool = False) -> str:
    """'m700 amd64, pi4 arm64' (with ``reasons``: 'pi4 arm64: no docker driver')."""
    parts = []
    for node in nodes:
        text = f"{node.name} {node.platform if node.platform.variant else node.arch}"
        why = node.why_not() if reasons else ""
        parts.append(f"{text}: {why}" if why else text)
    return ", ".join(parts)


def mismatch(image: str, image_platforms, nodes: list[ClientNode], settings, refusing: str) -> UserError | None:
    """The refusal when no target node runs the image (exit 10, as a placement failure), else None."""
    from ...core.platforms import describe as platforms

    fitting, why = targets(settings, nodes)
    if not fitting or image_fits(image_platforms, fitting) or not all(n.attributes.get("cpu.arch") for n in fitting):
        return None  # nothing to compare with (the plan says why nothing can place it), or it fits
    wanted = sorted({str(node.platform) for node in fitting})
    if str(settings.platform or "").strip():
        fix = (f"the platform setting is {settings.platform} ({settings.sources.get('platform')}): set it to "
               f"{wanted[0]}, or empty to follow the clients, then deploy again")
    else:
        fix = (f"build and push it for them (`inv build --platform {wanted[0]} && inv push`), or deploy "
               "without --skip-build, which builds for the clients")
    return UserError(
        f"{image} is {platforms(image_platforms)}, but the Nomad clients that can run the job are "
        f"{describe(fitting)} ({why}): {refusing}",
        hint=fix + "; building for another architecture than the engine's needs QEMU emulation for the RUN "
                   "steps (see Troubleshooting)",
        code=ExitCode.PLACEMENT)
