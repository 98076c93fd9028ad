"""The Nomad double's Go engine (tests/doubles/nomad/engine/): the job file as Nomad's job parser reads it
(its HCL function table, durations, schema, variable validations) and templates as Nomad's template hook
renders them (consul-template's nomadVar, go-envparse). Needs Go only: no Docker, no services."""
from __future__ import annotations

import json
import re

import pytest

from mlflow_self_host.steps.job import jobfile
from mlflow_self_host.core.settings import PROJECT_ROOT
from tests.doubles.nomad import engine
from tests.doubles.nomad.jobspec import ParseError
from tests.job.conftest import job_settings

HCL = (PROJECT_ROOT / "nomad" / "mlflow.nomad.hcl").read_text()
REVISION = "20261201T030000000000Z"
ENV_FILE = "/opt/nomad/data/alloc/A/mlflow_app/secrets/database.env"

# jobspec2/functions.go: Nomad's job-parser HCL functions (md5 and sha1 only outside FIPS 140 mode)
NOMAD_FUNCTIONS = """abs abspath base64decode base64encode basename bcrypt can ceil chomp chunklist cidrhost cidrnetmask
cidrsubnet cidrsubnets coalesce coalescelist compact concat contains convert csvdecode dirname distinct element
file filebase64 fileexists fileset flatten floor format formatdate formatlist indent index join jsondecode
jsonencode keys length log lookup lower max md5 merge min parseint pathexpand pow range regex_replace replace
reverse rsadecrypt setintersection setproduct setunion sha1 sha256 sha512 signum slice sort split strlen strrev
substr timeadd title trim trimprefix trimspace trimsuffix try upper urlencode uuidv4 uuidv5 values yamldecode
yamlencode zipmap""".split()


@pytest.fixture(scope="module", autouse=True)
def built_engine():
    """The engine, built once (cached across sessions); without Go the module is skipped, except in CI."""
    from tests.services import unavailable

    try:
        engine.binary()
    except engine.EngineUnavailable as exc:
        unavailable(str(exc))


def refused(hcl: str, variables: str = "", **kw) -> str:
    with pytest.raises(ParseError) as caught:
        engine.parse(hcl, variables, canonicalize=True, **kw)
    return str(caught.value)


def deploy_values(store: str, **settings) -> dict:
    """The variables `inv deploy` passes (jobfile.variables), for ``store``."""
    s = job_settings("http://127.0.0.1:1", store=store, **settings)
    return jobfile.variables(s, "0.99", "amd64,arm64", "nomad", REVISION if store == "postgres" else None)


# --- the job parser ---------------------------------------------------------------------------------------
def test_the_function_table_is_nomads_and_has_no_regex():
    names = engine.functions()
    assert sorted(names) == sorted(NOMAD_FUNCTIONS)
    assert "regex_replace" in names and "regex" not in names and "regexall" not in names


def test_regex_is_a_call_to_an_unknown_function():
    text = refused('job "x" {\n  meta {\n    a = regex("^a", "abc")\n  }\n}\n')
    assert text.splitlines()[0] == ('Failed to parse job: input.hcl:3,9-14: Call to unknown function; '
                                    'There is no function named "regex".')


def test_can_of_regex_is_false_so_its_validation_refuses_every_value():
    """Issue 26: can() swallows the unknown function, so the condition is false for any value."""
    hcl = ('variable "v" {\n  type = string\n  validation {\n    condition     = can(regex("^a", var.v))\n'
           '    error_message = "The v must start with a."\n  }\n}\njob "x" {\n  region = var.v\n}\n')
    assert refused(hcl, 'v = "abc"\n') == (
        'Failed to parse job: input.hcl:1,5-10: Invalid value for varfile variable; The v must start with a.\n\n'
        'This was checked by the validation rule at input.hcl:3,3-13.')


def test_a_null_duration_is_refused():
    text = refused('job "x" {\n  group "g" {\n    shutdown_delay = true ? null : "5s"\n  }\n}\n')
    assert text == 'Failed to parse job: input.hcl:3,22-26: Unsuitable value; Unsuitable duration value: nil'
    assert refused('job "x" {\n  group "g" {\n    shutdown_delay = "5 s"\n  }\n}\n') == (
        'Failed to parse job: input.hcl:3,23-26: Unsuitable value type; Unsuitable duration value: time: unknown '
        'unit " s" in duration "5 s"')


def test_an_unknown_argument_or_block_is_refused_as_hcl_does():
    assert refused('job "x" {\n  group "g" {\n    shutdown_dely = "5s"\n  }\n}\n') == (
        'Failed to parse job: input.hcl:3,5-18: Unsupported argument; An argument named "shutdown_dely" is not '
        'expected here. Did you mean "shutdown_delay"?')
    assert refused('job "x" {\n  bogus {}\n}\n') == (
        'Failed to parse job: input.hcl:2,3-8: Unsupported block type; Blocks of type "bogus" are not expected here.')


