"""Settings: invoke.yaml defaults, the user's settings.yaml, the environment, then task flags.

Every setting is a flat key (``registry``, ``nomad_addr``...) grouped in sections in invoke.yaml only
for reading. Precedence, lowest first:

1. ``invoke.yaml`` at the project root (the defaults, shipped with the code; every key lives there),
2. ``settings.yaml`` at the project root (the user's own values, only what they set; written by
   `inv init`, committed in their clone; the project never ships one). Same shape as invoke.yaml
   (``mlflow:`` then sections then keys), or keys straight under ``mlflow:``; a key invoke.yaml does
   not have is refused (exit 2),
3. the standard variable where one exists (``NOMAD_ADDR``, ``NOMAD_NAMESPACE``...),
4. ``MSH_<KEY>`` (``MSH_REGISTRY``, ``MSH_NOMAD_ADDR``...), the project's own and most specific,
5. a task flag (``inv build --base-image ...``).

Each value is given its default's type and then checked once, whatever its source (``CHECKS``: a
registry is host[:port], host, domain, dns_target and dns_server host names, a port 1-65535, a URL gets its
scheme from ``with_scheme``, datacenters are a list, durations Nomad's, choices one of theirs): a wrong one
is one red line naming the setting and its source, exit 2, before any task asks a service. Derived values have accessors (``datacenters()``,
``image_ref()``): the rest of the code never parses a setting again.

Secrets are never read from a file (invoke.yaml or settings.yaml): they come from the environment
only, and ``Settings.masked`` never shows them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import ExitCode, UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
ENV_PREFIX = "MSH_"
DEFAULTS_FILE = "invoke.yaml"   # the project's defaults (tracked, shipped)
USER_FILE = "settings.yaml"     # the user's own values (theirs to commit; never shipped)

# Standard variables of the tools we drive; the project's MSH_ variable still wins over them.
STANDARD_ENV = {
    "nomad_addr": "NOMAD_ADDR",
    "nomad_namespace": "NOMAD_NAMESPACE",
    "nomad_region": "NOMAD_REGION",
    "nomad_cacert": "NOMAD_CACERT",
    "nomad_client_cert": "NOMAD_CLIENT_CERT",
    "nomad_client_key": "NOMAD_CLIENT_KEY",
    "nomad_skip_verify": "NOMAD_SKIP_VERIFY",
}

# Secrets: environment only, first variable found wins.
SECRETS = {
    "registry_password": ("MSH_REGISTRY_PASSWORD",),
    "nomad_token": ("MSH_NOMAD_TOKEN", "NOMAD_TOKEN"),
    "pihole_password": ("MSH_PIHOLE_PASSWORD", "PIHOLE_PASSWORD"),
    "sudo_password": ("MSH_SUDO_PASSWORD",),
    "database_url": ("MSH_DATABASE_URL",),  # postgresql://user:password@host:5432/mlflow (store: postgres)
    "admin_password": ("MSH_MLFLOW_ADMIN_PASSWORD",),  # auth: basic, MLflow's admin (core/auth.py)
    "secret_key": ("MSH_MLFLOW_SECRET_KEY",),  # auth: basic, the server's CSRF key (unset: deploy makes one)
}

# Nomad names Variables after the job: ``nomad/jobs/{job_name}`` (the database URL) and
# ``mlflow-self-host/lock/{job_name}`` (the deploy lock). A Variable path must match ``^[a-zA-Z0-9-_~/]{1,128}$``
# (nomad/structs/variables.go), stricter than a job ID (which may hold a ``.``: only a space or a null byte is
# refused there): the job name is held to the Variable rule, without ``/`` (which would name another path).
LOCK_VARIABLE_PREFIX = "mlflow-self-host/lock/"  # + job_name: the deploy lock's Variable (adapters/lock.py)
_JOB_NAME_MAX = 128 - len(LOCK_VARIABLE_PREFIX)
JOB_NAME = re.compile(r"[a-zA-Z0-9_~-]{1,%d}" % _JOB_NAME_MAX)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _coerce(key: str, raw: Any, like: Any, origin: str) -> Any:
    """Give ``raw`` the type of the default ``like``; a bad value is the user's mistake (exit 2)."""
    if isinstance(like, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise UserError(f"{origin}: {key} must be true or false, not {raw!r}", code=ExitCode.BAD_ARGUMENT)
    if isinstance(like, int):
        try:
            return int(str(raw).strip())
        except ValueError:
            raise UserError(f"{origin}: {key} must be a whole number, not {raw!r}",
                            code=ExitCode.BAD_ARGUMENT) from None
    if isinstance(like, float):
        try:
            return float(str(raw).strip())
        except ValueError:
            raise UserError(f"{origin}: {key} must be a number, not {raw!r}", code=ExitCode.BAD_ARGUMENT) from None
    return "" if raw is None else str(raw)


# --- the typed checks: each takes (key, value, origin) and returns the value to keep, or refuses ---------
def _refuse(origin: str, key: str, value: Any, why: str, hint: str | None = None) -> UserError:
    return UserError(f"{origin}: {key} {value!r} {why}", hint=hint, code=ExitCode.BAD_ARGUMENT)


_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])"
REGISTRY = re.compile(_HOST + r"(?::(\d{1,5}))?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")
DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+")  # Nomad's (Go's) durations: 20s, 1m30s, 3m


