"""MLflow's authentication (setting ``auth``): on or off, and the admin's credentials our tasks send (no I/O).

With ``auth: basic`` (the default) the server runs MLflow's auth app (``mlflow server --app-name basic-auth``):
every request needs HTTP Basic credentials of a user in its own database (``basic_auth.db`` beside
``mlflow.db``, or the PostgreSQL store's database). The admin (setting ``admin_username``) is made at the first
start with the password ``MSH_MLFLOW_ADMIN_PASSWORD`` (a secret: environment only, never shown); deploy hands it
and the server's secret key (``MSH_MLFLOW_SECRET_KEY``, else one deploy makes and keeps) to the task through the
job's Nomad Variable. Everything of ours that talks to MLflow sends the admin's credentials (``basic``); sent to a
server without auth they change nothing.
"""
from __future__ import annotations

import contextlib
import os

from .errors import ExitCode, UserError

MIN_PASSWORD = 12  # MLflow's own rule (mlflow.utils.validation._validate_password)
PASSWORD_ENV = "MSH_MLFLOW_ADMIN_PASSWORD"
SECRET_KEY_ENV = "MSH_MLFLOW_SECRET_KEY"


def enabled(settings) -> bool:
    """The ``auth`` setting (checked at load: basic or none) is basic."""
    return str(settings.auth).strip().lower() == "basic"


def mode(settings) -> str:
    return "basic" if enabled(settings) else "none"


def missing_password(settings) -> UserError:
    return UserError(f"auth is basic but {PASSWORD_ENV} is not set: MLflow's admin ({settings.admin_username}) "
                     "needs a password, and our tasks log in with it",
                     hint=f"export {PASSWORD_ENV}='a password of {MIN_PASSWORD} characters or more' (keep it in "
                          "your password manager), or set auth: none to serve MLflow without logins",
                     code=ExitCode.BAD_ARGUMENT)


def admin_password(settings) -> str:
    """The admin's password, checked (set, MLflow's minimum length); refused with the command that sets it."""
    value = str(settings.admin_password or "")
    if not value:
        raise missing_password(settings)
    if len(value) < MIN_PASSWORD:
        raise UserError(f"{PASSWORD_ENV} is shorter than {MIN_PASSWORD} characters: MLflow refuses such a password",
                        hint=f"export {PASSWORD_ENV} with a longer one", code=ExitCode.BAD_ARGUMENT)
    return value


def basic(settings) -> tuple[str, str] | None:
    """(user, password) our tasks send to MLflow: the admin's when its password is set, else None (no header)."""
    password = str(settings.admin_password or "")
    return (str(settings.admin_username), password) if password else None


@contextlib.contextmanager
def client_env(settings):
    """The MLflow client's credentials (MLFLOW_TRACKING_USERNAME/PASSWORD) set for the block: the admin's, unless
    the user set their own; put back as they were after."""
    creds = basic(settings)
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    before = {key: os.environ.get(key) for key in keys}
    if creds and not before["MLFLOW_TRACKING_USERNAME"]:
        os.environ.update(dict(zip(keys, creds)))
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
