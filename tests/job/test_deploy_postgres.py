"""store: postgres against the Nomad double (stub images): the database's URL goes through a Nomad Variable and
the job's template into each task's environment, never into the job; `count` allocations, replaced one at a
time so that one always serves; a changed URL comes with a new revision in the job's template, so the job
changes and its allocations are replaced one at a time, as in a release."""
from __future__ import annotations

import json
import threading
import time

import requests

from mlflow_self_host.flows import deploy as job_deploy
from tests.doubles.nomad.client import _epoch
from tests.job.conftest import job_settings
from tests.services import wait_for

URL = "postgresql://mlflow:s3cret-pw@db.lan:5432/mlflow"
DRIVER_URL = "postgresql+psycopg2://mlflow:s3cret-pw@db.lan:5432/mlflow"


def settings_for(double, url=URL, **more):
    more.setdefault("shutdown_delay", "1s")  # the test proxy reads the catalogue every 0.5 s
    # the database URL alone in the Variable (test_auth_variable.py: the auth secrets beside it)
    return job_settings(double, env={"MSH_DATABASE_URL": url}, store="postgres", **{"auth": "none", **more})


def run(settings, version, **kwargs):
    return job_deploy.deploy(settings, version, skip_host=True, skip_build=True, backup=False, **kwargs)


def running(double) -> list[dict]:
    return [a for a in double.running_allocs() if a["ClientStatus"] == "running"]


