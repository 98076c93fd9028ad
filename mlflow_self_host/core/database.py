"""The PostgreSQL store's URL: which stores there are, the URL's checks, and its password hidden (no I/O)."""
from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .errors import ExitCode, UserError

KINDS = ("sqlite", "postgres")
SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")
URL_HINT = ("export MSH_DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DATABASE (an empty database the "
            "user owns: `createdb -O USER DATABASE` on the server)")


def kind(settings) -> str:
    """The ``store`` setting, checked: sqlite or postgres."""
    value = str(settings.store).strip().lower()
    if value not in KINDS:
        raise UserError(f"store must be sqlite or postgres, not {settings.store!r}",
                        hint="set store in settings.yaml (`inv init --store`) or MSH_STORE", code=ExitCode.BAD_ARGUMENT)
    return value


# What the task's env file (go-envparse) would not give back as it is, outside the user and password.
_NOT_IN_ENV_FILE = re.compile(r"[\s'\"#\\`$@]")


def _userinfo(value: str) -> tuple[str, str, str | None, str] | None:
    """(scheme, user, password or None, the rest: host, port, database, query) of a URL with a user; None without.
    The user and password end at the URL's last ``@``, so a password may hold any character, ``@`` and ``/``
    included (the rest may not hold an ``@``); the user ends at the first ``:``."""
    scheme, sep, after = value.partition("://")
    userinfo, at, rest = after.rpartition("@")
    if not sep or not at:
        return None
    user, colon, password = userinfo.partition(":")
    return scheme, user, (password if colon else None), rest


def encoded(value: str) -> str:
    """The URL with its user and password percent-encoded (every character but letters, digits and ``-._~``):
    one URL that SQLAlchemy and libpq read alike (they decode them), and that the task's env file carries as it
    is (a password with ``' " # \\ $`` or a space would not survive go-envparse otherwise). A user or password
    percent-encoded already stays as it is."""
    parts = _userinfo(value)
    if parts is None:
        return value
    scheme, user, password, rest = parts
    userinfo = quote(unquote(user), safe="")
    if password is not None:
        userinfo += ":" + quote(unquote(password), safe="")
    return f"{scheme}://{userinfo}@{rest}"


def url(settings) -> str:
    """``database_url``, checked: set, and a PostgreSQL URL with a host and a database name; its user and
    password percent-encoded (``encoded``), as every consumer (the job's Variable, migrate, doctor) gets it."""
    value = encoded(str(settings.database_url or "").strip())
    if not value:
        raise UserError("MSH_DATABASE_URL is not set: no PostgreSQL database to use", hint=URL_HINT)
    parts = _userinfo(value)
    if _NOT_IN_ENV_FILE.search(parts[3] if parts else value.partition("://")[2]):
        raise UserError(f"MSH_DATABASE_URL has a space, quote, '#', '\\', '`', '$' or '@' outside its user and password: "
                        f"{shown_url(value)}", hint="percent-encode it (a space is %20, '#' is %23)", code=ExitCode.BAD_ARGUMENT)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise UserError(f"MSH_DATABASE_URL is not a URL: {shown_url(value)}", hint=URL_HINT) from None
    if parts.scheme not in SCHEMES:
        raise UserError(f"MSH_DATABASE_URL must be a postgresql:// URL, not {parts.scheme or 'no scheme'}://",
                        hint=URL_HINT)
    if not parts.hostname or not parts.path.strip("/"):
        raise UserError(f"MSH_DATABASE_URL needs a host and a database name: {shown_url(value)}", hint=URL_HINT)
    return value


def sqlalchemy_url(value: str) -> str:
    """The URL with psycopg2 named as its driver (``postgresql+psycopg2://``): the image carries psycopg2,
    and SQLAlchemy 2.1 (the image's on Python 3.11 and later) takes plain ``postgresql://`` for psycopg 3."""
    scheme, sep, rest = value.partition("://")
    return f"postgresql+psycopg2://{rest}" if sep and scheme in SCHEMES else value


def shown_url(value: str) -> str:
    """The URL with its password as ``****`` (``postgresql://mlflow:****@db.lan/mlflow``)."""
    try:
        parts = urlsplit(value)
        if parts.password is None:
            return value
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}:****@{netloc[1]}"))
    except ValueError:
        return "(a URL that cannot be read)"


def hide(text: str, value: str) -> str:
    """``text`` with the URL's password (raw, percent-decoded and percent-encoded) replaced by ``****``."""
    text = str(text)
    parts = _userinfo(str(value))
    raw = (parts[2] or "") if parts else ""
    for secret in sorted({raw, unquote(raw), quote(unquote(raw), safe="")}, key=len, reverse=True):
        if len(secret) >= 1:
            text = text.replace(secret, "****")
    return text


def endpoint(value: str) -> tuple[str, int, str]:
    """(host, port, database) of the URL; port 5432 when it has none."""
    parts = urlsplit(value)
    return parts.hostname or "", parts.port or 5432, parts.path.strip("/")
