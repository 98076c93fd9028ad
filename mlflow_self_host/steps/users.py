"""`inv users`: MLflow's users and their permissions, through the auth app's own REST API, as the admin.

Actions (tasks.py's flags): ``list``; ``add``, ``remove``, ``password`` (--set-password) of a user (the password
prompted twice, or from MSH_USER_PASSWORD: never a flag's value, which would stay in the shell's history);
``grant`` and ``revoke`` with ``--experiment`` (a name or an ID) or ``--model`` (a registered model's name)
and, to grant, ``--permission`` (READ, USE, EDIT, MANAGE or NO_PERMISSIONS). Each change reads first (the user, the
experiment or model), plans, and applies through the runner; ``--dry-run`` shows the plan only. One red line
for a wrong admin password (exit 9), an unknown user, experiment or model, or a user that exists already
(exit 2), an unreachable server (exit 13).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..core import auth
from ..core.errors import ExitCode, UserError
from ..core.plan import Plan

ACTIONS = ("list", "add", "remove", "password", "grant", "revoke")
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")
PASSWORD_ENV = "MSH_USER_PASSWORD"
_USERS = "api/2.0/mlflow/users/"
_PERMISSIONS = "api/3.0/mlflow/users/permissions/"


@dataclass
class Api:
    """The auth app's REST API at ``url`` with the admin's credentials."""

    url: str
    user: str
    password: str = field(repr=False)
    settings: object = field(default=None, repr=False)  # ca_file: the certificate's check (adapters/mlflow_http.py)

    def call(self, method: str, path: str, what: str, **kwargs) -> dict:
        import requests

        from ..adapters import mlflow_http

        try:
            response = mlflow_http.request(self.settings, method, self.url + path, auth=(self.user, self.password),
                                           timeout=30, **kwargs)
        except requests.RequestException as exc:
            from ..core.errors import connection_reason

            raise UserError(f"{what}: no MLflow answers at {self.url}: {connection_reason(exc)}",
                            hint="is it deployed and does the domain resolve (`inv doctor`)? --url names another "
                                 "server", code=ExitCode.SERVICE_UNREACHABLE) from None
        if response.status_code == 401:
            raise UserError(f"{what}: MLflow refused the admin {self.user}'s credentials (HTTP 401)",
                            hint="export MSH_MLFLOW_ADMIN_PASSWORD with the admin's password (the one of the "
                                 "server's first start, or the last set with `inv users --set-password`)",
                            code=ExitCode.UNAUTHORIZED)
        if response.status_code == 404 and "RESOURCE_DOES_NOT_EXIST" not in response.text:
            raise UserError(f"{what}: {self.url} has no user API (HTTP 404): the server runs without auth",
                            hint="set auth: basic and `inv deploy` (or `inv up --auth` locally)",
                            code=ExitCode.FAILED)
        if response.status_code >= 400:
            raise _refusal(what, response)
        return response.json() if response.content else {}


def _refusal(what: str, response) -> UserError:
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text.strip()[:200]}
    code, message = body.get("error_code", ""), str(body.get("message", "")).strip()
    if code in ("RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "INVALID_PARAMETER_VALUE"):
        return UserError(f"{what}: {message}", code=ExitCode.BAD_ARGUMENT)
    return UserError(f"{what}: MLflow answered HTTP {response.status_code}: {message or code}")


def api(settings, url: str | None = None) -> Api:
    password = auth.admin_password(settings) if settings.admin_password else None
    if password is None:
        raise auth.missing_password(settings)
    target = (url or settings.deploy_url or settings.service_url()).rstrip("/") + "/"  # deploy's URL
    return Api(target, str(settings.admin_username), password, settings)


def new_password(name: str, ask=None) -> str:
    """MSH_USER_PASSWORD, else asked twice on the terminal; MLflow's minimum length checked."""
    password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        import getpass
        import sys

        if ask is None and not sys.stdin.isatty():
            raise UserError(f"no password for {name}: no terminal to ask on and {PASSWORD_ENV} is not set",
                            hint=f"run it in a terminal, or export {PASSWORD_ENV} for this command",
                            code=ExitCode.BAD_ARGUMENT)
        ask = ask or getpass.getpass
        password = ask(f"password for {name}: ")
        if ask(f"again: ") != password:
            raise UserError("the two passwords differ; nothing was changed", code=ExitCode.BAD_ARGUMENT)
    if len(password) < auth.MIN_PASSWORD:
        raise UserError(f"the password for {name} is shorter than {auth.MIN_PASSWORD} characters: MLflow refuses it",
                        code=ExitCode.BAD_ARGUMENT)
    return password


