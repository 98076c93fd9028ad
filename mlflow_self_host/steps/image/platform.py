"""The platform the image is built for: the ``platform`` setting, else the Nomad clients', else this machine's.

A platform is ``os/arch[/variant]`` as Docker names it (``linux/amd64``, ``linux/arm64``,
``linux/arm/v7``). A Nomad client says its own in two attributes (client/fingerprint/arch.go and
host.go): ``cpu.arch``, the Go architecture of the agent (amd64, arm64, arm...), and ``kernel.arch``
(x86_64, aarch64, armv7l...), which gives the ARM variant a 32-bit Raspberry Pi needs.

``wanted(settings)`` decides what ``inv build`` builds for, and says where that came from (``inv config``):
1. the ``platform`` setting when it is set (invoke.yaml, MSH_PLATFORM, ``inv build --platform``);
2. else the clients the job can go to (steps/job/cluster.py): when they share one architecture, theirs;
   when they differ, the one named by the ``host`` setting; else it cannot be decided (build refuses);
3. else (no Nomad answer, no such client) this machine's.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...core.errors import UserError
from ...core.platforms import Platform, archs, describe, parse_list, this_machine  # noqa: F401 - platform.X too

CONFIG_TIMEOUT = 5  # seconds `inv config` and `inv build` wait for Nomad to say what its clients are


@dataclass
class Choice:
    """What ``inv build`` builds for and why; ``problem`` when the clients do not decide it."""
    platforms: list[Platform]
    source: str
    problem: str = ""

    def __str__(self) -> str:
        return describe(self.platforms) or "(undecided)"

    def single(self) -> Platform:
        """The one platform to build for; a UserError when there is none, or several."""
        if self.problem:
            raise UserError(self.problem, hint="set platform (settings.yaml or MSH_PLATFORM, or `inv build "
                                               "--platform linux/arm64`) to the one of the node that runs MLflow")
        if len(self.platforms) > 1:
            raise UserError(
                f"platform {describe(self.platforms)} names {len(self.platforms)} platforms: the classic builder "
                "this project drives builds one per image",
                hint=f"build a multi-platform tag with buildx on a machine that has it (`docker buildx build "
                     f"--platform {','.join(str(p) for p in self.platforms)} --push -t REGISTRY/IMAGE:vVERSION "
                     "docker/`), then `inv deploy --skip-build`; or set platform to the one of the node that "
                     "runs MLflow")
        return self.platforms[0]


def wanted(settings, nodes=None, timeout: float = CONFIG_TIMEOUT, unreadable: str = "") -> Choice:
    """What to build for (see the module's docstring). ``nodes``: the clients already read (steps/job/cluster.py);
    ``unreadable``: why they could not be, else they are read here, each call within ``timeout`` seconds."""
    raw = str(settings.platform or "").strip()
    if raw:
        return Choice(parse_list(raw), settings.sources.get("platform", "setting"))
    from ..job import cluster

    here = this_machine()
    if nodes is None and not unreadable:
        try:
            nodes = cluster.read(settings, timeout=timeout)
        except UserError as exc:
            unreadable = exc.message
    if nodes is None:
        return Choice([here], f"this machine: the Nomad clients could not be read ({unreadable})")
    targets, why = cluster.targets(settings, nodes)
    if targets and not all(node.attributes.get("cpu.arch") for node in targets):
        targets, why = [], f"the Nomad clients {cluster.names(targets)} report no cpu.arch"
    if not targets:
        return Choice([here], f"this machine: {why}")
    found: list[Platform] = []
    for node in targets:
        if node.platform not in found:
            found.append(node.platform)
    if len(found) == 1:
        return Choice(found, f"the Nomad client{'s' if len(targets) > 1 else ''} {cluster.names(targets)} "
                             f"({why})")
    mine = [node for node in targets if node.is_host(settings.host)]
    if mine and len({node.platform for node in mine}) == 1:
        return Choice([mine[0].platform], f"the Nomad client {cluster.names(mine)}, the host setting "
                                          f"({why}; the others: {cluster.describe(targets)})")
    return Choice([], f"the Nomad clients differ: {cluster.describe(targets)}",
                  problem=f"the Nomad clients the job can go to have different architectures "
                          f"({cluster.describe(targets)}) and none is the host setting ({settings.host})")
