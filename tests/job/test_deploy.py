"""deploy against the Nomad HTTP double: the scenarios of issue 5 (the image steps are skipped here)."""
from __future__ import annotations

import pytest

from mlflow_self_host.errors import UserError
from mlflow_self_host.job import deploy as job_deploy
from mlflow_self_host.job import jobfile
from tests.doubles.nomad import READ_CAPS
from tests.job.conftest import job_settings
from tests.services import free_port

pytestmark = pytest.mark.usefixtures("registry_has_every_tag")


def run(settings, version, **kwargs):
    kwargs.setdefault("backup", False)  # test_a_version_change_backs_up_first checks the hook
    return job_deploy.deploy(settings, version, skip_host=True, skip_build=True, **kwargs)


def image_of(double, namespace="default"):
    return jobfile.image_of(double.job(namespace=namespace))


def test_first_deploy_registers_with_check_and_set_and_ends_healthy(nomad_double, capsys):
    settings = job_settings(nomad_double)
    result = run(settings, "0.99")
    assert result.status == "deployed" and result.job_version == 0
    assert image_of(nomad_double) == "127.0.0.1:5999/mlflow:v0.99"
    (path, body), = nomad_double.registrations()
    assert body["EnforceIndex"] is True and body["JobModifyIndex"] == 0
    job = nomad_double.job()
    assert job["Stable"] is True and job["Datacenters"] == ["DC0"]
    task = job["TaskGroups"][0]["Tasks"][0]
    assert task["Env"]["MLFLOW_SERVER_ALLOWED_HOSTS"].startswith("mlflow.lan,mlflow.lan:*")
    assert "traefik.http.routers.mlflow.rule=Host(`mlflow.lan`)" in job["TaskGroups"][0]["Services"][0]["Tags"]
    err = capsys.readouterr().err
    assert "successful" in err and '+ Job: "mlflow"' in err


def test_redeploy_of_the_same_version_registers_nothing(nomad_double, capsys):
    settings = job_settings(nomad_double)
    run(settings, "0.99")
    capsys.readouterr()
    result = run(settings, "0.99")
    assert result.status == "unchanged" and result.job_version == 0
    assert len(nomad_double.registrations()) == 1
    assert "already deployed: v0.99" in capsys.readouterr().err


def test_version_bump_deploys_the_new_pinned_tag(nomad_double):
    settings = job_settings(nomad_double)
    run(settings, "0.99")
    result = run(settings, "0.100")
    assert result.status == "deployed" and result.job_version == 1
    assert image_of(nomad_double) == "127.0.0.1:5999/mlflow:v0.100"
    assert 'image: "127.0.0.1:5999/mlflow:v0.99" => "127.0.0.1:5999/mlflow:v0.100"' in result.diff
    assert nomad_double.registrations()[-1][1]["JobModifyIndex"] == nomad_double.versions()[0]["JobModifyIndex"]


def test_settings_reach_the_job_through_its_variables(nomad_double):
    settings = job_settings(nomad_double, domain="ml.example", cpu=300, memory=700, datacenter="DC9")
    run(settings, "1.2")
    job = nomad_double.job()
    task = job["TaskGroups"][0]["Tasks"][0]
    assert job["Datacenters"] == ["DC9"]
    assert (task["Resources"]["CPU"], task["Resources"]["MemoryMB"]) == (300, 700)
    assert task["Env"]["MLFLOW_DOMAIN"] == "ml.example"
    assert "Host(`ml.example`)" in job["TaskGroups"][0]["Services"][0]["Tags"][1]


def test_a_register_between_plan_and_register_is_refused_not_overwritten(nomad_double):
    settings = job_settings(nomad_double)
    run(settings, "0.99")
    theirs = nomad_double.job()
    theirs["TaskGroups"][0]["Tasks"][0]["Config"]["image"] = "127.0.0.1:5999/mlflow:v0.98"
    nomad_double.after_plan = lambda: nomad_double.register_out_of_band(theirs)
    with pytest.raises(UserError) as caught:
        run(settings, "1.0")
    assert "changed in Nomad after the plan" in caught.value.message
    assert "Enforcing job modify index" in caught.value.message
    assert image_of(nomad_double) == "127.0.0.1:5999/mlflow:v0.98"  # theirs stands


def test_failed_deployment_shows_events_and_stderr_and_exits_11(nomad_double, capsys):
    nomad_double.next_deployment("failed", stderr="sqlite3.OperationalError: unable to open database file\n")
    with pytest.raises(UserError) as caught:
        run(job_settings(nomad_double), "0.99")
    assert caught.value.code == 11
    err = capsys.readouterr().err
    assert "sqlite3.OperationalError: unable to open database file" in err
    assert "Not Restarting" in err and "Terminated" in err


