"""version.txt: read, validate, bump, write. The image tag is ``v{version}``."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ExitCode, UserError

FILE_NAME = "version.txt"
PARTS = ("major", "minor", "patch")
_FORM = re.compile(r"[0-9]+(\.[0-9]+)*")


@dataclass(frozen=True)
class Version:
    """A version as written in version.txt: dot-separated numbers, kept as text (``0.99``)."""

    text: str

    @classmethod
    def parse(cls, text: str, origin: str = FILE_NAME) -> "Version":
        cleaned = text.strip()
        if not _FORM.fullmatch(cleaned):
            shown = cleaned if cleaned else "(empty)"
            raise UserError(
                f"{origin}: {shown!r} is not a version; expected dot-separated numbers like 0.99 or 1.2.3",
                code=ExitCode.BAD_ARGUMENT,
            )
        return cls(cleaned)

    @property
    def numbers(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.text.split("."))

    @property
    def tag(self) -> str:
        """The git and image tag: ``v0.99``."""
        return f"v{self.text}"

    def bump(self, part: str) -> "Version":
        """major/minor/patch, keeping the form: 0.99 -> 0.100 (minor), 1.0 (major), 0.99.1 (patch)."""
        if part not in PARTS:
            raise UserError(f"cannot bump {part!r}; valid parts: {', '.join(PARTS)}", code=ExitCode.BAD_ARGUMENT)
        index = PARTS.index(part)
        parts = self.text.split(".")
        while len(parts) <= index:
            parts.append("0")
        parts[index] = str(int(parts[index]) + 1)
        parts[index + 1 :] = ["0"] * (len(parts) - index - 1)
        return Version(".".join(parts))

    def __str__(self) -> str:
        return self.text


def version_file(root: Path) -> Path:
    return Path(root) / FILE_NAME


def read_version(root: Path) -> Version:
    path = version_file(root)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path} is missing", hint="create it with a version such as 0.99", code=ExitCode.BAD_ARGUMENT) from None
    return Version.parse(text, origin=str(path))


def write_version(root: Path, version: Version) -> None:
    version_file(root).write_text(version.text + "\n")
