"""deploy against the Nomad double, whose client runs the stub images from the test registry for real
(the image steps are skipped here: the registry already has the stub versions)."""
from __future__ import annotations

import time

import pytest

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.flows import deploy as job_deploy
from mlflow_self_host.steps.job import jobfile
from tests.doubles.nomad import READ_CAPS
from mlflow_self_host.core.settings import PROJECT_ROOT
from tests.job.conftest import job_settings
from tests.services import free_port


def run(settings, version, **kwargs):
    kwargs.setdefault("backup", False)  # no SSH host here: tests/backup/test_backup.py deploys with the backup
    return job_deploy.deploy(settings, version, skip_host=True, skip_build=True, **kwargs)


def image_of(double, namespace="default"):
    return jobfile.image_of(double.job(namespace=namespace))


def test_first_deploy_registers_with_check_and_set_and_ends_healthy(nomad_double, capsys):
    settings = job_settings(nomad_double)
    result = run(settings, "0.99")
    assert result.status == "deployed" and result.job_version == 0
    assert image_of(nomad_double) == nomad_double.cluster.images.ref("0.99")
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
    images = nomad_double.cluster.images
    assert image_of(nomad_double) == images.ref("0.100")
    assert f'image: "{images.ref("0.99")}" => "{images.ref("0.100")}"' in result.diff
    assert [a["JobVersion"] for a in nomad_double.running_allocs()] == [1]  # the new version runs, alone
    assert nomad_double.registrations()[-1][1]["JobModifyIndex"] == nomad_double.versions()[0]["JobModifyIndex"]


def test_settings_reach_the_job_through_its_variables(nomad_double):
    settings = job_settings(nomad_double, domain="ml.example", cpu=300, memory=700, datacenter="DC9",
                            image_user="1000:100")
    with pytest.raises(UserError) as caught:  # the client is in DC0
        run(settings, "1.2")
    assert caught.value.code == 10 and "no node available in the datacenter(s)" in caught.value.message
    run(settings.with_overrides({"datacenter": "DC9,DC0"}), "1.2")
    job = nomad_double.job()
    task = job["TaskGroups"][0]["Tasks"][0]
    assert job["Datacenters"] == ["DC9", "DC0"]
    assert (task["Resources"]["CPU"], task["Resources"]["MemoryMB"]) == (300, 700)
    (alloc,) = nomad_double.running_allocs()
    container = nomad_double.container_of(alloc["ID"]).attrs
    assert container["HostConfig"]["Memory"] == 700 * 1024 * 1024 and container["Config"]["User"] == "1000:100"
    assert task["Env"]["MLFLOW_DOMAIN"] == "ml.example"
    assert "Host(`ml.example`)" in job["TaskGroups"][0]["Services"][0]["Tags"][1]


def test_a_register_between_plan_and_register_is_refused_not_overwritten(nomad_double):
    settings = job_settings(nomad_double)
    run(settings, "0.99")
    theirs = nomad_double.job()
    theirs["TaskGroups"][0]["Tasks"][0]["Config"]["image"] = nomad_double.cluster.images.ref("1.2")
    nomad_double.after_plan = lambda: nomad_double.register_out_of_band(theirs)
    with pytest.raises(UserError) as caught:
        run(settings, "1.0")
    assert "changed in Nomad after the plan" in caught.value.message
    assert "Enforcing job modify index" in caught.value.message
    assert image_of(nomad_double) == nomad_double.cluster.images.ref("1.2")  # theirs stands


def test_failed_deployment_shows_events_and_stderr_and_exits_11(nomad_double, capsys):
    """No stable version to go back to: the deployment fails and nothing is reverted."""
    nomad_double.cluster.publish("0.99", behaviour="exit", message="sqlite3.OperationalError: unable to open "
                                                                   "database file")
    with pytest.raises(UserError) as caught:
        run(job_settings(nomad_double), "0.99")
    assert caught.value.code == 11
    assert "no stable job version to auto revert to" in caught.value.message
    err = capsys.readouterr().err
    assert "sqlite3.OperationalError: unable to open database file" in err
    assert "Not Restarting" in err and "Terminated" in err and "Exit Code: 78" in err


