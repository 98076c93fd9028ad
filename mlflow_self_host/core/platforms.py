"""A platform, ``os/arch[/variant]`` as Docker names it (``linux/amd64``, ``linux/arm/v7``): the type, its
parsing and the small helpers the image, the registry, the engine and the Nomad clients share (no I/O but
``this_machine``). Which platform to build for is steps/image/platform.py's ``wanted``.
"""
from __future__ import annotations

import platform as _platform
from dataclasses import dataclass

from .errors import UserError

# Docker's normalisation (containerd platforms.Normalize): what people and kernels call them.
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm",
                 "i386": "386", "i686": "386"}
_ALIAS_VARIANT = {"armhf": "v7", "armel": "v6"}
# kernel.arch (uname -m) of a 32-bit ARM client: the variant its kernel runs.
_KERNEL_ARM_VARIANT = {"armv6l": "v6", "armv7l": "v7", "armv8l": "v8", "aarch64": "v8"}


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
                            hint="set platform (settings.yaml, MSH_PLATFORM or --platform) to os/arch[/variant]")
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
