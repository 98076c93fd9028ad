"""auth: basic hands the admin's password and the server's secret key to the task through the job's Nomad Variable,
per revision as the database URL (issue 29): a new value is a new revision the job names, a revert reads its own,
a write drops the revisions no job version reads; the secret key deploy made is kept."""
from __future__ import annotations

from mlflow_self_host.steps.job import database_variable as dv
from tests.job.conftest import job_settings


def hx(text: str) -> str:
    return text.encode().hex()


def test_postgres_and_auth_items_are_written_per_revision_and_old_ones_dropped():
    facts = dv.VariableFacts("nomad/jobs/mlflow", "url-b", "url-b", True,
                             {"database_url": "url-b", "revision": "R2", "database_url_R1": "url-a",
                              "admin_password_R1": hx("old-admin-pw1"), "secret_key_R1": "k1",
                              "database_url_R2": "url-b", "admin_password_R2": hx("old-admin-pw2"),
                              "secret_key_R2": "k2", "database_url_R0": "url-0", "admin_password_R0": "p0",
                              "other": "kept"},
                             revision="R2", new_revision="R3", named=frozenset({"R1"}),
                             auth={"admin_password": hx("new-admin-pw3"), "secret_key": "k2"})
    assert facts.differs and facts.job_revision == "R3" and not facts.auth_turns_on
    assert facts.items_to_write() == {
        "database_url": "url-b", "revision": "R3", "other": "kept",
        "database_url_R1": "url-a", "admin_password_R1": hx("old-admin-pw1"), "secret_key_R1": "k1",
        "database_url_R2": "url-b", "admin_password_R2": hx("old-admin-pw2"), "secret_key_R2": "k2",
        "database_url_R3": "url-b", "admin_password_R3": hx("new-admin-pw3"), "secret_key_R3": "k2"}


def test_sqlite_with_auth_writes_no_url_and_the_same_secrets_change_nothing():
    items = {"revision": "20261201T030000000000Z", "admin_password_20261201T030000000000Z": hx("the-admin-pw"),
             "secret_key_20261201T030000000000Z": "abcd"}
    facts = dv.VariableFacts("nomad/jobs/mlflow", None, None, True, items, revision="20261201T030000000000Z",
                             new_revision="20261202T030000000000Z",
                             auth={"admin_password": hx("the-admin-pw"), "secret_key": "abcd"})
    assert not facts.differs and facts.job_revision == "20261201T030000000000Z"
    first = dv.VariableFacts("nomad/jobs/mlflow", None, new_revision="R9", auth={"admin_password": "70", "secret_key": "6b"})
    assert first.differs and first.auth_turns_on and "database_url" not in first.items_to_write()


def test_the_secret_key_deploy_made_is_kept_and_msh_mlflow_secret_key_wins():
    settings = job_settings("http://127.0.0.1:1")
    made = dv.wanted_auth(settings)
    assert made["admin_password"] == hx(settings.admin_password) and len(made["secret_key"]) >= 64
    kept = dv.wanted_auth(settings, {"secret_key_R1": made["secret_key"]}, "R1")
    assert kept["secret_key"] == made["secret_key"]
    chosen = job_settings("http://127.0.0.1:1", env={"MSH_MLFLOW_SECRET_KEY": "mine-and-only-mine"})
    assert dv.wanted_auth(chosen, {"secret_key_R1": made["secret_key"]}, "R1")["secret_key"] == hx("mine-and-only-mine")
    assert dv.wanted_auth(job_settings("http://127.0.0.1:1", auth="none")) == {}


def test_a_job_reading_only_the_auth_items_names_its_revision():
    job = {"TaskGroups": [{"Tasks": [{"Templates": [{"EmbeddedTmpl": 'MLFLOW_AUTH=basic\n{{ with nomadVar "nomad/jobs/m" }}'
                                                                      "X={{ .admin_password_R7 }}{{ end }}"}]}]}]}
    assert dv.registered_revision(job) == "R7"