def test_auto_revert_is_followed_and_names_the_running_version(nomad_double, capsys):
    settings = job_settings(nomad_double)
    run(settings, "0.99")
    nomad_double.cluster.publish("0.100", behaviour="exit", message="ImportError: no module named mlflow")
    with pytest.raises(UserError) as caught:
        run(settings, "0.100")
    assert caught.value.code == 12
    assert "rolled back" in caught.value.message
    old = nomad_double.cluster.images.ref("0.99")
    assert f"job version 2 ({old}) is healthy" in caught.value.message
    assert image_of(nomad_double) == old
    (alloc,) = nomad_double.running_allocs()
    assert nomad_double.container_of(alloc["ID"]).attrs["Config"]["Image"] == old  # the old image, for real
    assert "ImportError: no module named mlflow" in capsys.readouterr().err


def test_redeploying_a_version_whose_deployment_failed_says_so(nomad_double):
    nomad_double.cluster.publish("0.99", behaviour="exit", message="broken")
    settings = job_settings(nomad_double)
    with pytest.raises(UserError):
        run(settings, "0.99")
    with pytest.raises(UserError) as caught:
        run(settings, "0.99")
    assert caught.value.code == 11
    assert "already registered (job version 0), but its deployment failed" in caught.value.message
    assert len(nomad_double.registrations()) == 1


def test_unplaceable_job_exits_10_and_registers_nothing(nomad_double):
    with pytest.raises(UserError) as caught:
        run(job_settings(nomad_double, memory=100_000), "0.99")  # the node has 8192 MB
    assert caught.value.code == 10
    assert "memory exhausted on 1 node" in caught.value.message
    assert nomad_double.registrations() == []


def test_a_client_without_the_host_volumes_exits_10_naming_them(nomad_double):
    cluster = nomad_double.cluster
    cluster.client_config.write_text(cluster.client_config.read_text().split("# MLFLOW_BEGIN")[0] + "}\n")
    nomad_double.restart_agent(0.1)  # a fresh client: configure-host never ran
    with pytest.raises(UserError) as caught:
        run(job_settings(nomad_double), "0.99")
    assert caught.value.code == 10
    assert "constraint missing compatible host volumes filtered 1 node" in caught.value.message
    assert "node client-1 lacks host volumes mlflow-artifacts, mlflow-backend-store" in caught.value.message
    assert "inv configure-host" in caught.value.hint
    assert nomad_double.registrations() == []


def test_dry_run_shows_the_plan_and_registers_nothing(nomad_double, capsys):
    settings = job_settings(nomad_double)
    run(settings, "0.99")
    result = run(settings, "0.100", dry_run=True)
    assert result.status == "dry-run"
    assert len(nomad_double.registrations()) == 1
    assert "would change" in capsys.readouterr().err
    assert image_of(nomad_double).endswith(":v0.99")


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


def test_agent_down_names_the_address(stub_images):
    address = f"http://127.0.0.1:{free_port()}"
    stub_images.publish("0.99")
    with pytest.raises(UserError) as caught:
        run(job_settings(address, registry=stub_images.registry, image=stub_images.repository), "0.99")
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


def test_refuses_a_tag_the_registry_lacks(nomad_double, registry):
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

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)  # bound here: no port to lose
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


