"""https (issue 29): the job file's service tags as Nomad's job parser makes them from the settings deploy passes
(the Nomad double's Go engine), read the way Traefik reads them (the stand-in's route builder,
tests/services/proxy.py): a TLS router on the TLS entry points, plain HTTP redirected to https:// or not routed.
Needs Go only."""
from __future__ import annotations

import pytest

from mlflow_self_host.steps.job import jobfile
from tests.doubles.nomad import engine
from tests.job.conftest import job_settings
from tests.job.test_nomad_engine import HCL, built_engine, refused  # noqa: F401 - the engine, built once
from tests.services import proxy as proxy_service


def tags(**settings) -> list[str]:
    s = job_settings("http://127.0.0.1:1", **settings)
    job = engine.parse(HCL, jobfile.var_file(jobfile.variables(s, "0.99", "amd64", "nomad")), canonicalize=True)
    return job["TaskGroups"][0]["Services"][0]["Tags"]


def served(tag_list: list[str], entrypoint: str, tls: bool) -> tuple[dict, dict]:
    """(routes, redirects) a Traefik with that entry point builds from the tags, for plain or TLS requests."""
    registration = [{"ServiceName": "mlflow", "ID": "a", "NodeID": "n", "Tags": tag_list, "Address": "10.0.0.5",
                     "Port": 25000}]
    return (proxy_service.build_routes(registration, entrypoint, tls=tls),
            proxy_service.build_redirects(registration, entrypoint, tls=tls))


def test_https_off_keeps_the_tags_of_before():
    assert tags(traefik_entrypoints="web") == [
        "traefik.enable=true", "traefik.http.routers.mlflow.rule=Host(`mlflow.lan`)",
        "traefik.http.routers.mlflow.entrypoints=web", "prometheus.io/scrape=true", "prometheus.io/path=/metrics"]
    assert served(tags(), "web", tls=False) == ({"mlflow.lan": ["10.0.0.5:25000"]}, {})


def test_https_with_redirect_serves_tls_on_websecure_and_redirects_plain_http():
    got = tags(https="true", traefik_entrypoints="web")
    assert [t for t in got if t.startswith("traefik.")] == [
        "traefik.enable=true",
        "traefik.http.routers.mlflow.rule=Host(`mlflow.lan`)",
        "traefik.http.routers.mlflow.tls=true",
        "traefik.http.routers.mlflow.entrypoints=websecure",
        "traefik.http.routers.mlflow-http.rule=Host(`mlflow.lan`)",
        "traefik.http.routers.mlflow-http.entrypoints=web",
        "traefik.http.routers.mlflow-http.middlewares=mlflow-https",
        "traefik.http.middlewares.mlflow-https.redirectscheme.scheme=https",
        "traefik.http.middlewares.mlflow-https.redirectscheme.permanent=true",
    ]
    assert served(got, "websecure", tls=True) == ({"mlflow.lan": ["10.0.0.5:25000"]}, {})
    assert served(got, "web", tls=False) == ({}, {"mlflow.lan": proxy_service.Redirect("https", "", True)})
    assert served(got, "web", tls=True) == ({}, {})  # the TLS router is on websecure only


def test_https_with_refuse_has_no_router_for_plain_http_and_the_resolver_when_named():
    got = tags(https="true", plain_http="refuse", traefik_tls_entrypoints="https, websecure",
               traefik_certresolver="letsencrypt")
    assert [t for t in got if "mlflow-http" in t or "middlewares" in t] == []
    assert "traefik.http.routers.mlflow.entrypoints=https,websecure" in got
    assert "traefik.http.routers.mlflow.tls.certresolver=letsencrypt" in got
    assert served(got, "web", tls=False) == ({}, {})  # Traefik's 404 for plain HTTP
    assert served(got, "https", tls=True)[0] == {"mlflow.lan": ["10.0.0.5:25000"]}


def test_no_tls_entry_point_named_binds_the_tls_router_to_every_entry_point():
    got = tags(https="true", traefik_tls_entrypoints="")
    assert not any(t.startswith("traefik.http.routers.mlflow.entrypoints") for t in got)
    assert "traefik.http.routers.mlflow.tls=true" in got
    assert served(got, "anything", tls=True)[0] == {"mlflow.lan": ["10.0.0.5:25000"]}


@pytest.mark.parametrize("name,value,message", [
    ("traefik_tls_entrypoints", "web secure", "The traefik_tls_entrypoints must be entry point names"),
    ("traefik_certresolver", "lets encrypt", "The traefik_certresolver must be a certificate resolver's name"),
    ("plain_http", "allow", "The plain_http must be redirect or refuse."),
])
def test_the_job_files_validations_refuse_what_a_hand_run_could_pass(name, value, message):
    values = {**jobfile.variables(job_settings("http://127.0.0.1:1"), "0.99", "amd64", "nomad"), name: value}
    text = refused(HCL, jobfile.var_file(values))
    assert "Invalid value for varfile variable; " in text and message in text
