"""The platform the image is built for: the ``platform`` setting, else the Nomad clients', else this machine's.

A platform is ``os/arch[/variant]`` as Docker names it (``linux/amd64``, ``linux/arm64``,
``linux/arm/v7``). A Nomad client says its own in two attributes (client/fingerprint/arch.go and
host.go): ``cpu.arch``, the Go architecture of the agent (amd64, arm64, arm...), and ``kernel.arch``
(x86_64, aarch64, armv7l...), which gives the ARM variant a 32-bit Raspberry Pi needs.

``wanted(settings)`` decides what ``inv build`` builds for, and says where that came from (``inv config``):
1. the ``platform`` setting when it is set (invoke.yaml, MSH_PLATFORM, ``inv build --platform``);
2. else the clients the job can go to (job/cluster.py): when they share one architecture, theirs;
   when they differ, the one named by the ``host`` setting; else it cannot be decided (build refuses);
3. else (no Nomad answer, no such client) this machine's.
"""
from __future__ import annotations

import platform as _platform
from dataclasses import dataclass

from ..errors import UserError

# Docker's normalisation (containerd platforms.Normalize): what people and kernels call them.
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm",
                 "i386": "386", "i686": "386"}
_ALIAS_VARIANT = {"armhf": "v7", "armel": "v6"}
# kernel.arch (uname -m) of a 32-bit ARM client: the variant its kernel runs.
_KERNEL_ARM_VARIANT = {"armv6l": "v6", "armv7l": "v7", "armv8l": "v8", "aarch64": "v8"}
CONFIG_TIMEOUT = 5  # seconds `inv config` and `inv build` wait for Nomad to say what its clients are


@dataclass(frozen=True)
class Platform:
    os: str
    arch: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.arch, self.variant) if p)

    @classmethod
    def parse(cls, text: str, origin: str = "platform") -> "Platform":
        """``linux/arm64``, ``linux/arm/v7``; a bare ``amd64`` means linux/amd64; aliases are normalised."""
        parts = [p.strip().lower() for p in str(text).strip().split("/")]
        if len(parts) == 1 and parts[0]:
            parts = ["linux", parts[0]]
        if len(parts) not in (2, 3) or not all(parts):
            raise UserError(f"{origin}: {text!r} is not a platform like linux/amd64 or linux/arm64",
                            hint="set platform (invoke.yaml, MSH_PLATFORM or --platform) to os/arch[/variant]")
        os_name, arch = parts[0], parts[1]
        variant = parts[2] if len(parts) == 3 else _ALIAS_VARIANT.get(arch, "")
        arch = _ARCH_ALIASES.get(arch, arch)
        if arch == "arm64" and variant == "v8":
            variant = ""  # linux/arm64/v8 is linux/arm64
        return cls(os_name, arch, variant)

    @classmethod
    def of_image(cls, attrs: dict) -> "Platform":
        """From an image config (the engine's inspect: Os/Architecture/Variant; the registry's config
        blob: os/architecture/variant)."""
        get = lambda *keys: next((attrs.get(k) for k in keys if attrs.get(k)), "")  # noqa: E731
        arch = get("Architecture", "architecture")
        return cls.parse("/".join(p for p in (get("Os", "os") or "linux", arch, get("Variant", "variant")) if p))

    @classmethod
    def of_node(cls, attributes: dict) -> "Platform":
        """A Nomad client's: kernel.name/cpu.arch, with the variant of a 32-bit ARM kernel."""
        arch = attributes.get("cpu.arch") or ""
        variant = _KERNEL_ARM_VARIANT.get(attributes.get("kernel.arch") or "", "") if arch == "arm" else ""
        return cls(attributes.get("kernel.name") or "linux", arch, variant)

    def same(self, other: "Platform") -> bool:
        """The same platform (a 32-bit ARM image without a variant is v7, as Docker defaults it)."""
        return self._key() == other._key()

    def _key(self) -> tuple:
        return self.os, self.arch, self.variant or ("v7" if self.arch == "arm" else "")

    def runs_on(self, node: "Platform") -> bool:
        """Whether a node of platform ``node`` runs an image of this platform without emulation (an ARMv6
        kernel does not run v7 code; a v7 kernel runs v6)."""
        if (self.os, self.arch) != (node.os, node.arch):
            return False
        if self.arch != "arm":
            return True
        return (self.variant or "v7") <= (node.variant or "v7")


def parse_list(text: str, origin: str = "platform") -> list[Platform]:
    """``linux/amd64`` or ``linux/amd64,linux/arm64`` (each once, in order)."""
    out: list[Platform] = []
    for part in str(text).split(","):
        if part.strip():
            platform = Platform.parse(part, origin)
            if platform not in out:
                out.append(platform)
    if not out:
        raise UserError(f"{origin} is empty", hint="set it to os/arch, like linux/amd64")
    return out


def this_machine() -> Platform:
    """The platform of the machine running the tasks (an Apple Silicon Mac's engine is linux/arm64)."""
    machine = _platform.machine().lower()
    variant = _KERNEL_ARM_VARIANT.get(machine, "") if machine.startswith("armv") else ""
    return Platform("linux", _ARCH_ALIASES.get(machine, "arm" if machine.startswith("armv") else machine), variant)


def describe(platforms) -> str:
    return ", ".join(str(p) for p in platforms)


def archs(platforms) -> str:
    """The value of the job's ``arch`` variable: the architectures, comma-separated (Nomad's cpu.arch)."""
    seen: list[str] = []
    for p in platforms:
        if p.arch not in seen:
            seen.append(p.arch)
    return ",".join(seen)


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
            raise UserError(self.problem, hint="set platform (invoke.yaml or MSH_PLATFORM, or `inv build "
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
    """What to build for (see the module's docstring). ``nodes``: the clients already read (job/cluster.py);
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
