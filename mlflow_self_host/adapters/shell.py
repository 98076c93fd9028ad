"""What a shell command on a host gave back, for ``ssh.Remote`` and its local twin ``local.LocalShell``
(no SSH library here, so local mode does not load one)."""
from __future__ import annotations

import shlex
from dataclasses import dataclass

SUDO_PROMPT = "[msh-sudo] password: "  # the prompt Remote gives sudo, so that it can be taken out of stderr


@dataclass
class Result:
    stdout: str
    stderr: str
    exited: int

    @property
    def ok(self) -> bool:
        return self.exited == 0

    @property
    def reason(self) -> str:
        """Why it failed, in one line: the last line of stderr (else stdout), without sudo's prompt."""
        text = self.stderr.replace(SUDO_PROMPT, "").strip() or self.stdout.strip()
        return text.splitlines()[-1].strip() if text else f"exit {self.exited}"


def quote(value) -> str:
    """``value`` (any, as its text) quoted for the host's shell."""
    return shlex.quote(str(value))


def short(cmd: str, limit: int = 80) -> str:
    """A command's first line, cut at ``limit`` characters, for a one-line error."""
    first = cmd.strip().splitlines()[0] if cmd.strip() else cmd
    return first if len(first) <= limit and "\n" not in cmd.strip() else first[:limit] + " …"
