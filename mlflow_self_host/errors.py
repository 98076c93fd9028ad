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



# What a failed connection means, in a few words, whichever library raised it (requests, urllib3,
# the docker SDK, socket): the marker in its text, and what we say.
_CONNECTION_REASONS = (
    ("connection refused", "connection refused"),
    ("nameresolution", "unknown host name"),
    ("name or service not known", "unknown host name"),
    ("nodename nor servname", "unknown host name"),
    ("temporary failure in name resolution", "unknown host name"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("certificate verify failed", "certificate verify failed"),
    ("timed out", "timed out"),
    ("timeout", "timed out"),
    ("no such file or directory", "no such file or directory"),  # a unix socket that is not there
    ("permission denied", "permission denied"),
)


def connection_reason(exc: BaseException, limit: int = 200) -> str:
    """``exc`` as a few words for the one red line (not urllib3's chain of reprs)."""
    text = str(exc)
    lowered = text.lower()
    for marker, reason in _CONNECTION_REASONS:
        if marker in lowered:
            return reason
    return (text.strip().splitlines() or [type(exc).__name__])[0][:limit]
