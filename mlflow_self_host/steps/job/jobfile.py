"""The job file and its variables, parsed by the Nomad agent; reading the registered job."""
from __future__ import annotations

import json
import re

from ...core.errors import ExitCode, UserError
from ...adapters import nomad_api

_TAG = re.compile(r":v([0-9][0-9.]*)$")


def variables(settings, version: str, arch: str | None = None, provider: str | None = None,
              database_revision: str | None = None) -> dict:
    """The job file's HCL2 variables, from the settings: the image is always the pinned v{version} tag.
    ``arch``: the image's architectures (Nomad's cpu.arch names, comma-separated), which the job's
    constraint places it by; deploy reads them from the registry. Without it: the platform setting's,
    else this machine's (what `inv build` makes when it cannot ask Nomad). ``provider``: where the
    service is registered (service_provider.py decides it from the setting and the clients when not given).
    ``database_revision``: store postgres or auth basic, the job Variable's revision (database_variable.py); a
    new one changes the job, so Nomad replaces the allocations one at a time. Not passed otherwise."""
    if not arch:
        from ...core import platforms as platform

        raw = str(settings.platform or "").strip()
        arch = platform.archs(platform.parse_list(raw) if raw else [platform.this_machine()])
    if not provider:
        from . import service_provider

        provider = service_provider.wanted(settings).value
    from ...core import auth, database

    store_kind = database.kind(settings)
    values = {
        "image": settings.image_ref(str(version)),
        "arch": arch,
        "datacenters": settings.datacenters(),
        "region": settings.nomad_region or "global",
        "domain": settings.domain,
        "cpu": int(settings.cpu),
        "memory": int(settings.memory),
        "workers": int(settings.workers),
        "metrics": bool(settings.metrics),
        "user": "{}:{}".format(*settings.image_user_ids()),
        "check_interval": settings.check_interval,
        "min_healthy_time": settings.min_healthy_time,
        "healthy_deadline": settings.healthy_deadline,
        "progress_deadline": settings.progress_deadline,
        "restart_attempts": int(settings.restart_attempts),
        "restart_delay": settings.restart_delay,
        "service_provider": provider,
        "traefik_entrypoints": entrypoints(settings),
        "https": bool(settings.https),  # the TLS router and plain HTTP's redirect or refusal (settings checked them)
        "traefik_tls_entrypoints": str(settings.traefik_tls_entrypoints),
        "traefik_certresolver": str(settings.traefik_certresolver),
        "plain_http": str(settings.plain_http),
        "store": store_kind,
        "database_variable": database_variable(settings),
        "allocations": allocations(settings, store_kind),
        "shutdown_delay": settings.shutdown_delay,
        "auth": auth.mode(settings),
        "admin_username": str(settings.admin_username),
        "auth_cache_seconds": int(settings.auth_cache_seconds),
    }
    if database_revision is not None:  # store postgres or auth basic: the Variable's revision (database_variable.py)
        values["database_revision"] = database_revision
    return values


def database_variable(settings) -> str:
    """The Nomad Variable that holds the PostgreSQL URL: under nomad/jobs/<job>, which the job's tasks may
    read by default (Nomad's workload identity)."""
    return f"nomad/jobs/{settings.job_name}"


def allocations(settings, store_kind: str | None = None) -> int:
    """The ``count`` setting, checked: 0 means 1 for sqlite, 2 for postgres; sqlite has one writer."""
    from ...core import database

    store_kind = store_kind or database.kind(settings)
    count = int(settings.count)
    source = settings.sources.get("count", "setting")
    if count < 0:
        raise UserError(f"count must be 0 (by store) or more, not {count} ({source})", code=ExitCode.BAD_ARGUMENT)
    if count == 0:
        return 2 if store_kind == "postgres" else 1
    if store_kind == "sqlite" and count != 1:
        raise UserError(f"count {count} with store sqlite: SQLite has one writer, so one allocation only ({source})",
                        hint="set count to 0 or 1, or move the store to PostgreSQL (`inv migrate-store --to postgres`)",
                        code=ExitCode.BAD_ARGUMENT)
    return count