def test_auto_revert_is_followed_and_names_the_running_version(nomad_double, capsys):
    settings = job_settings(nomad_double)
    run(settings, "0.99")
    nomad_double.next_deployment("auto-reverted", stderr="ImportError: no module named mlflow\n")
    with pytest.raises(UserError) as caught:
        run(settings, "0.100")
    assert caught.value.code == 12
    assert "rolled back" in caught.value.message
    assert "job version 2 (127.0.0.1:5999/mlflow:v0.99) is healthy" in caught.value.message
    assert image_of(nomad_double) == "127.0.0.1:5999/mlflow:v0.99"
    assert "ImportError: no module named mlflow" in capsys.readouterr().err


def test_redeploying_a_version_whose_deployment_failed_says_so(nomad_double):
    nomad_double.next_deployment("failed")
    settings = job_settings(nomad_double)
    with pytest.raises(UserError):
        run(settings, "0.99")
    with pytest.raises(UserError) as caught:
        run(settings, "0.99")
    assert caught.value.code == 11
    assert "already registered (job version 0), but its deployment failed" in caught.value.message
    assert len(nomad_double.registrations()) == 1


def test_unplaceable_job_exits_10_and_registers_nothing(nomad_double):
    nomad_double.next_deployment("unplaceable")
    with pytest.raises(UserError) as caught:
        run(job_settings(nomad_double), "0.99")
    assert caught.value.code == 10
    assert "memory exhausted on 1 node" in caught.value.message
    assert nomad_double.registrations() == []


def test_dry_run_shows_the_plan_and_registers_nothing(nomad_double, capsys):
    settings = job_settings(nomad_double)
    run(settings, "0.99")
    result = run(settings, "0.100", dry_run=True)
    assert result.status == "dry-run"
    assert len(nomad_double.registrations()) == 1
    assert "would change" in capsys.readouterr().err
    assert image_of(nomad_double).endswith(":v0.99")


def test_a_version_change_backs_up_first(nomad_double, monkeypatch):
    from mlflow_self_host import backup

    calls = []
    monkeypatch.setattr(backup, "before_deploy", lambda s, old, new: calls.append((old, new)))
    settings = job_settings(nomad_double)
    run(settings, "0.99", backup=True)  # nothing runs yet: no backup
    run(settings, "0.100", backup=True)
    run(settings, "0.101", backup=False)
    assert calls == [("0.99", "0.100")]


def test_acl_token_without_submit_job_gets_a_clear_403(nomad_double):
    nomad_double.acl_tokens = {"s3cr3t-read-only": {"default": READ_CAPS}}
    with pytest.raises(UserError) as caught:
        run(job_settings(nomad_double, env={"NOMAD_TOKEN": "s3cr3t-read-only"}), "0.99")
    assert "the token lacks permission" in caught.value.message
    assert "submit-job" in caught.value.hint
    assert "s3cr3t" not in str(caught.value)


def test_acl_without_token_says_to_set_one(nomad_double):
    nomad_double.acl_tokens = {"s3cr3t": "management"}
    with pytest.raises(UserError) as caught:
        run(job_settings(nomad_double), "0.99")
    assert "no token is set" in caught.value.message and "NOMAD_TOKEN" in caught.value.hint


def test_agent_down_names_the_address():
    address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError) as caught:
        run(job_settings(address), "0.99")
    assert caught.value.message == f"cannot reach the Nomad agent at {address}: connection refused"


def test_job_in_a_non_default_namespace(nomad_double):
    nomad_double.namespaces.add("ml")
    settings = job_settings(nomad_double, nomad_namespace="ml")
    result = run(settings, "0.99")
    assert result.job_version == 0
    assert nomad_double.job(namespace="ml")["Namespace"] == "ml"
    assert nomad_double.job(namespace="default") is None
    assert run(settings, "0.99").status == "unchanged"


def test_a_namespace_nomad_does_not_have_is_refused(nomad_double):
    with pytest.raises(UserError) as caught:
        run(job_settings(nomad_double, nomad_namespace="nope"), "0.99")
    assert 'nonexistent namespace "nope"' in caught.value.message


def test_refuses_a_tag_the_registry_lacks(nomad_double, registry, monkeypatch):
    monkeypatch.undo()  # the real registry, which is empty
    settings = job_settings(nomad_double, registry=registry.address, image="mlflow-job-empty")
    with pytest.raises(UserError) as caught:
        run(settings, "0.99")
    assert "registry has no" in caught.value.message and ":v0.99" in caught.value.message
    assert nomad_double.registrations() == []


def test_healthy_in_nomad_but_the_url_does_not_answer_as_mlflow_exits_13(nomad_double):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    class Proxy(BaseHTTPRequestHandler):  # what MLflow says to a Host it does not serve
        def do_GET(self):  # noqa: N802
            body = b"Invalid Host header - possible DNS rebinding attack detected"
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with pytest.raises(UserError) as caught:
            run(job_settings(nomad_double, deploy_check=True, deploy_url=url, deploy_check_timeout=0), "0.99")
    finally:
        server.shutdown()
        server.server_close()
    assert caught.value.code == 13
    assert f"{url}api/2.0/mlflow/experiments/search" in caught.value.message
    assert "HTTP 403: Invalid Host header" in caught.value.message
    assert nomad_double.job()["Stable"] is True
