"""The one error type for user-facing failures."""
from __future__ import annotations


class UserError(Exception):
    """A failure the user can act on: shown as one red line (plus a hint), never a traceback.

    ``code`` is the process exit code; tasks document the codes they use in their help.
    """

    def __init__(self, message: str, hint: str | None = None, code: int = 1):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"