def list_users(settings, url: str | None = None) -> list[dict]:
    return api(settings, url).call("GET", _USERS + "list", "listing MLflow's users").get("users", [])


@dataclass
class Facts:
    users: dict  # {name: is_admin}
    resource: tuple = ()  # (resource_type, resource_id, shown) for grant/revoke


def _resource(client: Api, experiment: str | None, model: str | None) -> tuple:
    if bool(experiment) == bool(model):
        raise UserError("name one --experiment or one --model", code=ExitCode.BAD_ARGUMENT)
    if model:
        client.call("GET", "api/2.0/mlflow/registered-models/get", f"reading the registered model {model!r}",
                    params={"name": model})
        return "registered_model", model, f"registered model {model!r}"
    found = None
    if experiment.isdigit():
        try:
            found = client.call("GET", "api/2.0/mlflow/experiments/get", f"reading experiment {experiment}",
                                params={"experiment_id": experiment})
        except UserError as exc:
            if exc.code != ExitCode.BAD_ARGUMENT:
                raise
    if found is None:
        found = client.call("GET", "api/2.0/mlflow/experiments/get-by-name", f"reading the experiment {experiment!r}",
                            params={"experiment_name": experiment})
    got = found["experiment"]
    return "experiment", got["experiment_id"], f"experiment {got['name']!r} ({got['experiment_id']})"


def make_plan(action: str, name: str, facts: Facts, permission: str = "") -> Plan:
    """What ``action`` changes, from the users there are; refusals as UserError. Pure."""
    plan = Plan(f"MLflow user {name}")
    exists = name in facts.users
    if action == "add":
        if exists:
            raise UserError(f"user {name} exists already", hint=f"`inv users --set-password {name}` sets its password",
                            code=ExitCode.BAD_ARGUMENT)
        plan.add("add", f"user {name}", "password ****; reads every experiment and model (MLflow's default "
                                        "permission READ) until granted more", op=("add",))
        return plan
    if not exists:
        raise UserError(f"no user {name} in MLflow ({len(facts.users)} users: {', '.join(sorted(facts.users))})",
                        hint="`inv users --add NAME` makes one", code=ExitCode.BAD_ARGUMENT)
    if action == "remove":
        plan.add("remove", f"user {name}", "and its permissions", op=("remove",))
    elif action == "password":
        plan.add("update", f"user {name}", "password ****", op=("password",))
    elif action == "grant":
        if permission not in PERMISSIONS:
            raise UserError(f"--permission must be one of {', '.join(PERMISSIONS)}, not {permission!r}",
                            code=ExitCode.BAD_ARGUMENT)
        plan.add("grant", f"{permission} on {facts.resource[2]}", f"to {name}", op=("grant",))
    elif action == "revoke":
        plan.add("revoke", f"{name}'s permission on {facts.resource[2]}", "back to the default (READ)",
                 op=("revoke",))
    return plan


