"""The one error type for user-facing failures, and every exit code a task can end with.

The "Exit codes" table in docs/troubleshooting.md lists the same codes; tests/test_errors.py keeps the two identical.
"""
from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a task's exit code means: one meaning per number, the same for every task."""

    OK = 0
    FAILED = 1                 # any other error: the red line says what and what to do
    BAD_ARGUMENT = 2           # a bad flag or version.txt, or what it names is not there (a job version, a tag)
    NO_ENGINE = 4              # no Docker engine answers (DOCKER_HOST)
    BUILD_FAILED = 5           # a build step failed
    NOT_BUILT = 6              # push: the image is not built yet
    REGISTRY_UNREACHABLE = 7   # the registry does not answer
    INSECURE_REFUSED = 8       # the engine refuses a plain-HTTP registry (insecure-registries)
    UNAUTHORIZED = 9           # the registry refused the login or the push (or MLflow the admin's: inv users)
    PLACEMENT = 10             # Nomad cannot place the job (or no client of the image's architecture)
    DEPLOY_FAILED = 11         # the deployment failed and was not reverted (or the revert failed too)
    REVERTED = 12              # the deployment failed and Nomad reverted to the last stable version
    SERVICE_UNREACHABLE = 13   # healthy in Nomad, but the service URL does not answer
    LOCKED = 14                # another release, deploy, rollback or restore holds the deploy lock
    STORE_REFUSED = 15         # the database on the host cannot be taken over as it is: nothing changed
    LOCAL_UNHEALTHY = 16       # the local server did not answer healthy (inv up); 10 until December 2026
    SMOKE_FAILED = 17          # the smoke test failed: no server, Host header refused, a value not read back
    CERTIFICATE = 18           # https: MLflow's certificate is not trusted (ca_file), expired or not for the name


INTERRUPTED = 130  # Ctrl-C (SIGINT), by the shell's convention: core/taskrun's "interrupted", a deploy's migration


class UserError(Exception):
    """A failure the user can act on: shown as one red line (plus a hint), never a traceback.

    ``code`` is the process exit code (an ``ExitCode``); tasks document the codes they use in their help.
    """

    def __init__(self, message: str, hint: str | None = None, code: int = ExitCode.FAILED):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = int(code)

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
    return first_line(exc, limit)


def first_line(exc_or_text, limit: int = 200) -> str:
    """The first non-empty line of an exception's (or a text's) message, at most ``limit`` characters;
    an exception with no message is named by its type."""
    text = str(exc_or_text).strip()
    if not text and isinstance(exc_or_text, BaseException):
        return type(exc_or_text).__name__
    return (text.splitlines() or [""])[0].strip()[:limit]
