"""Settings: invoke.yaml defaults < standard variables < MSH_ variables < flags; secrets masked."""
import pytest

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.core.settings import PROJECT_ROOT, Settings, read_defaults

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


# --- typed settings, checked once at load: each refusal one red line naming the setting and its source, exit 2 ----
def inv_config(env: dict, cwd=PROJECT_ROOT, *args):
    import subprocess
    import sys

    from tests.services.mlflow_image import clean_env

    return subprocess.run([sys.executable, "-m", "invoke", "config", *args], cwd=cwd, env={**clean_env(), **env},
                          capture_output=True, text=True, timeout=60)


def refused(done, prefix: str) -> str:
    """The one red line (starting with ``prefix``) and exit 2; returns the whole stderr (the hint is there)."""
    red = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr
    assert len(red) == 1 and red[0].startswith(prefix), done.stderr
    assert "Traceback" not in done.stderr and not done.stdout.strip()
    return done.stderr


@pytest.mark.parametrize("variable,value,setting,instead", [
    ("MSH_REGISTRY", "http://registry.lan:5000", "registry", "write registry.lan:5000"),
    ("MSH_REGISTRY", "registry.lan:5000/", "registry", "write registry.lan:5000"),
    ("MSH_REGISTRY", "registry .lan:5000", "registry", "like registry.lan:5000"),
    ("MSH_REGISTRY", "registry.lan:70000", "registry", "1 to 65535"),
    ("MSH_LOCAL_PORT", "99999", "local_port", "1 to 65535"),
    ("MSH_SSH_PORT", "0", "ssh_port", "1 to 65535"),
    ("MSH_DNS_PORT", "fifty-three", "dns_port", ""),
    ("NOMAD_ADDR", "ftp://m700:4646", "nomad_addr", "http://m700:4646"),
    ("MSH_NOMAD_ADDR", "http://m700:99999", "nomad_addr", "http(s)://host[:port]"),
    ("MSH_DEPLOY_URL", "http://mlflow .lan/", "deploy_url", "without"),
    ("MSH_PIHOLE_URL", "gopher://pi.hole", "pihole_url", "https://"),
    ("MSH_DATACENTER", "DC0,,DC1", "datacenter", "DC0,DC1"),
    ("MSH_DATACENTER", "DC 0", "datacenter", "DC0"),
    ("MSH_SHUTDOWN_DELAY", "20", "shutdown_delay", "20s"),
    ("MSH_HEALTHY_DEADLINE", "3 minutes", "healthy_deadline", "3m"),
    ("MSH_DEPLOY_TIMEOUT", "0", "deploy_timeout", "positive"),
    ("MSH_DEPLOY_POLL", "often", "deploy_poll", ""),
    ("MSH_STORE", "mysql", "store", "must be sqlite or postgres, not 'mysql'"),
    ("MSH_DNS_BACKEND", "bind", "dns_backend", "must be pihole or dnsmasq"),
    ("MSH_SERVICE_PROVIDER", "k8s", "service_provider", "must be auto, consul or nomad"),
    ("MSH_JOB_NAME", "mlflow.prod", "job_name", "mlflow-prod"),
])
def test_a_bad_setting_in_the_environment_is_refused_at_load_naming_it_and_its_variable(variable, value, setting,
                                                                                          instead):
    stderr = refused(inv_config({variable: value}), f"error: env {variable}: {setting} ")
    assert instead in stderr


def test_a_bad_setting_in_invoke_yaml_names_the_file(tmp_path):
    import shutil

    for name in ("tasks.py", "version.txt"):
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    text = (PROJECT_ROOT / "invoke.yaml").read_text()
    (tmp_path / "invoke.yaml").write_text(text.replace("registry: registry.lan:5000", "registry: https://registry.lan"))
    stderr = refused(inv_config({}, tmp_path), "error: invoke.yaml: registry 'https://registry.lan' has a scheme")
    assert "write registry.lan" in stderr


def test_a_bad_flag_value_names_the_flag_and_exits_2():
    import subprocess
    import sys

    from tests.services.mlflow_image import clean_env

    done = subprocess.run([sys.executable, "-m", "invoke", "up", "--port", "99999", "--dry-run"], cwd=PROJECT_ROOT,
                          env=clean_env(), capture_output=True, text=True, timeout=60)
    refused(done, "error: flag --port: local_port 99999 is not a TCP port")
    with pytest.raises(UserError, match="flag --local-port: local_port") as caught:
        Settings.load(env={}).with_overrides({"local_port": 0})
    assert caught.value.code == 2


def test_urls_get_their_scheme_the_same_way_and_lists_are_lists():
    s = Settings.load(env={"NOMAD_ADDR": "m700:4646/", "MSH_PIHOLE_URL": "pi.hole", "MSH_DEPLOY_URL": "ml.lan:8080",
                           "MSH_DATACENTER": "DC0, DC1", "MSH_STORE": "Postgres"})
    assert (s.nomad_addr, s.pihole_url, s.deploy_url) == ("http://m700:4646", "https://pi.hole", "http://ml.lan:8080")
    assert s.datacenters() == ["DC0", "DC1"] and s.datacenter == "DC0,DC1" and s.store == "postgres"
    assert Settings.load(env={"MSH_DATACENTER": ""}).datacenters() == ["*"]
    shown = inv_config({"NOMAD_ADDR": "m700:4646"}, PROJECT_ROOT, "--json")
    import json

    assert json.loads(shown.stdout)["nomad_addr"] == {"value": "http://m700:4646", "source": "env NOMAD_ADDR"}


def test_the_job_and_doctor_read_the_datacenters_alike():
    """With DC0,DC1 the job goes to both (its datacenters list), and doctor and deploy count a client of DC1
    alike (doctor used to compare the whole string and say "no client in DC0,DC1")."""
    from mlflow_self_host.flows import doctor
    from mlflow_self_host.steps.job import cluster

    s = Settings.load(env={"MSH_DATACENTER": "DC0,DC1"})
    listed = [{"ID": "n1", "Name": "pi", "Datacenter": "DC1", "Status": "ready"},
              {"ID": "n2", "Name": "far", "Datacenter": "DC7", "Status": "ready"}]

    class Nomad:  # what doctor asks after the agent, leader and token rows
        class nodes:  # noqa: N801 - python-nomad's attribute
            get_nodes = staticmethod(lambda: listed)

    assert s.datacenters() == ["DC0", "DC1"]
    assert [n["Name"] for n in listed if cluster.in_datacenters(s, n)] == ["pi"]
    rows = doctor.datacenter_rows(s, Nomad(), follow=False)
    assert [(r.name, r.ok, r.found) for r in rows] == [("datacenter DC0,DC1", True, "1 client(s), 1 ready")]