def test_an_unset_variable_and_an_undeclared_one():
    hcl = 'variable "v" {\n  type = string\n}\njob "x" {\n  region = var.v\n}\n'
    # the undeclared one is a warning (the agent's parse is not strict): it is listed only with an error
    assert refused(hcl, 'colour = "red"\n') == (
        'Failed to parse job: <nil>: Undefined variable; A "colour" variable was set but was not found in known '
        'variables. To declare variable "colour", place this block in your job files\n'
        '<nil>: Unset variable "v"; A used variable must be set or have a default value; see '
        'https://developer.hashicorp.com/nomad/docs/reference/hcl2/variables  for details.')
    assert engine.parse(hcl, 'v = "eu"\ncolour = "red"\n')["Region"] == "eu"


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_the_job_file_parses_for_each_store(store):
    job = engine.parse(HCL, jobfile.var_file(deploy_values(store, auth="none")), canonicalize=True)
    group = job["TaskGroups"][0]
    task = group["Tasks"][0]
    assert task["Config"]["image"] == "127.0.0.1:5999/mlflow:v0.99"
    if store == "sqlite":
        assert (group["Count"], group["ShutdownDelay"], task["Templates"]) == (1, 0, None)
        assert task["Env"]["MLFLOW_BACKEND_STORE_URI"] == "sqlite:////mnt/backend_store/mlflow.db"
    else:
        assert (group["Count"], group["ShutdownDelay"]) == (2, 20 * 10**9)
        (template,) = task["Templates"]
        assert (template["Envvars"], template["ChangeMode"], template["DestPath"]) == \
            (True, "noop", "secrets/database.env")
        assert template["EmbeddedTmpl"] == ('{{ with nomadVar "nomad/jobs/mlflow" }}'
                                            f"MLFLOW_BACKEND_STORE_URI={{{{ .database_url_{REVISION} }}}}{{{{ end }}}}\n")