def entrypoints(settings) -> str:
    """The ``traefik_entrypoints`` setting as the job's variable: names, comma-separated, or "" (no tag)."""
    names = [name.strip() for name in str(settings.traefik_entrypoints or "").split(",") if name.strip()]
    bad = [name for name in names if not re.fullmatch(r"[A-Za-z0-9_-]+", name)]
    if bad:
        raise UserError(f"traefik_entrypoints must name Traefik entry points, comma-separated, not {bad[0]!r} "
                        f"({settings.sources.get('traefik_entrypoints', 'setting')})",
                        hint="the names of your Traefik's entryPoints, such as web or web,websecure; empty for "
                             "all of them")
    return ",".join(names)


TLS_TAG = "traefik.http.routers.mlflow.tls=true"  # the job file's router serving TLS (https: true)


def serves_https(job: dict | None) -> bool:
    """The job's service tags make its router TLS (the https setting when it was registered)."""
    return any(TLS_TAG in (service.get("Tags") or []) for group in (job or {}).get("TaskGroups") or []
               for service in group.get("Services") or [])


def var_file(values: dict) -> str:
    """Variables in the var-file format /v1/jobs/parse takes (JSON literals are valid HCL). Nomad reads
    each value as an HCL expression, so ``${`` and ``%{`` in a string would start a template: they are
    escaped as ``$${`` and ``%%{``."""
    return "".join(f"{key} = {json.dumps(_literal(value))}\n" for key, value in values.items())


def _literal(value):
    if isinstance(value, str):
        return value.replace("${", "$${").replace("%{", "%%{")
    if isinstance(value, list):
        return [_literal(v) for v in value]
    return value


def read_source(settings) -> str:
    path = settings.path(settings.job_file)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise UserError(f"job file {path} not found",
                        hint="run from the project folder, or set job_file to the Nomad job file") from None


def parse(settings, n, version: str, arch: str | None = None, provider: str | None = None,
          database_revision: str | None = None) -> dict:
    """The job as JSON, parsed (and canonicalized) by the agent with the settings' variables."""
    if not provider:
        from . import service_provider

        provider = service_provider.wanted(settings, n=n).value
    values = variables(settings, version, arch, provider, database_revision)
    body = {"JobHCL": read_source(settings), "Variables": var_file(values),
            "Canonicalize": True}
    response = nomad_api.call(settings, f"parsing {settings.job_file}", n.jobs.request, "parse", json=body,
                              method="post", allow_redirects=True, refused=lambda text: _refused(settings, text))
    job = response.json()
    # The job is named by the job_name setting and lives in the configured namespace.
    job["ID"] = job["Name"] = settings.job_name
    job["Namespace"] = settings.nomad_namespace or "default"
    return job


# Warnings Nomad's parser puts beside its errors (not strict: a value for a variable the file does not declare).
_WARNING = re.compile(r": Undefined (-var )?variable;")


def _refused(settings, text: str) -> UserError:
    """A 400 from /v1/jobs/parse is the job file (or a value the settings give it) that Nomad's parser refuses:
    Nomad's own text ("input.hcl" is its name for the file), its errors without its warnings, exit 2, before
    anything was changed on Nomad."""
    lines = [line.strip() for line in text.removeprefix("Failed to parse job: ").splitlines() if line.strip()]
    errors = [line for line in lines if not _WARNING.search(line) and not line.startswith("This was checked by")]
    return UserError(f"Nomad's job parser refuses {settings.job_file}: {'; '.join(errors or lines)}",
                     hint=f"input.hcl is {settings.job_file} (Nomad's name for it); check it with `nomad job validate "
                          f"-var image=REGISTRY/IMAGE:vVERSION -var arch=amd64 {settings.job_file}`, or the setting "
                          "that gives the variable named", code=ExitCode.BAD_ARGUMENT)


def current(settings, n) -> dict | None:
    """The registered job, or None when Nomad does not know it (nomad_api.registered_job)."""
    return nomad_api.registered_job(settings, n)


def image_of(job: dict | None) -> str:
    for group in (job or {}).get("TaskGroups") or []:
        for task in group.get("Tasks") or []:
            image = (task.get("Config") or {}).get("image")
            if image:
                return image
    return ""


def version_of(image: str) -> str | None:
    """``0.99`` for ``registry/mlflow:v0.99``; None for any other tag."""
    m = _TAG.search(image or "")
    return m.group(1) if m else None


def task_name(job: dict | None) -> str:
    for group in (job or {}).get("TaskGroups") or []:
        for task in group.get("Tasks") or []:
            return task.get("Name", "")
    return ""