def _port_number(key: str, value: int, origin: str) -> int:
    if not 1 <= value <= 65535:
        raise _refuse(origin, key, value, "is not a TCP port", "use a port from 1 to 65535")
    return value


def _registry(key: str, value: str, origin: str) -> str:
    """``host[:port]`` (an image reference's first part), no scheme, no trailing slash, no space."""
    text = value.strip()
    if "://" in text:
        bare = text.split("://", 1)[1].rstrip("/")
        raise _refuse(origin, key, value, "has a scheme; an image reference has none",
                      f"write {bare} (the engine chooses https, or http for an insecure registry)")
    if text.endswith("/"):
        raise _refuse(origin, key, value, "ends with '/' (the image would be named {registry}//{image})",
                      f"write {text.rstrip('/')}")
    if not text or any(ch.isspace() for ch in value):
        raise _refuse(origin, key, value, "is empty or holds a space",
                      f"write the registry as host[:port], like {''.join(text.split()) or 'registry.lan:5000'}")
    match = REGISTRY.fullmatch(text)
    if not match:
        raise _refuse(origin, key, value, "is not host[:port]", "write the registry as host[:port], like registry.lan:5000")
    if match[1] and not 1 <= int(match[1]) <= 65535:
        raise _refuse(origin, key, value, "has a port out of range", "use a port from 1 to 65535")
    return text


def with_scheme(url: str, default_scheme: str = "http") -> str:
    """The one way a URL setting gets its scheme: ``m700:4646`` → ``http://m700:4646`` (the Nomad CLI's
    default; Pi-hole's is https); a trailing slash removed. Refusals are ``url``'s, at load."""
    text = url.strip().rstrip("/")
    if text and "://" not in text:
        text = f"{default_scheme}://{text}"
    return text


def _url(default_scheme: str, required: bool = False):
    def check(key: str, value: str, origin: str) -> str:
        from urllib.parse import urlsplit

        if not value.strip():
            if required:
                raise _refuse(origin, key, value, "is empty", f"set it, like {default_scheme}://host:port")
            return ""
        if any(ch.isspace() for ch in value.strip()):
            raise _refuse(origin, key, value, "holds a space", f"write it without, like {default_scheme}://host:port")
        url = with_scheme(value, default_scheme)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError as exc:
            raise _refuse(origin, key, value, f"is not a URL ({exc})", "write it as http(s)://host[:port]") from None
        if parts.scheme not in ("http", "https"):
            raise _refuse(origin, key, value, f"has scheme {parts.scheme}, not http or https",
                          f"write http://{url.split('://', 1)[1]} or https://...")
        if not parts.hostname:
            raise _refuse(origin, key, value, "names no host", "write it as http(s)://host[:port]")
        return url
    return check