@pytest.mark.parametrize("where", ["docs/deploying.md", "nomad/mlflow.nomad.hcl"])
def test_the_hand_run_line_parses(where):
    """The `nomad job run -var ... nomad/mlflow.nomad.hcl` line docs/deploying.md and the job file's header give, its
    -var values as the CLI hands them to the parser (jobspec2 ArgVars), through the same engine."""
    import shlex

    text = (PROJECT_ROOT / where).read_text()
    line = re.search(r"nomad job run (-var [^`\n]*?)nomad/mlflow\.nomad\.hcl", text)
    assert line, f"{where} has no `nomad job run -var ...` line"
    words = shlex.split(line.group(1))
    arg_vars = [value for flag, value in zip(words[::2], words[1::2]) if flag == "-var"]
    assert len(arg_vars) * 2 == len(words) and any(v.startswith("image=") for v in arg_vars)
    job = engine.parse(HCL, arg_vars=arg_vars)
    image = dict(v.split("=", 1) for v in arg_vars)["image"]
    assert job["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == image


@pytest.mark.parametrize("name,value,message", [
    ("image", "127.0.0.1:5999/mlflow:latest", "The image must carry a pinned version tag such as "
                                              "registry.lan:5000/mlflow:v0.99 (never latest)."),
    ("image", "mlflow:v1", "(never latest)"),
    ("image", "", "(never latest)"),
    ("arch", "amd64, arm64", "The arch must be Go architecture names such as amd64 or arm64, comma-separated."),
    ("arch", "", "The arch must be Go architecture names"),
    ("traefik_entrypoints", "web;websecure", "The traefik_entrypoints must be entry point names such as web or "
                                             "web,websecure, comma-separated, or empty."),
    ("traefik_entrypoints", "web,", "The traefik_entrypoints must be entry point names"),
])
def test_the_validations_refuse_bad_values(name, value, message):
    values = {**deploy_values("postgres"), name: value}
    text = refused(HCL, jobfile.var_file(values))
    assert text.startswith("Failed to parse job: input.hcl:")
    assert "Invalid value for varfile variable; The " in text and message in text
    assert "This was checked by the validation rule at input.hcl:" in text


@pytest.mark.parametrize("name,value", [("image", "registry.lan:5000/team/mlflow:v1.2.3"), ("image", "reg/mlflow:v2"),
                                        ("arch", "arm64"), ("arch", "amd64,arm64,arm"),
                                        ("traefik_entrypoints", "web"), ("traefik_entrypoints", "web,web-secure_2"),
                                        ("traefik_entrypoints", "")])
def test_the_validations_pass_good_values(name, value):
    engine.parse(HCL, jobfile.var_file({**deploy_values("sqlite"), name: value}), canonicalize=True)


def test_client_references_are_left_for_the_client():
    job = engine.parse(HCL, jobfile.var_file(deploy_values("sqlite")), canonicalize=True)
    assert job["TaskGroups"][0]["Tasks"][0]["Constraints"] == [
        {"LTarget": "${attr.cpu.arch}", "RTarget": "amd64,arm64", "Operand": "set_contains_any"}]
    other = engine.parse('job "x" {\n  group "g" {\n    task "t" {\n      driver = "docker"\n      config {\n'
                         '        image = "${node.unique.name}/${ meta.rack }"\n        id = "${NOMAD_ALLOC_ID}"\n'
                         '      }\n    }\n  }\n}\n')
    assert other["TaskGroups"][0]["Tasks"][0]["Config"] == {"image": "${node.unique.name}/${ meta.rack }",
                                                             "id": "${NOMAD_ALLOC_ID}"}


# --- templates --------------------------------------------------------------------------------------------
def database_template() -> str:
    job = engine.parse(HCL, jobfile.var_file(deploy_values("postgres")), canonicalize=True)
    return job["TaskGroups"][0]["Tasks"][0]["Templates"][0]["EmbeddedTmpl"]


def render_url(item: str):
    return engine.render(database_template(), {"nomad/jobs/mlflow": {f"database_url_{REVISION}": item}},
                         "default.global", envvars=True, dest=ENV_FILE)


def test_a_missing_variable_is_a_missing_dependency():
    out = engine.render(database_template(), {}, "default.global", envvars=True, dest=ENV_FILE)
    assert (out.missing, out.text, out.error) == ("nomad.var.block(nomad/jobs/mlflow@default.global)", None, None)


def test_a_missing_item_renders_empty_and_sets_the_variable_empty():
    """missingkey=zero on consul-template's NomadVarItems: the zero item prints ""; go-envparse v0.1.0 keeps
    KEY= as an empty value, which overrides the env block's."""
    out = engine.render(database_template(), {"nomad/jobs/mlflow": {"database_url": "x"}}, "default",
                        envvars=True, dest=ENV_FILE)
    assert (out.text, out.env, out.error) == ("MLFLOW_BACKEND_STORE_URI=\n", {"MLFLOW_BACKEND_STORE_URI": ""}, None)


def test_an_unquoted_single_quote_is_go_envparses_error():
    out = render_url("postgresql://u:it's@db/x")
    assert out.text == "MLFLOW_BACKEND_STORE_URI=postgresql://u:it's@db/x\n"
    assert out.error == ("Template failed to read environment variables: error parsing env template "
                         f"\"{ENV_FILE}\": error on line 1: unmatched '")


def env_value(value: str) -> str:
    """How to write a value into the Variable item so that the env file gives it back exactly: a JSON string
    literal, quotes included. go-envparse (v0.1.0, envparse.go parseLine) reads a double-quoted value with
    JSON's escapes (\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX, surrogate pairs too) and refuses raw control
    characters anywhere; json.dumps escapes all of them and nothing else go-envparse does not know."""
    return json.dumps(value)


@pytest.mark.parametrize("value", [
    "postgresql+psycopg2://mlflow:s3cret@db.lan:5432/mlflow",
    'p"w', "p#w", "p w", "p\\w", "p$w", "p${w}", "p'w", " lead and trail ", "a=b&c=d?e", "ünï😀", "tab\tnl\n",
    "'single' \"double\" # $HOME \\n",
])
def test_a_json_quoted_value_round_trips(value):
    out = render_url(env_value(value))
    assert out.error is None, out.error
    assert out.env == {"MLFLOW_BACKEND_STORE_URI": value}


@pytest.mark.parametrize("written,read", [
    ('p"w"x', "pwx"),              # unquoted: double quotes open and close a quoted run, they are dropped
    ("p#w", "p"),                  # unquoted: # starts a comment
    ("p w  # note", "p w"),        # the spaces before a comment go too
    ("p\\w$x", "p\\w$x"),          # unquoted: backslash and $ are literal (no expansion)
    ("'p\"#\\w$'", 'p"#\\w$'),     # single quotes: everything literal, but a ' cannot be written inside
])
def test_what_other_quotings_give(written, read):
    out = render_url(written)
    assert out.error is None and out.env == {"MLFLOW_BACKEND_STORE_URI": read}


def test_a_lone_double_quote_or_an_escape_json_does_not_have_is_refused():
    assert render_url('p"w').error.endswith('error on line 1: unmatched "')
    assert render_url('"p\\w"').error.endswith('error on line 1: invalid escape sequence: "w"')


def test_a_template_function_the_engine_lacks_is_unsupported():
    out = engine.render('{{ env "HOME" }}', {}, "default")
    assert out.error == 'Template failed: (dynamic): parse: template: :1: function "env" not defined'
    assert out.unsupported == "env"
    assert engine.render('{{ nope }}', {}, "default").unsupported is None  # not consul-template's either
