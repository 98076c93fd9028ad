"""auth: basic is the default (issue 29): its secrets come from the environment only and are never shown; a
missing admin password is refused before any change with the command that sets it; `inv users` refuses its
mistakes with one line and exit 2, through `inv` as typed."""
from __future__ import annotations

import subprocess
import sys

import pytest

from mlflow_self_host.core.settings import PROJECT_ROOT
from tests.services import ADMIN_PASSWORD, clean_env


def inv(*args, expect, **env_changes):
    env = clean_env()
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["MSH_NOMAD_ADDR"] = "http://127.0.0.1:1"  # nothing answers there
    env["MSH_DEPLOY_URL"] = "http://127.0.0.1:1/"
    done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == expect, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and ADMIN_PASSWORD not in done.stdout + done.stderr
    return done


def test_config_shows_auth_basic_and_masks_the_admin_password():
    shown = inv("config", expect=0).stdout
    assert "admin_password" in shown and "****" in shown and "basic" in shown


@pytest.mark.parametrize("name", ["admin_password", "secret_key"])
def test_a_secret_in_settings_yaml_is_refused(tmp_path, name):
    from mlflow_self_host.core.errors import UserError
    from mlflow_self_host.core.settings import read_user

    (tmp_path / "settings.yaml").write_text(f"mlflow:\n  {name}: x\n")
    with pytest.raises(UserError, match=f"{name} is a secret and is never read from a file") as caught:
        read_user(tmp_path, {name: "auth"})
    assert caught.value.code == 2


def test_deploy_without_the_admin_password_is_refused_before_any_change():
    done = inv("deploy", "--skip-host", "--skip-build", expect=2, MSH_MLFLOW_ADMIN_PASSWORD=None)
    assert "MSH_MLFLOW_ADMIN_PASSWORD is not set" in done.stderr
    assert "export MSH_MLFLOW_ADMIN_PASSWORD=" in done.stderr


def test_deploy_with_auth_none_warns():
    done = inv("deploy", "--skip-host", "--skip-build", "--dry-run", expect=1, MSH_AUTH="none",
               MSH_MLFLOW_ADMIN_PASSWORD=None)
    assert "auth is none: anyone who reaches http://127.0.0.1:1/ may read, change and delete" in done.stderr


def test_users_mistakes_are_one_line_and_exit_2():
    assert "MSH_MLFLOW_ADMIN_PASSWORD is not set" in inv("users", expect=2, MSH_MLFLOW_ADMIN_PASSWORD=None).stderr
    assert "one of --add, --remove" in inv("users", "--add", "a", "--remove", "b", expect=2).stderr
    short = inv("users", expect=2, MSH_MLFLOW_ADMIN_PASSWORD="short").stderr
    assert "shorter than 12 characters" in short
    # no MLflow at the URL: 13, said once
    assert "no MLflow answers at http://127.0.0.1:1/" in inv("users", expect=13).stderr
    # no terminal and no MSH_USER_PASSWORD: refused before any change (the list is read first: 13 here)
    assert inv("users", "--add", "alice", "--dry-run", expect=13).returncode == 13


def test_up_stays_open_unless_auth_is_asked_and_then_wants_the_admin_password():
    done = inv("up", "--auth", "--dry-run", expect=2, MSH_MLFLOW_ADMIN_PASSWORD=None)
    assert "MSH_MLFLOW_ADMIN_PASSWORD is not set" in done.stderr


def test_the_local_server_gets_logins_only_with_auth():
    from mlflow_self_host.steps.local.server import server_env
    from tests.job.conftest import job_settings

    settings = job_settings("http://127.0.0.1:1")
    assert "MLFLOW_AUTH" not in server_env(settings, "sqlite:///x", "/a", "127.0.0.1")
    env = server_env(settings.with_overrides({"local_auth": True}), "sqlite:///x", "/a", "127.0.0.1")
    assert env["MLFLOW_AUTH"] == "basic" and bytes.fromhex(env["MLFLOW_AUTH_ADMIN_PASSWORD_HEX"]).decode() == \
        settings.admin_password
    assert env["MLFLOW_AUTH_CACHE_SECONDS"] == "30"  # the cluster's default, as deploy hands it to the job


@pytest.mark.parametrize("env, said", [
    ({}, ""),  # SQLite: one allocation with one worker, the process the change went through
    ({"MSH_STORE": "postgres"}, "1 other MLflow server process may accept bob's old password for up to 30 s more"),
    ({"MSH_STORE": "postgres", "MSH_WORKERS": "2"}, "3 other MLflow server processes may accept"),
    ({"MSH_STORE": "postgres", "MSH_AUTH_CACHE_SECONDS": "0"}, ""),  # no cache: every request checks the password
    ({"MSH_COUNT": "3"}, "other MLflow server processes may accept"),  # a count deploy refuses: no number
])
def test_a_new_password_says_how_long_other_server_processes_may_accept_the_old_one(env, said):
    from mlflow_self_host.core.settings import Settings
    from mlflow_self_host.steps.users import cache_window

    shown = cache_window(Settings.load(root=PROJECT_ROOT, env={**clean_env(), **env}, overrides={}), "bob")
    assert shown.startswith(said) if said else shown == ""


def test_a_removal_says_the_removed_users_password_may_still_be_accepted():
    from mlflow_self_host.core.settings import Settings
    from mlflow_self_host.steps.users import cache_window

    settings = Settings.load(root=PROJECT_ROOT, env={**clean_env(), "MSH_STORE": "postgres"}, overrides={})
    assert cache_window(settings, "bob", removed=True).startswith("1 other MLflow server process may accept bob's "
                                                                  "password for up to 30 s more")


@pytest.mark.parametrize("value, said", [("-1", "auth_cache_seconds -1 is not between 0 and 3600"),
                                         ("86400", "auth_cache_seconds 86400 is not between 0 and 3600")])
def test_an_auth_cache_out_of_range_is_refused_with_exit_2(value, said):
    assert said in inv("config", expect=2, MSH_AUTH_CACHE_SECONDS=value).stderr