def _datacenters(key: str, value: str, origin: str) -> str:
    names = [dc.strip() for dc in value.split(",")]
    if value.strip() and (not all(names) or any(" " in dc for dc in names)):
        raise _refuse(origin, key, value, "is not a comma-separated list of datacenter names",
                      f"write it like DC0 or DC0,DC1 (now: {','.join(dc.replace(' ', '') for dc in names if dc)})")
    return ",".join(names) if value.strip() else ""


def _duration(key: str, value: str, origin: str) -> str:
    if not DURATION.fullmatch(value.strip()):
        raise _refuse(origin, key, value, "is not a Nomad duration", "write it like 20s, 3m or 1m30s")
    return value.strip()


def _at_least(minimum: float):
    def check(key: str, value, origin: str):
        if value < minimum:
            raise _refuse(origin, key, value, f"is less than {minimum}", f"use {minimum} or more")
        return value
    return check


def _between(low: int, high: int):
    def check(key: str, value, origin: str):
        if not low <= value <= high:
            raise _refuse(origin, key, value, f"is not between {low} and {high}", f"use {low} to {high}")
        return value
    return check


def _count(key: str, value: int, origin: str) -> int:
    if value < 0:
        raise UserError(f"{origin}: count must be 0 (by store) or more, not {value}", code=ExitCode.BAD_ARGUMENT)
    return value


def _positive(key: str, value, origin: str):
    if value <= 0:
        raise _refuse(origin, key, value, "must be more than 0", "use a positive number of seconds")
    return value


def _positive_of(unit: str):
    """More than 0, counted in ``unit`` (hours, days)."""
    def check(key: str, value, origin: str):
        if value <= 0:
            raise _refuse(origin, key, value, "must be more than 0", f"use a positive number of {unit}")
        return value
    return check


def _choice(*choices: str, empty: str = ""):
    """One of ``choices`` (case and spaces aside); ``empty``: what an empty value means (none: refused)."""
    named = ", ".join(choices[:-1]) + " or " + choices[-1]

    def check(key: str, value: str, origin: str) -> str:
        text = value.strip().lower() or empty
        if text not in choices:
            raise UserError(f"{origin}: {key} must be {named}, not {value!r}", hint=f"set {key} to one of them",
                            code=ExitCode.BAD_ARGUMENT)
        return text
    return check


def _host_name(required: bool = True):
    """A DNS name or an IP address (``m700``, ``traefik.lan``, ``10.0.0.5``, ``::1``), no scheme, port or space."""
    def check(key: str, value: str, origin: str) -> str:
        import ipaddress

        text = value.strip()
        if not text:
            if required:
                raise _refuse(origin, key, value, "is empty", "set it to a host name or an IP address")
            return ""
        if "://" in text or "/" in text:
            raise _refuse(origin, key, value, "is not a host name (it has a scheme or a path)",
                          "write only the name, like m700 or m700.lan")
        try:
            ipaddress.ip_address(text.strip("[]"))
            return text
        except ValueError:
            pass
        name = text[:-1] if text.endswith(".") else text  # a fully qualified name may end with its dot
        if not re.fullmatch(_HOST, name) or len(name) > 253:
            raise _refuse(origin, key, value, "is not a host name",
                          "write a name of letters, digits, '-' and '.', like m700.lan, or an IP address")
        return text
    return check