def env_of(double, alloc) -> dict:
    pairs = double.container_of(alloc["ID"]).attrs["Config"]["Env"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_the_url_reaches_every_task_through_the_variable_and_never_the_job(nomad_double, capsys):
    result = run(settings_for(nomad_double), "0.99")
    assert result.status == "deployed"
    variable = nomad_double.variables[("default", "nomad/jobs/mlflow")]
    revision = variable["Items"]["revision"]  # when deploy wrote it: the job's template reads its item
    assert variable["Items"] == {"database_url": DRIVER_URL, "revision": revision, f"database_url_{revision}": DRIVER_URL}
    assert f"{{{{ .database_url_{revision} }}}}" in json.dumps(nomad_double.job())
    allocs = running(nomad_double)
    assert len(allocs) == 2
    for alloc in allocs:
        assert env_of(nomad_double, alloc)["MLFLOW_BACKEND_STORE_URI"] == DRIVER_URL
    (_, body), = nomad_double.registrations()
    for text in (json.dumps(body), json.dumps(nomad_double.job()), capsys.readouterr().err):
        assert "s3cret-pw" not in text
    # the same URL again: no write, nothing registered
    index = variable["ModifyIndex"]
    assert run(settings_for(nomad_double), "0.99").status == "unchanged"
    assert nomad_double.variables[("default", "nomad/jobs/mlflow")]["ModifyIndex"] == index
    err = capsys.readouterr().err
    assert "already deployed" in err and "variable" not in err


def test_a_password_with_quotes_hash_backslash_dollar_and_space_reaches_the_task_as_the_user_set_it(nomad_double,
                                                                                                 capsys):
    """The task reads the URL from an env file (go-envparse, in the double as on a client): the Variable holds it
    with its user and password percent-encoded, so the task gets a URL that decodes to the password as typed
    (the real PostgreSQL through the real image: tests/job/test_release_on_postgres.py)."""
    from urllib.parse import unquote, urlsplit

    from tests.services.postgres import HARD_CHARACTERS

    password = HARD_CHARACTERS + "tail"
    result = run(settings_for(nomad_double, url=f"postgresql://ml user:{password}@db.lan:5432/mlflow"), "0.99")
    assert result.status == "deployed"
    for alloc in running(nomad_double):
        given = urlsplit(env_of(nomad_double, alloc)["MLFLOW_BACKEND_STORE_URI"])
        assert (unquote(given.username), unquote(given.password)) == ("ml user", password)
        assert (given.scheme, given.hostname, given.port, given.path) == ("postgresql+psycopg2", "db.lan", 5432, "/mlflow")
    assert password not in capsys.readouterr().err


def test_a_new_url_replaces_the_allocations_one_at_a_time(nomad_double, capsys):
    """A password change is a rolling update: the old tasks keep their URL (change_mode noop) and are never
    restarted together; the replacements start with the new one, and some allocation answers throughout."""
    settings = settings_for(nomad_double)
    run(settings, "0.99")
    old = {a["ID"] for a in running(nomad_double)}
    capsys.readouterr()
    new_url = URL.replace("s3cret-pw", "n3w-pw")
    with Serving(nomad_double) as serving:
        result = run(settings_for(nomad_double, new_url), "0.99")
    assert result.status == "deployed" and len(nomad_double.registrations()) == 2
    assert serving.answers and not serving.failures
    err = capsys.readouterr().err
    assert "update variable nomad/jobs/mlflow: database_url = postgresql+psycopg2://mlflow:****@db.lan:5432/mlflow" \
        in err and "n3w-pw" not in err and "EmbeddedTmpl" in err  # the diff shows the template's new item
    allocs = running(nomad_double)
    assert len(allocs) == 2 and not old & {a["ID"] for a in allocs}
    assert all("n3w-pw" in env_of(nomad_double, a)["MLFLOW_BACKEND_STORE_URI"] for a in allocs)
    for alloc_id in old:
        events = [e["Type"] for e in nomad_double.allocs[alloc_id]["TaskStates"]["mlflow_app"]["Events"]]
        assert "Restart Signaled" not in events and "Waiting for shutdown delay" in events
    assert_one_at_a_time(nomad_double, allocs)
    # the same URL again: nothing to do
    assert run(settings_for(nomad_double, new_url), "0.99").status == "unchanged"


def test_a_task_waits_for_a_missing_variable(nomad_double):
    """The template blocks the first start until the Variable is there (Nomad's 'Missing: nomad.var.block')."""
    settings = settings_for(nomad_double, count=1)
    job = job_deploy.jobfile.parse(settings, job_deploy.nomad_api.client(settings), "0.99")
    requests.post(nomad_double.address + "/v1/jobs", json={"Job": job}, timeout=5).raise_for_status()

    def waiting():
        with nomad_double.lock:
            allocs = [a for a in nomad_double.allocs.values() if a["DesiredStatus"] == "run"]
        events = [e for a in allocs for e in a["TaskStates"]["mlflow_app"]["Events"] if e["Type"] == "Template"]
        return events or None
    (event,) = wait_for(waiting, 20, "the Template event", interval=0.2)
    assert "Missing: nomad.var.block(nomad/jobs/mlflow@default.global)" in event["DisplayMessage"]
    assert not running(nomad_double)
    requests.put(nomad_double.address + "/v1/var/nomad/jobs/mlflow",
                 json={"Items": {"database_url": DRIVER_URL}}, timeout=5).raise_for_status()
    wait_for(lambda: running(nomad_double) or None, 20, "the task started once the Variable is there", interval=0.2)


def test_a_rolling_release_keeps_one_allocation_serving(nomad_double):
    """max_parallel 1: the next old allocation is stopped only once its replacement is healthy; at every moment
    some registered allocation answers."""
    settings = settings_for(nomad_double)
    run(settings, "0.99")
    with Serving(nomad_double) as serving:
        assert run(settings, "0.100").status == "deployed"
    assert serving.answers and not serving.failures
    stopped = [a for a in nomad_double.allocs.values() if a["JobVersion"] == 0]
    assert all("Waiting for shutdown delay" in [e["Type"] for e in a["TaskStates"]["mlflow_app"]["Events"]]
               for a in stopped)
    allocs = running(nomad_double)
    assert len(allocs) == 2 and {a["JobVersion"] for a in allocs} == {1}
    assert_one_at_a_time(nomad_double, allocs)


class Serving:
    """While open: whether some registered allocation answers, every 50 ms (answers, failures: their times)."""

    def __init__(self, double):
        self.double, self.answers, self.failures, self.stop = double, [], [], threading.Event()
        self.thread = threading.Thread(target=self._probe, daemon=True)

    def _probe(self):
        while not self.stop.is_set():
            ok = False
            for service in list(self.double.services.values()):
                try:
                    ok = requests.get(f"http://127.0.0.1:{service['Port']}/version", timeout=1).ok or ok
                except requests.RequestException:
                    pass
            (self.answers if ok else self.failures).append(time.monotonic())
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def assert_one_at_a_time(double, allocs):
    """The second replacement was placed only after the first was healthy."""
    new = sorted((double.allocs[a["ID"]] for a in allocs), key=lambda a: a["CreateTime"])
    first_healthy = _epoch(new[0]["DeploymentStatus"]["Timestamp"])
    assert new[1]["CreateTime"] / 1e9 >= first_healthy


def test_a_dry_run_shows_the_variable_masked_and_writes_nothing(nomad_double, capsys):
    result = run(settings_for(nomad_double), "0.99", dry_run=True)
    assert result.status == "dry-run"
    err = capsys.readouterr().err
    assert "create variable nomad/jobs/mlflow" in " ".join(err.split())
    assert "postgresql+psycopg2://mlflow:****@db.lan:5432/mlflow" in err and "s3cret-pw" not in err
    assert "2 allocations replaced one at a time" in err
    assert ("default", "nomad/jobs/mlflow") not in nomad_double.variables and not nomad_double.registrations()


def test_a_deploy_stopped_after_the_variable_write_says_so_and_the_next_one_rolls_it_out(nomad_double, monkeypatch):
    """The Variable is written before the register: when the register fails, the error says the new URL is
    already there, doctor calls it written but not rolled out, and the next deploy rolls it out."""
    from mlflow_self_host.flows import doctor
    from mlflow_self_host.core.errors import UserError

    new_url = URL.replace("s3cret-pw", "n3w-pw")

    def row(url=URL):
        (got,) = doctor.check_database_variable(settings_for(nomad_double, url), 5)
        assert "s3cret-pw" not in repr(got) and "n3w-pw" not in repr(got)  # compared, never shown
        return got

    missing = row()
    assert not missing.ok and "nomad/jobs/mlflow does not exist" in missing.found and "inv deploy" in missing.fix
    run(settings_for(nomad_double), "0.99")
    assert row().ok and row().found.startswith("nomad/jobs/mlflow holds MSH_DATABASE_URL (revision 20")
    other = row(new_url)
    assert not other.ok and other.found == "nomad/jobs/mlflow holds another URL than MSH_DATABASE_URL"

    def refused(*args, **kwargs):
        raise UserError("job mlflow changed after it was planned; nothing was registered")
    with monkeypatch.context() as patch:
        patch.setattr(job_deploy, "register", refused)
        try:
            run(settings_for(nomad_double, new_url), "0.99")
            raise AssertionError("the register did not fail")
        except UserError as exc:
            assert "nomad/jobs/mlflow already holds the new database URL, which the job does not read yet: `inv deploy` again rolls it out" in exc.hint
    assert len(nomad_double.registrations()) == 1
    stopped = row(new_url)
    assert not stopped.ok and "written, not rolled out" in stopped.found

    assert run(settings_for(nomad_double, new_url), "0.99").status == "deployed"
    allocs = running(nomad_double)
    assert len(allocs) == 2 and all("n3w-pw" in env_of(nomad_double, a)["MLFLOW_BACKEND_STORE_URI"] for a in allocs)
    assert row(new_url).ok


def test_a_failed_url_is_reverted_with_its_job_version(nomad_double, capsys):
    """A URL the database refuses: the first replacement fails, Nomad's auto-revert brings the old job version
    back, and that version reads its own revision's item, the old URL: every allocation serves again with it."""
    from mlflow_self_host.core.errors import UserError

    settings = settings_for(nomad_double, restart_attempts=0)
    run(settings, "0.99")
    first = nomad_double.variables[("default", "nomad/jobs/mlflow")]["Items"]["revision"]
    try:
        run(settings_for(nomad_double, URL.replace("s3cret-pw", "refused"), restart_attempts=0), "0.99")
        raise AssertionError("the deploy did not fail")
    except UserError as exc:
        assert exc.code == 12, exc.message  # reverted
        assert f"the version Nomad went back to reads its own database URL (revision {first}) from " \
               "nomad/jobs/mlflow" in exc.hint and "refused" not in exc.hint
    err = capsys.readouterr().err
    assert "password authentication failed" in err and ":refused@" not in err

    def back():
        allocs = running(nomad_double)
        return allocs if len(allocs) == 2 and all(
            "s3cret-pw" in env_of(nomad_double, a)["MLFLOW_BACKEND_STORE_URI"] for a in allocs) else None
    wait_for(back, 30, "both allocations on the old URL again", interval=0.2)
    assert json.dumps(nomad_double.job()).count(f".database_url_{first} ") == 1  # the reverted version reads it


def test_a_write_keeps_the_items_the_job_versions_read_and_drops_the_others():
    from mlflow_self_host.steps.job.database_variable import VariableFacts

    facts = VariableFacts("nomad/jobs/mlflow", "url-c", "url-b", True,
                          {"database_url": "url-b", "revision": "R2", "database_url_R0": "url-0",
                           "database_url_R1": "url-a", "database_url_R2": "url-b", "other": "kept"},
                          revision="R2", new_revision="R3", named=frozenset({"R1"}))
    assert facts.items_to_write() == {"database_url": "url-c", "revision": "R3", "database_url_R1": "url-a",
                                      "database_url_R2": "url-b", "database_url_R3": "url-c", "other": "kept"}
