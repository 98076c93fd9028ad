"""Settings: invoke.yaml defaults < standard variables < MSH_ variables < flags; secrets masked."""
import pytest

from mlflow_self_host.errors import UserError
from mlflow_self_host.settings import PROJECT_ROOT, Settings, read_defaults

ORIGINAL_DEFAULTS = {
    "registry": "registry.lan:5000", "image": "mlflow", "host": "m700", "ssh_user": "ansible",
    "datacenter": "DC0", "nomad_region": "global", "domain": "mlflow.lan",
    "backend_path": "/opt/nomad/data/mlflow/backend", "artifacts_path": "/opt/nomad/data/mlflow/artifacts",
    "job_dir": "/opt/nomad/jobs/mlflow", "nomad_client_config": "/opt/nomad/nomad.d/client.hcl",
    "memory": 512, "cpu": 200,
}


def test_defaults_are_the_original_repos_values():
    s = Settings.load(env={})
    for key, value in ORIGINAL_DEFAULTS.items():
        assert s[key] == value, key
        assert s.sources[key] == "invoke.yaml"
    assert s.image_ref("0.99") == "registry.lan:5000/mlflow:v0.99"


def test_environment_overrides_the_file_and_flags_override_the_environment():
    s = Settings.load(env={"MSH_REGISTRY": "10.1.1.1:5000", "MSH_MEMORY": "1024"})
    assert (s.registry, s.sources["registry"]) == ("10.1.1.1:5000", "env MSH_REGISTRY")
    assert s.memory == 1024
    s2 = s.with_overrides({"registry": "flag.example:5000", "image": None})
    assert (s2.registry, s2.sources["registry"]) == ("flag.example:5000", "flag --registry")
    assert s2.image == "mlflow" and s2.sources["image"] == "invoke.yaml"


def test_standard_nomad_variables_are_honoured_and_msh_is_more_specific():
    env = {"NOMAD_ADDR": "https://nomad.lan:4646", "NOMAD_NAMESPACE": "ml", "NOMAD_SKIP_VERIFY": "true"}
    s = Settings.load(env=env)
    assert s.nomad_addr == "https://nomad.lan:4646" and s.sources["nomad_addr"] == "env NOMAD_ADDR"
    assert s.nomad_namespace == "ml" and s.nomad_skip_verify is True
    s = Settings.load(env={**env, "MSH_NOMAD_ADDR": "http://other:4646"})
    assert s.nomad_addr == "http://other:4646"


def test_secrets_come_from_the_environment_and_are_masked():
    s = Settings.load(env={"NOMAD_TOKEN": "s3cr3t-token", "PIHOLE_PASSWORD": "pw"})
    assert s.nomad_token == "s3cr3t-token"
    shown = " ".join(" ".join(row) for row in s.rows())
    assert "s3cr3t-token" not in shown and "pw " not in shown + " "
    assert s.masked("nomad_token") == "****" and s.masked("registry_password") == "(unset)"


def test_a_secret_in_invoke_yaml_is_refused(tmp_path):
    (tmp_path / "invoke.yaml").write_text("mlflow:\n  nomad:\n    nomad_token: abc\n")
    with pytest.raises(UserError, match="secret"):
        read_defaults(tmp_path)


@pytest.mark.parametrize("name,value", [("MSH_MEMORY", "lots"), ("MSH_PIHOLE_INSECURE", "maybe")])
def test_bad_typed_values_name_the_variable(name, value):
    with pytest.raises(UserError, match=name):
        Settings.load(env={name: value})


def test_every_setting_is_in_invoke_yaml_with_a_default():
    values, sections = read_defaults(PROJECT_ROOT)
    assert set(ORIGINAL_DEFAULTS) <= set(values)
    assert all(sections[k] for k in values)


@pytest.mark.parametrize("name", ["mlflow.prod", "ml flow", "team/mlflow", "m" * 107])
def test_a_job_name_nomad_cannot_use_in_a_variable_path_is_refused_before_any_change(name):
    """A job ID may hold a '.', a Variable path may not (nomad/structs/variables.go): the deploy lock and the
    database URL live at paths made from job_name, so `inv deploy --dry-run` stops at the settings, exit 2."""
    import subprocess
    import sys

    from tests.services.mlflow_image import clean_env

    done = subprocess.run([sys.executable, "-m", "invoke", "deploy", "--dry-run"], cwd=PROJECT_ROOT,
                          env={**clean_env(), "MSH_JOB_NAME": name, "MSH_NOMAD_ADDR": "http://127.0.0.1:9"},
                          capture_output=True, text=True, timeout=60)
    red = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr
    assert len(red) == 1 and "env MSH_JOB_NAME: job_name" in red[0] and "'-', '_' and '~'" in red[0], done.stderr
    assert "Traceback" not in done.stderr and "nomad" not in done.stdout.lower()


def test_the_longest_job_name_nomad_takes_is_accepted():
    assert Settings.load(env={"MSH_JOB_NAME": "m" * 106}).job_name == "m" * 106