def _user_name(key: str, value: str, origin: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?", value.strip()):
        raise _refuse(origin, key, value, "is not a user name", "write the login name only, like ansible")
    return value.strip()


def _bin_dir(program: str):
    """Empty, or a folder holding the executable ``program`` (``~`` expanded)."""
    def check(key: str, value: str, origin: str) -> str:
        text = value.strip()
        if not text:
            return ""
        folder = Path(text).expanduser()
        if not folder.is_dir():
            raise _refuse(origin, key, value, "is not a folder", f"set it to the folder that holds {program}, "
                          "like /usr/lib/postgresql/17/bin, or leave it empty")
        if not os.access(folder / program, os.X_OK):
            raise _refuse(origin, key, value, f"has no {program} in it",
                          f"set it to the folder that holds {program}, like /usr/lib/postgresql/17/bin")
        return str(folder)
    return check


def _entrypoint_names(key: str, value: str, origin: str) -> str:
    """Traefik entry point names, comma-separated (``websecure``, ``web,websecure``), or empty; spaces dropped."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    bad = [name for name in names if not re.fullmatch(r"[A-Za-z0-9_-]+", name)]
    if bad or (value.strip() and not names):
        raise _refuse(origin, key, value, "is not a comma-separated list of Traefik entry point names",
                      "write the names of your Traefik's entryPoints, like websecure or web,websecure")
    return ",".join(names)


def _resolver_name(key: str, value: str, origin: str) -> str:
    text = value.strip()
    if text and not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise _refuse(origin, key, value, "is not a certificate resolver's name",
                      "write the name of one of your Traefik's certificatesResolvers, like letsencrypt, or leave "
                      "it empty for the proxy's default certificate")
    return text


def _pem_file(key: str, value: str, origin: str) -> str:
    """Empty, or a readable PEM file holding a certificate (``~`` expanded, made absolute)."""
    text = value.strip()
    if not text:
        return ""
    path = Path(text).expanduser().resolve()
    try:
        pem = path.read_text(errors="replace")
    except OSError as exc:
        raise _refuse(origin, key, value, f"cannot be read ({exc.strerror or exc})",
                      "set it to your CA's certificate, a PEM file (-----BEGIN CERTIFICATE-----), or leave it "
                      "empty for the system's CAs") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise _refuse(origin, key, value, "holds no PEM certificate",
                      "set it to your CA's certificate, a PEM file (-----BEGIN CERTIFICATE-----)")
    return str(path)


GC_AGE = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def _gc_age(key: str, value: str, origin: str) -> str:
    """Empty (gc off), or MLflow's ``mlflow gc --older-than`` #d#h#m#s (``30d``, ``12h``, ``1d12h``), more than 0."""
    text = value.strip()
    if not text:
        return ""
    match = GC_AGE.fullmatch(text)
    if not match or not any(match.groups()):
        raise _refuse(origin, key, value, "is not an age as mlflow gc --older-than takes it (#d#h#m#s)",
                      "write it like 30d, 12h or 1d12h; empty turns gc off")
    if not any(float(part) > 0 for part in match.groups() if part):
        raise _refuse(origin, key, value, "is no time at all (gc would remove a run the moment it is deleted)",
                      "write it like 30d, 12h or 1d12h; empty turns gc off")
    return text


def _cron(key: str, value: str, origin: str) -> str:
    """A cron line as Nomad's periodic block takes it: 5 to 7 fields (``0 4 * * *``) or a shorthand (``@daily``).
    Nomad checks the fields themselves when it parses the job."""
    text = " ".join(value.split())
    if not (text.startswith("@") and " " not in text) and not 5 <= len(text.split()) <= 7:
        raise _refuse(origin, key, value, "is not a cron line", 'write it like "0 4 * * *" (minute hour day month '
                                                                "weekday) or @daily")
    return text


def _cron_or_off(key: str, value: str, origin: str) -> str:
    """Empty (off), or a cron line as ``_cron`` takes it."""
    return _cron(key, value, origin) if value.strip() else ""


def _time_zone(key: str, value: str, origin: str) -> str:
    """An IANA time zone as Nomad's periodic ``time_zone`` takes it (Go's LoadLocation: ``UTC``, ``Local``,
    ``Europe/Paris``), checked against this machine's zone database when it has one."""
    import zoneinfo

    text = value.strip() or "UTC"
    if text in ("UTC", "Local") or not zoneinfo.available_timezones():
        return text
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _refuse(origin, key, value, "is not a time zone Nomad knows",
                      "write an IANA name, like UTC, Europe/Paris or America/New_York") from None
    return text


def _job_name(key: str, value: str, origin: str) -> str:
    if not JOB_NAME.fullmatch(value):
        raise UserError(
            f"{origin}: job_name {value!r} cannot name the job's Nomad Variables "
            f"(nomad/jobs/{{job_name}}, {LOCK_VARIABLE_PREFIX}{{job_name}}): Nomad's Variable paths take only "
            f"letters, digits, '-', '_' and '~', 128 characters at most "
            f"({_JOB_NAME_MAX} for the name)",
            hint="choose a job_name of those characters (mlflow-prod, not mlflow.prod)", code=ExitCode.BAD_ARGUMENT)
    return value


# Every setting whose value has a meaning beyond its type, with its check. The typed sections of invoke.yaml:
# a value is read (coerced to its default's type) and checked here once, at Settings.load and with_overrides.
CHECKS = {
    "registry": _registry,
    "workers": _at_least(1),
    "ssh_port": _port_number, "dns_port": _port_number, "local_port": _port_number,
    "nomad_addr": _url("http", required=True), "deploy_url": _url("http"), "pihole_url": _url("https"),
    "datacenter": _datacenters,
    "job_name": _job_name,
    "cpu": _at_least(1), "memory": _at_least(1), "count": _count, "restart_attempts": _at_least(0),
    "shutdown_delay": _duration, "check_interval": _duration, "min_healthy_time": _duration,
    "healthy_deadline": _duration, "progress_deadline": _duration, "restart_delay": _duration,
    "nomad_health_timeout": _positive, "deploy_timeout": _positive, "migrate_timeout": _positive, "lock_stale_after": _positive,
    "deploy_poll": _positive, "deploy_check_timeout": _at_least(0), "dns_check_timeout": _at_least(0),
    "doctor_timeout": _positive, "dns_ttl": _at_least(0), "backup_keep": _at_least(1),
    "backup_max_age_hours": _positive_of("hours"), "drill_max_age_days": _positive_of("days"),
    "store": _choice("sqlite", "postgres"), "dns_backend": _choice("pihole", "dnsmasq"),
    "auth": _choice("basic", "none"), "admin_username": _user_name, "auth_cache_seconds": _between(0, 3600),
    "service_provider": _choice("auto", "consul", "nomad", empty="auto"),
    "host": _host_name(), "ssh_user": _user_name, "domain": _host_name(), "dns_target": _host_name(),
    "dns_server": _host_name(required=False),
    "pg_bin_dir": _bin_dir("pg_dump"),
    "traefik_tls_entrypoints": _entrypoint_names, "traefik_certresolver": _resolver_name,
    "plain_http": _choice("redirect", "refuse", empty="redirect"), "ca_file": _pem_file,
    "gc_older_than": _gc_age, "gc_schedule": _cron,
    "backup_schedule": _cron_or_off, "backup_time_zone": _time_zone,
}


def _read_yaml(path: Path) -> dict:
    from invoke.util import yaml

    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise UserError(f"{path} is missing", hint="run the task from the project folder") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {exc}".splitlines()[0]) from None
    return data


def _secret_refused(path, key: str, code: int = ExitCode.FAILED) -> UserError:
    return UserError(f"{path}: {key} is a secret and is never read from a file",
                     hint=f"remove it and export {SECRETS[key][0]} instead", code=code)


def read_defaults(root: Path = PROJECT_ROOT) -> tuple[dict, dict]:
    """The ``mlflow:`` part of invoke.yaml as flat ``{key: value}`` and ``{key: section}``."""
    path = Path(root) / DEFAULTS_FILE
    data = _read_yaml(path).get("mlflow") or {}
    values, sections = {}, {}
    for section, keys in data.items():
        if not isinstance(keys, Mapping):
            raise UserError(f"{path}: mlflow.{section} must be a mapping of settings")
        for key, value in keys.items():
            if key in SECRETS:
                raise _secret_refused(path, key)
            values[key] = value
            sections[key] = section
    return values, sections


def read_user(root: Path, sections: Mapping[str, str]) -> dict:
    """The user's settings.yaml as flat ``{key: value}`` (empty when there is none).

    ``sections`` (invoke.yaml's ``{key: section}``) names the keys that exist: under ``mlflow:`` a key is
    either a section of invoke.yaml (a mapping of its keys) or a setting itself. A secret, a key invoke.yaml
    does not have, or another shape is refused with one line naming the key and the file (exit 2)."""
    path = Path(root) / USER_FILE
    if not path.exists():
        return {}
    name = USER_FILE

    def bad(message: str, hint: str) -> UserError:
        return UserError(f"{name}: {message}", hint=hint, code=ExitCode.BAD_ARGUMENT)

    try:
        data = _read_yaml(path)
    except UserError as exc:
        raise UserError(exc.message.replace(str(path), name), hint=f"fix {path}", code=ExitCode.BAD_ARGUMENT) from None
    if not isinstance(data, Mapping) or set(data) - {"mlflow"}:
        others = ", ".join(str(k) for k in data) if isinstance(data, Mapping) else type(data).__name__
        raise bad(f"everything goes under mlflow: (found {others})",
                  "write it as invoke.yaml is: mlflow:, then a section (image, host, nomad...) and its keys")
    top = data.get("mlflow") or {}
    if not isinstance(top, Mapping):
        raise bad("mlflow: must be a mapping of settings", "write mlflow:, then the settings under it, indented")
    known_sections = set(sections.values())
    values: dict = {}
    for key, value in top.items():
        if key in known_sections and (key not in sections or isinstance(value, Mapping)):  # a section
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise bad(f"mlflow.{key} must be a mapping of settings", f"write the {key} settings under it, indented")
            items = list(value.items())
        else:
            items = [(key, value)]
        for flat, item in items:
            if flat in SECRETS:
                raise _secret_refused(name, flat, code=ExitCode.BAD_ARGUMENT)
            if flat not in sections:
                raise bad(f"unknown setting {flat!r}",
                          f"remove it or correct its name in {path} (`inv config` lists every setting)")
            values[flat] = item
    return values


USER_FILE_HEADER = f"""\
# {USER_FILE}: this homelab's own settings for mlflow-self-host (written by `inv init`; edit it freely).
# Only what differs from the defaults in {DEFAULTS_FILE} (which ships with the project: leave that one as it is).
# Commit this file in your clone (git add {USER_FILE} && git commit): `inv release` wants a clean tree,
# and an update of the project never touches it. `inv config` shows every value and where it came from.
# Secrets never go here: export MSH_REGISTRY_PASSWORD, NOMAD_TOKEN, PIHOLE_PASSWORD, MSH_SUDO_PASSWORD,
# MSH_DATABASE_URL or MSH_MLFLOW_ADMIN_PASSWORD instead.
"""


def user_file_text(values: Mapping[str, Any], root: Path = PROJECT_ROOT) -> str:
    """settings.yaml holding ``values`` ({key: value}): the header, then ``mlflow:``, invoke.yaml's sections
    and keys in its order."""
    from invoke.util import yaml

    defaults, sections = read_defaults(Path(root))
    grouped: dict[str, dict] = {}
    for key in defaults:
        if key in values:
            grouped.setdefault(sections[key], {})[key] = values[key]
    return USER_FILE_HEADER + yaml.safe_dump({"mlflow": grouped}, sort_keys=False, default_flow_style=False,
                                             allow_unicode=True)


def write_user_values(root: Path, changes: Mapping[str, Any]) -> Path:
    """Set ``changes`` in settings.yaml (the file's other values kept; made when missing), atomically."""
    _, sections = read_defaults(Path(root))
    values = read_user(Path(root), sections)
    values.update(changes)
    path = Path(root) / USER_FILE
    tmp = path.with_name(f".{path.name}.msh-tmp")
    tmp.write_text(user_file_text(values, root))
    os.replace(tmp, path)
    return path


class Settings:
    """The effective settings and where each came from (``sources[key]``)."""

    def __init__(self, values: dict, sources: dict, sections: dict, root: Path = PROJECT_ROOT):
        self._values = dict(values)
        self.sources = dict(sources)
        self.sections = dict(sections)
        self.root = Path(root)

    @classmethod
    def load(
        cls,
        root: Path | str = PROJECT_ROOT,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        flag_names: Mapping[str, str] | None = None,
        user: Mapping[str, Any] | None = None,
    ) -> "Settings":
        """``user``: the user's values instead of settings.yaml's (`inv init` weighing a new file)."""
        env = os.environ if env is None else env
        defaults, sections = read_defaults(Path(root))
        user = read_user(Path(root), sections) if user is None else user
        values, sources = {}, {}
        for key, default in defaults.items():
            value, source = default, DEFAULTS_FILE
            if key in user:
                value, source = _coerce(key, user[key], default, USER_FILE), USER_FILE
            candidates = [STANDARD_ENV.get(key), ENV_PREFIX + key.upper()]
            for name in candidates:
                if name and name in env:
                    value, source = _coerce(key, env[name], default, f"env {name}"), f"env {name}"
            values[key] = _coerce(key, value, default, DEFAULTS_FILE) if source == DEFAULTS_FILE else value
            sources[key] = source
        for key, names in SECRETS.items():
            values[key], sources[key] = "", "unset"
            sections[key] = "secrets"
            for name in names:
                if env.get(name):
                    values[key], sources[key] = env[name], f"env {name}"
                    break
        return cls(values, sources, sections, Path(root)).with_overrides(overrides or {}, flag_names)

    @staticmethod
    def checked(values: dict, sources: dict) -> dict:
        """``values`` with every setting of CHECKS checked (first bad one refused, naming its source) and
        normalised (a URL's scheme added, a choice lower-cased)."""
        out = dict(values)
        for key, check in CHECKS.items():
            if key in out:
                out[key] = check(key, out[key], sources.get(key, "invoke.yaml"))
        return out

    def with_overrides(self, overrides: Mapping[str, Any], flag_names: Mapping[str, str] | None = None,
                       source: str | None = None) -> "Settings":
        """A copy with task flags applied; ``None`` means the flag was not given.

        ``flag_names`` names the flag that set a key when it is not ``--{key}`` (``local_port``: ``--port``);
        ``source`` names where every value came from instead (`inv init`: "your answer").
        """
        values, sources = dict(self._values), dict(self.sources)
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in values:
                raise KeyError(f"unknown setting {key!r}")
            flag = (flag_names or {}).get(key) or f"--{key.replace('_', '-')}"
            origin = source or f"flag {flag}"
            values[key] = _coerce(key, value, self._values[key], origin)
            sources[key] = origin
        return Settings(self.checked(values, sources), sources, self.sections, self.root)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def keys(self) -> Iterable[str]:
        return self._values.keys()

    def is_secret(self, key: str) -> bool:
        return key in SECRETS

    def masked(self, key: str) -> str:
        value = self._values[key]
        if self.is_secret(key):
            return "****" if value else "(unset)"
        return str(value)

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(section, key, shown value, source) for every setting, secrets masked."""
        return [(self.sections.get(k, ""), k, self.masked(k), self.sources[k]) for k in self._values]

    # Derived values used by several tasks -------------------------------------------------------
    def image_repo(self) -> str:
        return f"{self.registry}/{self.image}"

    def image_ref(self, version: str) -> str:
        """``{registry}/{image}:v{version}``, exactly the Makefile's tag."""
        return f"{self.image_repo()}:v{version}"

    def image_user_ids(self) -> tuple[int, int]:
        """``image_user`` ("1000:1000"): the uid and gid the image runs as, numbers."""
        import re

        value = str(self.image_user).strip()
        match = re.fullmatch(r"(\d+):(\d+)", value)
        if not match:
            raise UserError(f"image_user must be the image's UID:GID as numbers, like 1000:1000, not {value!r}",
                            hint="set image_user (settings.yaml or MSH_IMAGE_USER) to the uid:gid of the "
                                 "Dockerfile's USER")
        return int(match[1]), int(match[2])

    def datacenters(self) -> list[str]:
        """``datacenter`` (``DC0`` or ``DC0,DC1``; globs as Nomad matches them) as the job's list; empty: all."""
        return [dc for dc in str(self.datacenter).split(",") if dc] or ["*"]

    def service_url(self) -> str:
        """The URL users reach MLflow at: ``https://{domain}/`` with the setting https, else ``http://``."""
        return f"{'https' if self.https else 'http'}://{self.domain}/"

    def path(self, value: str) -> Path:
        """A project-relative path setting (``job_file``, ``local_data_dir``) made absolute."""
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else self.root / p