def test_deploy_help_documents_the_exit_codes():
    import subprocess
    import sys

    from tests.services.mlflow_image import clean_env

    result = subprocess.run([sys.executable, "-m", "invoke", "--help", "deploy"], cwd=PROJECT_ROOT, env=clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for code in ("10 placement failed", "11 deployment failed", "12 deployment failed and Nomad reverted"):
        assert code in " ".join(result.stdout.split())


def test_a_token_limited_to_the_jobs_namespace_deploys(nomad_double):
    """Nomad checks read-job on the evaluation in the request's namespace: deploy sends the job's."""
    from tests.doubles.nomad import ALL_CAPS

    nomad_double.namespaces.add("ml")
    nomad_double.acl_tokens = {"ml-deployer": {"ml": ALL_CAPS}}
    settings = job_settings(nomad_double, env={"NOMAD_TOKEN": "ml-deployer"}, nomad_namespace="ml")
    assert run(settings, "0.99").status == "deployed"
    assert nomad_double.job(namespace="ml")["Stable"] is True


def test_a_second_deploy_while_the_first_is_still_deploying_follows_it(nomad_double, capsys):
    import threading

    settings = job_settings(nomad_double, min_healthy_time="4s")
    results = []
    first = threading.Thread(target=lambda: results.append(run(settings, "0.99")), daemon=True)
    first.start()
    deadline = time.monotonic() + 20
    while not nomad_double.running_allocs() and time.monotonic() < deadline:
        time.sleep(0.1)
    second = run(settings, "0.99")
    first.join(30)
    assert [r.status for r in results] == ["deployed"]
    assert second.status == "deployed" and second.job_version == 0
    err = capsys.readouterr().err
    assert "its deployment" in err and "is still running: following it" in err
    assert "already deployed" not in err
    assert len(nomad_double.registrations()) == 1


def test_a_revert_that_lands_on_a_stopped_version_says_the_job_is_stopped(nomad_double):
    """Nomad's auto_revert takes the newest stable version, and a stop keeps the flag (fsm.go)."""
    import requests

    settings = job_settings(nomad_double)
    run(settings, "0.99")
    requests.delete(nomad_double.address + "/v1/job/mlflow", timeout=5)  # `nomad job stop` by hand
    nomad_double.wait_idle()
    nomad_double.cluster.publish("0.100", behaviour="exit", message="broken")
    with pytest.raises(UserError) as caught:
        run(settings, "0.100")
    assert caught.value.code == 12
    assert "a stopped version: job mlflow is stopped now" in caught.value.message
    assert nomad_double.job()["Stop"] is True


def test_a_failing_revert_with_no_other_stable_version_exits_11(nomad_double):
    cluster = nomad_double.cluster
    settings = job_settings(nomad_double)
    run(settings, "0.99")
    cluster.publish("0.99", behaviour="exit", message="the old tag is broken now")
    cluster.publish("0.100", behaviour="exit", message="broken")
    with pytest.raises(UserError) as caught:
        run(settings, "0.100")
    assert caught.value.code == 11
    assert "rollback deployment" in caught.value.message and "same specification" in caught.value.message


def test_non_ascii_stderr_reaches_the_user_intact(nomad_double, capsys):
    nomad_double.cluster.publish("0.99", behaviour="exit", message="Größe ≠ 0 ✗ échec")
    with pytest.raises(UserError):
        run(job_settings(nomad_double), "0.99")
    assert "Größe ≠ 0 ✗ échec" in capsys.readouterr().err


def test_inv_deploy_dry_run_without_a_cluster_shows_each_step_and_names_the_one_that_cannot_read(tmp_path):
    """Nothing answers (Nomad, the engine, the registry): the image step's dry plan is still shown, the job
    step says it would stop there, and the dry run exits with that step's error (1: Nomad does not answer)."""
    from tests.flags.conftest import errors, inv, make_project
    from tests.services.mlflow_image import clean_env

    project = make_project(tmp_path / "project")
    env = clean_env()
    env.update(NOMAD_ADDR=f"http://127.0.0.1:{free_port()}", DOCKER_HOST=f"tcp://127.0.0.1:{free_port()}",
               MSH_REGISTRY=f"127.0.0.1:{free_port()}")
    dry = inv("deploy", "--dry-run", "--skip-host", cwd=project, env=env, expect=1)
    said = dry.stderr
    assert "image " in said and "would change (2)" in said  # build and push, in their dry form
    # the first read, before any step, is where a real deploy stops (Nomad: reading the registered job)
    stops = [line for line in said.splitlines() if "would stop here" in line]
    assert stops == ["✗ reads before any change: would stop here (the error below)",
                     "✗ job: would stop here (the error below)"]
    assert "dry run: nothing was registered" in said
    (line,) = errors(dry)
    assert line == f"error: cannot reach the Nomad agent at {env['NOMAD_ADDR']}: connection refused"
