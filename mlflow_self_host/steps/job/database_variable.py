"""store: postgres: the Nomad Variable the job's template reads the database's URL from.

The URL is a secret: it never goes into the job's text. Deploy writes it, before the register, as the
item ``database_url`` of the Variable ``nomad/jobs/{job_name}`` in the job's namespace (the path the job's
tasks may read by default, through their workload identity), in the form the image's driver takes
(``postgresql+psycopg2://``: core/database.py ``sqlalchemy_url``). It is read first: written only when it
differs (check-and-set at the index read), shown with its password as ``****``. Other items of that
Variable are kept.

Each write also sets the item ``revision`` (when it was written, UTC: ``20261201T030000123456Z``) and the
item ``database_url_<revision>``, the same URL: that item is what the job's template reads (the job variable
``database_revision`` names it). So
- a new URL changes the job itself, and Nomad replaces the allocations one at a time, as in any release,
  instead of the template restarting every task within the same few seconds (its ``change_mode`` is
  ``noop``);
- an older job version reads its own URL: Nomad's auto-revert and `inv rollback` bring the old URL back
  with the old version. A write keeps the items of the revisions the job's versions name (and the one
  there now), and drops the others.

With ``auth: basic`` (core/auth.py; any store) the same Variable carries the auth app's secrets the same way,
per revision: ``admin_password_<revision>`` (MSH_MLFLOW_ADMIN_PASSWORD) and ``secret_key_<revision>``
(MSH_MLFLOW_SECRET_KEY, else the one of the revision there now, else one made at the first write), hex-encoded
(the task's env file then carries any character as it is; the entrypoint decodes them). With SQLite and auth the
Variable holds only those (no ``database_url``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...core import database
from ...adapters import nomad_api

ITEM = "database_url"
REVISION = "revision"  # not secret: when deploy last wrote ITEM
# What deploy writes as REVISION. Anything else (a hand edit) is written anew: it names an item in the template.
REVISION_FORMAT = re.compile(r"\d{8}T\d{12}Z")
PASSWORD, SECRET_KEY = "admin_password", "secret_key"  # auth: basic (hex-encoded values)
PER_REVISION = (ITEM, PASSWORD, SECRET_KEY)
_IN_TEMPLATE = re.compile(r"\.(?:database_url|admin_password|secret_key)_(\w*)")


def item_for(revision: str, name: str = ITEM) -> str:
    """The item the job's template reads at ``revision`` (the database URL's, or ``name``'s)."""
    return f"{name}_{revision}"


def holds_revision(items, revision: str) -> bool:
    """The Variable's items (names) hold what a job reading ``revision`` reads (its URL, or its auth secrets)."""
    return any(item_for(revision, name) in items for name in PER_REVISION)


def hex_of(secret: str) -> str:
    """How an auth secret is held in the Variable (and rendered into the task's env file)."""
    return secret.encode().hex()


@dataclass
class VariableFacts:
    path: str
    wanted: str | None = field(repr=False)  # the URL the job must get (None: SQLite; shown only via database.shown_url)
    current: str | None = field(default=None, repr=False)  # the Variable's database_url now (None: none)
    exists: bool = False  # the Variable is there (with or without the item)
    items: dict = field(default_factory=dict, repr=False)  # its items now (kept on a write)
    modify_index: int = 0  # check-and-set: the write is refused when it changed since the read
    revision: str = ""  # the item REVISION now ("" before the first write of this version of deploy)
    new_revision: str = ""  # the one a write sets (when it was read)
    named: frozenset = frozenset()  # the revisions the job's registered versions read (their items are kept)
    auth: dict = field(default_factory=dict, repr=False)  # auth basic: {PASSWORD: hex, SECRET_KEY: hex} wanted

    @property
    def holds_wanted(self) -> bool:
        """The Variable's URL is the wanted one (as written before its user and password were percent-encoded too:
        the same URL, which the task read); with SQLite, no URL is wanted."""
        if self.wanted is None:
            return True
        return self.current is not None and database.encoded(self.current) == self.wanted

    def wanted_items(self) -> dict:
        """{name: value} of what each revision holds: the URL (postgres), the auth secrets (auth basic)."""
        return {**({ITEM: self.wanted} if self.wanted is not None else {}), **self.auth}

    @property
    def differs(self) -> bool:
        """Deploy writes it: another URL or secret, or no revision of deploy's making with its items."""
        if not self.holds_wanted or not REVISION_FORMAT.fullmatch(self.revision):
            return True
        for name, value in self.wanted_items().items():
            item = self.items.get(item_for(self.revision, name))
            if item is None or (database.encoded(item) if name == ITEM else item) != value:
                return True
        return False

    @property
    def auth_turns_on(self) -> bool:
        """Auth is wanted and the revision there now has none: clients need credentials from now on."""
        return bool(self.auth) and item_for(self.revision, PASSWORD) not in self.items

    def items_to_write(self) -> dict:
        """The Variable's items after a write: the URL and secrets at a new revision; the items of other
        revisions only where a job version (or the revision there now) reads them; other items kept."""
        keep = set(self.named) | {self.revision}
        prefixes = tuple(name + "_" for name in PER_REVISION)

        def kept(key: str) -> bool:
            prefix = next((p for p in prefixes if key.startswith(p)), None)
            return prefix is None or key[len(prefix):] in keep

        items = {key: value for key, value in self.items.items() if kept(key)}
        if self.wanted is not None:
            items[ITEM] = self.wanted
        items[REVISION] = self.new_revision
        items.update({item_for(self.new_revision, name): value for name, value in self.wanted_items().items()})
        return items

    @property
    def job_revision(self) -> str:
        """What the job's template names: the revision written now, else the one there."""
        return self.new_revision if self.differs else self.revision