def run(settings, action: str, name: str | None = None, experiment: str | None = None, model: str | None = None,
        permission: str | None = None, url: str | None = None, dry_run: bool = False, ask=None):
    """`inv users ACTION [NAME]`: the list (returned), or one change through the runner."""
    from ..core import console
    from . import runner

    if action not in ACTIONS:
        raise UserError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}", code=ExitCode.BAD_ARGUMENT)
    client = api(settings, url)
    if action == "list":
        users = list_users(settings, url)
        for user in users:
            console.result(f"{user['username']}{'  (admin)' if user.get('is_admin') else ''}")
        return users
    if not name:
        raise UserError(f"{action} needs a user name", code=ExitCode.BAD_ARGUMENT)
    permission = (permission or "").strip().upper()
    if action == "grant" and not permission:
        raise UserError("grant needs --permission (READ, USE, EDIT, MANAGE or NO_PERMISSIONS)",
                        code=ExitCode.BAD_ARGUMENT)
    secret: dict = {}

    def read() -> Facts:
        users = {u["username"]: bool(u.get("is_admin")) for u in client.call("GET", _USERS + "list",
                                                                               "listing MLflow's users")["users"]}
        resource = _resource(client, experiment, model) if action in ("grant", "revoke") else ()
        return Facts(users, resource)

    def plan(facts: Facts) -> Plan:
        made = make_plan(action, name, facts, permission)
        secret["resource"] = facts.resource
        if action in ("add", "password") and not dry_run and made.changes:
            secret["password"] = new_password(name, ask)
        return made

    def apply_one(change) -> str:
        kind = change.op[0]
        if kind == "add":
            client.call("POST", _USERS + "create", f"adding user {name}",
                        json={"username": name, "password": secret["password"]})
            return f"added user {name}"
        if kind == "remove":
            client.call("DELETE", _USERS + "delete", f"removing user {name}", json={"username": name})
            return f"removed user {name}"
        if kind == "password":
            client.call("PATCH", _USERS + "update-password", f"setting {name}'s password",
                        json={"username": name, "password": secret["password"], "current_password":
                              client.password if name == client.user else None})
            return f"set {name}'s password" + (" (export the new MSH_MLFLOW_ADMIN_PASSWORD now)"
                                               if name == client.user else "")
        kind_, rid, shown = secret["resource"]
        if kind == "grant":
            client.call("POST", _PERMISSIONS + "grant", f"granting {permission} on {shown} to {name}",
                        json={"username": name, "resource_type": kind_, "resource_id": rid, "permission": permission})
            return f"granted {permission} on {shown} to {name}"
        client.call("POST", _PERMISSIONS + "revoke", f"revoking {name}'s permission on {shown}",
                    json={"username": name, "resource_type": kind_, "resource_id": rid})
        return f"revoked {name}'s permission on {shown}"

    runner.run([runner.Step("users", read=read, plan=plan, apply_one=apply_one)], dry_run=dry_run)
    if action in ("remove", "password") and not dry_run and not url:  # --url: one server of the user's own
        stale = cache_window(settings, name, removed=action == "remove")
        if stale:
            console.warn(stale)
    return None


def cache_window(settings, name: str, removed: bool = False) -> str:
    """What a removal or a new password leaves behind for a while: each server process keeps the passwords it
    checked for ``auth_cache_seconds`` and forgets a changed user's at once only in the process the change went
    through (MLflow's ``_invalidate_user_auth_cache``); "" when that is every process (one allocation, one
    worker) or there is no cache."""
    from .job import jobfile

    seconds = int(settings.auth_cache_seconds)
    if seconds <= 0:
        return ""
    try:
        others = jobfile.allocations(settings) * int(settings.workers) - 1
        who = f"{others} other MLflow server process{'es' if others > 1 else ''}"
    except UserError:  # a count deploy would refuse: the change is made all the same; say it without a number
        others, who = None, "other MLflow server processes"
    if others is not None and others <= 0:
        return ""
    what = f"{name}'s password" if removed else f"{name}'s old password"
    return f"{who} may accept {what} for up to {seconds} s more (auth_cache_seconds; 0 turns the cache off)"