def registered_revision(job: dict | None) -> str | None:
    """The revision whose item the job's template reads (None: no job, or a template that reads none)."""
    for group in (job or {}).get("TaskGroups") or []:
        for task in group.get("Tasks") or []:
            for template in task.get("Templates") or []:
                found = _IN_TEMPLATE.search(template.get("EmbeddedTmpl") or "")
                if found:
                    return found.group(1)
    return None


def wanted(settings) -> str | None:
    """The URL the job gets, or None when the store is SQLite (no URL is written then)."""
    if database.kind(settings) != "postgres":
        return None
    return database.sqlalchemy_url(database.url(settings))


def used(settings) -> bool:
    """The job reads the Variable: store postgres, or auth basic (core/auth.py)."""
    from ...core import auth

    return database.kind(settings) == "postgres" or auth.enabled(settings)


def wanted_auth(settings, items: dict | None = None, revision: str = "") -> dict:
    """auth basic: {PASSWORD: hex, SECRET_KEY: hex} the job gets (a missing admin password refused with the
    command that sets it); the secret key is MSH_MLFLOW_SECRET_KEY, else the revision's now, else a new one.
    {} with auth none."""
    import secrets

    from ...core import auth

    if not auth.enabled(settings):
        return {}
    password = auth.admin_password(settings)
    key = str(settings.secret_key or "")
    kept = (items or {}).get(item_for(revision, SECRET_KEY)) if revision else None
    return {PASSWORD: hex_of(password),
            SECRET_KEY: hex_of(key) if key else (kept or hex_of(secrets.token_urlsafe(32)))}


def _namespace(settings) -> str:
    return settings.nomad_namespace or "default"


def read(settings, n) -> VariableFacts | None:
    """The Variable as it is, against the URL and secrets wanted; None when the job reads none (sqlite, no auth)."""
    import datetime as dt

    from . import jobfile

    if not used(settings):
        return None
    url = wanted(settings)
    path = jobfile.database_variable(settings)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    variable = fetch(settings, n)
    if variable is None:
        return VariableFacts(path, url, new_revision=stamp, auth=wanted_auth(settings))
    items = dict(variable.get("Items") or {})
    revision = str(items.get(REVISION) or "")
    return VariableFacts(path, url, items.get(ITEM), True, items, int(variable.get("ModifyIndex") or 0),
                         revision=revision, new_revision=stamp, named=_named_by_versions(settings, n),
                         auth=wanted_auth(settings, items, revision))


def fetch(settings, n) -> dict | None:
    """The Variable as Nomad returns it (its items are secrets); None when there is none."""
    import nomad.api.exceptions as nex

    from . import jobfile

    path = jobfile.database_variable(settings)
    try:
        return n.variable.get_variable(path, namespace=_namespace(settings)) or {}
    except nex.URLNotFoundNomadException:
        return None
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        raise _error(exc, settings, f"reading the Nomad Variable {path}") from None


def _named_by_versions(settings, n) -> frozenset:
    """The revisions the job's registered versions read (Nomad keeps the last few versions)."""
    import nomad.api.exceptions as nex

    try:
        versions = n.job.get_versions(settings.job_name)
    except nex.URLNotFoundNomadException:
        return frozenset()
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        raise nomad_api.to_user_error(exc, settings, f"listing the versions of job {settings.job_name}") from None
    named = (registered_revision(v) for v in (versions or {}).get("Versions") or [])
    return frozenset(r for r in named if r)


def write(settings, n, facts: VariableFacts) -> None:
    """Write the wanted URL (check-and-set at the index read: a change made meanwhile is refused)."""
    import nomad.api.exceptions as nex

    from ...core.errors import UserError

    items = facts.items_to_write()
    try:
        n.variable.create_variable(facts.path, {"Items": items}, namespace=_namespace(settings),
                                   cas=facts.modify_index if facts.exists else 0)
    except nex.VariableConflict:
        raise UserError(f"the Nomad Variable {facts.path} changed after it was read; nothing was registered",
                        hint="someone else changed it meanwhile: run `inv deploy` again") from None
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        raise _error(exc, settings, f"writing the Nomad Variable {facts.path}") from None


def _error(exc, settings, what: str):
    error = nomad_api.to_user_error(exc, settings, what)
    error.message = database.hide(error.message, settings.database_url or "")
    code, _ = nomad_api.status_and_text(exc)
    if code == 403:
        error.hint = (f"the token needs variables read and write on nomad/jobs/{settings.job_name} in namespace "
                      f"{_namespace(settings)} (a `variables {{ path \"nomad/jobs/*\" {{ capabilities = "
                      "[\"read\", \"write\"] } }` rule), as on the deploy lock's path")
    return error
