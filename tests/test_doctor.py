"""inv doctor against real services on loopback: all green, then each one stopped in turn goes red."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from mlflow_self_host.flows import doctor
from mlflow_self_host.core.errors import UserError
from mlflow_self_host.core.settings import Settings
from tests.doubles.nomad import NomadDouble
from tests.services import dns_server as dns_service
from tests.services import clean_env, free_port, mlflow_server
from tests.services import registry as registry_service
from tests.services import ssh_server as ssh_service

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 4  # doctor_timeout in these tests


class Services:
    """Private instances (the session's are shared, and these get stopped)."""

    def __init__(self, root: Path, docker_url: str):
        self.docker_url = docker_url
        self.registry = registry_service.start(root / "registry")
        self.ssh = ssh_service.start(root / "sshd")
        self.dns = dns_service.start(root / "dnsmasq")
        (self.dns.conf_dir / "05-mlflow.conf").write_text(f"cname=mlflow.lan,{dns_service.PROXY_NAME}\n")
        subprocess.run([self.dns.restart_command], check=True, capture_output=True)
        self.nomad = NomadDouble()  # doctor places nothing: a client without the docker driver will do
        self.mlflow = mlflow_server.start(root / "mlflow-data", metrics=True)
        self.client_hcl = root / "nomad.d" / "client.hcl"
        self.client_hcl.parent.mkdir()
        # the client's docker driver uses the test engine (the docker plugin's endpoint, as on a host
        # whose engine is not on the standard socket)
        self.client_hcl.write_text('client { enabled = true }\n\nplugin "docker" {\n  config {\n'
                                   f'    endpoint = "{docker_url}"\n  }}\n}}\n')

    def settings(self) -> dict:
        return dict(self.ssh.settings(), registry=self.registry.address, nomad_addr=self.nomad.address,
                    dns_server="127.0.0.1", dns_port=self.dns.port, domain="mlflow.lan",
                    deploy_url=self.mlflow.url, nomad_client_config=str(self.client_hcl),
                    folder_owner=ssh_service.TEST_USER, datacenter="DC0", doctor_timeout=TIMEOUT,
                    auth="none")  # the MLflow service here runs without logins (test_auth.py has them)

    def env(self) -> dict:
        env = clean_env()
        env.update({f"MSH_{k.upper()}": str(v) for k, v in self.settings().items()})
        env["DOCKER_HOST"] = self.docker_url
        return env

    def stop(self):
        mlflow_server.stop(self.mlflow)
        self.nomad.stop()
        dns_service.stop(self.dns)
        ssh_service.stop(self.ssh)
        registry_service.stop(self.registry)


@pytest.fixture(scope="module")
def services(tmp_path_factory, docker_engine_service):
    started = Services(tmp_path_factory.mktemp("doctor"), docker_engine_service.base_url)
    yield started
    started.stop()


@pytest.fixture
def own_services(tmp_path_factory, docker_engine_service):
    """Services for a test that stops them."""
    started = Services(tmp_path_factory.mktemp("doctor-stopped"), docker_engine_service.base_url)
    yield started
    started.stop()


@pytest.fixture
def project(tmp_path):
    """A project in a clean git tree, with the real invoke.yaml and version.txt."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("invoke.yaml", "version.txt"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    git = ["git", "-C", str(root), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "init"], check=True)
    return root


@pytest.fixture
def run(project, project_env):
    """run(services, **setting overrides) -> (rows, exit code, seconds); the JSON goes to stdout."""
    monkeypatch = project_env

    def go(services, **overrides):
        monkeypatch.setenv("DOCKER_HOST", services.docker_url)
        settings = Settings.load(root=project, env={}, overrides=dict(services.settings(), **overrides))
        start = time.monotonic()
        try:
            rows, code = doctor.doctor(settings, as_json=True), 0
        except UserError as exc:
            rows, code = None, exc.code
        return rows, code, time.monotonic() - start

    return go


def _rows(capsys) -> dict:
    data = json.loads(capsys.readouterr().out)
    return {row["name"]: row for row in data["checks"]}


@pytest.mark.slow
def test_all_green_then_each_service_stopped_in_turn(own_services, run, capsys):
    services = own_services
    rows, code, _ = run(services)
    got = _rows(capsys)
    assert code == 0, {n: r["found"] for n, r in got.items() if not r["ok"]}
    assert all(r["ok"] for r in got.values()) and len(got) == 27
    assert got["nightly backup"]["found"] == "nightly at 03:00 UTC; no job registered yet: `inv deploy` registers it"
    assert got["metrics"]["found"].endswith("requests counted")
    assert got["last backup"]["found"] == "none yet (no database to back up yet)"
    assert got["last restore drill"]["found"] == "none yet (no backup to drill)"
    assert got["service provider"]["found"].startswith("no job registered; deploy registers it in nomad (auto: ")
    assert got["Consul on the client"]["found"].startswith("no (Nomad found no Consul agent")
    assert "3.17.2" in got["service URL"]["found"]
    assert "traefik.lan" in got["DNS mlflow.lan"]["found"] and "127.0.0.1" in got["DNS mlflow.lan"]["found"]
    assert "not needed" in got["insecure registry"]["found"]
    agent = requests.get(services.nomad.address + "/v1/agent/self", timeout=5).json()["config"]["Version"]["Version"]
    assert f"(Nomad {agent})" in got["Nomad agent"]["found"] and "disabled" in got["Nomad ACL token"]["found"]

    steps = [
        ("service URL", lambda: mlflow_server.stop(services.mlflow), "connection refused"),
        ("DNS server", lambda: dns_service.stop(services.dns), ""),
        ("Nomad agent", services.nomad.stop, "connection refused"),
        ("SSH", lambda: ssh_service.stop(services.ssh), "connection refused"),
        ("registry", lambda: registry_service.stop(services.registry), "connection refused"),
        ("Docker engine", lambda: setattr(services, "docker_url", "unix:///nonexistent/docker.sock"),
         "not reachable"),
    ]
    red = set()
    # the rows after a failed one in the same check are not checked (red too)
    follows = {"DNS server": {"DNS mlflow.lan"}, "SSH": {"sudo", "client.hcl", f"user {ssh_service.TEST_USER}"},
               "registry": {"insecure registry"},
               "Nomad agent": {"Nomad leader", "Nomad ACL token", "datacenter DC0", "client architecture",
                               "image architecture", "service provider", "Consul on the client"}}
    # rows of other checks that need the stopped service: not checked either (they name why)
    needs = {"SSH": {"Docker on 127.0.0.1", "pull on 127.0.0.1"}}
    # rows of other checks that read the stopped service themselves: red too (the metrics read MLflow; the backup
    # rows the host over SSH)
    reads = {"service URL": {"metrics"}, "SSH": {"last backup", "last restore drill"},
             "Nomad agent": {"nightly backup"}}
    for name, stop, words in steps:
        stop()
        rows, code, took = run(services)
        got = _rows(capsys)
        red |= {name} | follows.get(name, set()) | needs.get(name, set()) | reads.get(name, set())
        assert code == 1, name
        assert took < TIMEOUT + 3, f"{name}: doctor took {took:.1f}s"
        assert not got[name]["ok"] and words in got[name]["found"] and got[name]["fix"], got[name]
        now_red = {n for n, r in got.items() if not r["ok"]}
        assert now_red == red, f"after stopping {name}"
        for follower in follows.get(name, set()):
            assert got[follower]["found"] == f"not checked: {name} failed"
        for other in needs.get(name, set()):
            assert got[other]["found"].startswith("not checked: "), got[other]


@pytest.mark.slow
def test_cli_exit_codes_and_json(services, tmp_path):
    """`inv doctor --json` through invoke: exit 0 with all rows ok, 1 with the failing row named."""
    env = services.env()
    proc = subprocess.run([sys.executable, "-m", "invoke", "-r", str(PROJECT_ROOT), "doctor", "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    data = json.loads(proc.stdout)
    rows = {r["name"]: r for r in data["checks"]}
    assert [name for name, r in rows.items() if not r["ok"]] == [], {n: r["found"] for n, r in rows.items()}
    assert proc.returncode == 0 and data["ok"] is True, proc.stderr
    # the four Nomad rows say what the double really is: its address and version, its leader, no ACLs,
    # and its one client node in DC0 (ready)
    agent = requests.get(services.nomad.address + "/v1/agent/self", timeout=5).json()["config"]["Version"]["Version"]
    leader = requests.get(services.nomad.address + "/v1/status/leader", timeout=5).json()
    assert rows["Nomad agent"]["found"] == f"{services.nomad.address} (Nomad {agent})"
    assert rows["Nomad leader"]["found"] == leader
    assert rows["Nomad ACL token"]["found"] == "ACLs are disabled: no token needed"
    assert rows["datacenter DC0"]["found"] == "1 client(s), 1 ready"
    env["MSH_REGISTRY"] = f"127.0.0.1:{free_port()}"
    proc = subprocess.run([sys.executable, "-m", "invoke", "-r", str(PROJECT_ROOT), "doctor"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert "✗" in proc.stdout and "registry" in proc.stderr.splitlines()[0]


def _black_hole():
    """A TCP port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    return sock.getsockname()[1], lambda: (stop.set(), [c.close() for c in held], sock.close())


@pytest.mark.slow
def test_a_hanging_service_is_red_within_the_timeout(services, run, capsys):
    port, close = _black_hole()
    try:
        rows, code, took = run(services, registry=f"127.0.0.1:{port}", nomad_addr=f"http://127.0.0.1:{port}",
                               ssh_port=port, doctor_timeout=2)
    finally:
        close()
    got = _rows(capsys)
    assert code == 1 and took < 2 + 3
    for name in ("registry", "Nomad agent", "SSH"):
        assert not got[name]["ok"], name
        assert any(w in got[name]["found"] for w in ("no answer within 2s", "timed out", "did not answer in time")), \
            got[name]
    assert got["sudo"]["found"] == "not checked: SSH failed"


def test_insecure_registry_rule_against_the_engine(docker_client):
    info = docker_client.info()
    assert not doctor.needs_insecure("127.0.0.1:5000", "http")
    assert not doctor.needs_insecure("10.0.0.5:5000", "https")
    assert doctor.needs_insecure("10.0.0.5:5000", "http")
    assert doctor.engine_allows_insecure("127.0.0.1:5000", info)  # the engine's default 127.0.0.0/8
    assert not doctor.engine_allows_insecure("10.254.254.1:5000", info)
    listed = {"RegistryConfig": {"IndexConfigs": {"10.0.0.5:5000": {"Secure": False}}, "InsecureRegistryCIDRs": []}}
    assert doctor.engine_allows_insecure("10.0.0.5:5000", listed)


def test_bad_version_txt_and_no_git_are_red(tmp_path, monkeypatch, capsys):
    root = tmp_path / "p"
    root.mkdir()
    shutil.copy(PROJECT_ROOT / "invoke.yaml", root)
    (root / "version.txt").write_text("one\n")
    settings = Settings.load(root=root, env={})
    assert [r.ok for r in doctor.check_version(settings)] == [False]
    monkeypatch.setenv("PATH", "/nonexistent")
    git = list(doctor.check_git(settings, 2))
    assert not git[0].ok and "not installed" in git[0].found


def _settings(**overrides) -> Settings:
    return Settings.load(root=PROJECT_ROOT, env={}, overrides=overrides)


def test_nomad_acl_token_and_datacenter_rows():
    from tests.doubles.nomad import NomadDouble

    with NomadDouble(acl_tokens={"good-secret": "management"}, datacenter="dc1") as nomad:
        def rows(**extra):
            env = {"NOMAD_TOKEN": extra.pop("token")} if "token" in extra else {}
            settings = Settings.load(root=PROJECT_ROOT, env=env, overrides=dict(nomad_addr=nomad.address, **extra))
            return {r.name: r for r in doctor.check_nomad(settings, 5)}

        missing = rows()
        assert not missing["Nomad ACL token"].ok and "NOMAD_TOKEN" in missing["Nomad ACL token"].fix
        wrong = rows(token="bad-secret")
        assert not wrong["Nomad ACL token"].ok and "rejected" in wrong["Nomad ACL token"].found
        assert "bad-secret" not in repr(wrong)
        good = rows(token="good-secret")
        assert good["Nomad ACL token"].ok and good["Nomad leader"].ok
        assert not good["datacenter DC0"].ok and "dc1" in good["datacenter DC0"].found
        assert rows(token="good-secret", datacenter="dc1")["datacenter dc1"].ok


def test_ssh_rows_name_a_missing_client_hcl_and_user(ssh_server):
    settings = _settings(**ssh_server.settings(), nomad_client_config="/nonexistent/client.hcl",
                         folder_owner="no-such-user-msh")
    got = {r.name: r for r in doctor.check_ssh(settings, 10)}
    assert got["SSH"].ok and got["sudo"].ok
    assert not got["client.hcl"].ok and "/nonexistent/client.hcl is missing" in got["client.hcl"].found
    assert not got["user no-such-user-msh"].ok and got["user no-such-user-msh"].fix


# --- architectures, and the Nomad client's own Docker engine (issue 20) ---------------------------------
def _project_at(tmp_path, version: str) -> Path:
    root = tmp_path / f"project-{version}"
    root.mkdir(exist_ok=True)
    shutil.copy(PROJECT_ROOT / "invoke.yaml", root)
    (root / "version.txt").write_text(version + "\n")
    return root


def test_architecture_rows_name_the_clients_and_the_image(nomad_cluster, docker_client, tmp_path):
    from mlflow_self_host.steps.image.platform import this_machine

    native, pi = this_machine().arch, "arm64" if this_machine().arch != "arm64" else "amd64"
    nomad_cluster.nomad.add_node("pi4", cpu_arch=pi)  # no host volumes: the job cannot go there
    settings = Settings.load(root=_project_at(tmp_path, "0.99"), env={}, overrides=nomad_cluster.overrides())
    rows = {r.name: r for r in doctor.check_nomad(settings, 10)}
    clients = rows["client architecture"]
    assert clients.ok and f"client-1 {native}, pi4 {pi}; the job can go to client-1" in clients.found
    image = rows["image architecture"]
    assert image.ok and image.found == f"{nomad_cluster.images.ref('0.99')} is linux/{native}: runs on client-1"

    unpushed = Settings.load(root=_project_at(tmp_path, "0.5"), env={}, overrides=nomad_cluster.overrides())
    row = {r.name: r for r in doctor.check_nomad(unpushed, 10)}["image architecture"]
    assert row.ok and f"is not in the registry yet; `inv build` makes it for linux/{native}" in row.found

    with NomadDouble(engine=docker_client, cpu_arch=pi, client_config=nomad_cluster.client_config) as pis:
        rows = {r.name: r for r in doctor.check_nomad(settings.with_overrides({"nomad_addr": pis.address}), 10)}
    assert not rows["image architecture"].ok
    assert f"is linux/{native}, but the clients the job can go to are client-1 {pi}" in rows["image architecture"].found
    assert f"inv build --platform linux/{pi}" in rows["image architecture"].fix


def _client_hcl(tmp_path, endpoint: str) -> Path:
    path = tmp_path / "client.hcl"
    path.write_text('# the client\nclient {\n  enabled = true\n}\n\nplugin "docker" {\n  config {\n'
                    f'    endpoint = "{endpoint}"\n  }}\n}}\n')
    return path


def _docker_rows(ssh_server, tmp_path, endpoint, registry, image="mlflow-stub", version="0.99"):
    settings = Settings.load(root=_project_at(tmp_path, version), env={}, overrides=dict(
        ssh_server.settings(), nomad_client_config=str(_client_hcl(tmp_path, endpoint)), registry=registry,
        image=image))
    return {r.name: r for r in doctor.check_client_docker(settings, 10)}


def test_the_clients_docker_engine_reads_the_image_from_the_registry(ssh_server, stub_images,
                                                                     docker_engine_service, tmp_path):
    from mlflow_self_host.steps.image.platform import this_machine

    stub_images.publish("0.99")
    rows = _docker_rows(ssh_server, tmp_path, docker_engine_service.base_url, stub_images.registry)
    engine, pull = rows["Docker on 127.0.0.1"], rows["pull on 127.0.0.1"]
    assert engine.ok and engine.found.startswith("Docker 20.") and docker_engine_service.base_url in engine.found
    assert pull.ok and pull.found == (f"its engine reads {stub_images.ref('0.99')} from the registry "
                                      f"(linux/{this_machine().arch})")


def test_the_clients_docker_engine_rows_say_what_is_wrong(ssh_server, docker_engine_service, tmp_path):
    rows = _docker_rows(ssh_server, tmp_path, f"unix://{tmp_path}/no-docker.sock", "127.0.0.1:5000")
    assert not rows["Docker on 127.0.0.1"].ok and "no Docker engine answers at unix://" in rows["Docker on 127.0.0.1"].found
    assert "pull on 127.0.0.1" not in rows  # the check stops there (run_checks marks it not checked)

    gone = f"127.0.0.1:{free_port()}"
    rows = _docker_rows(ssh_server, tmp_path, docker_engine_service.base_url, gone)
    assert not rows["pull on 127.0.0.1"].ok and "connection refused" in rows["pull on 127.0.0.1"].found
    assert "not this machine's loopback" in rows["pull on 127.0.0.1"].fix


def test_a_plain_http_registry_the_clients_engine_does_not_list_as_insecure(ssh_server, docker_engine_service,
                                                                          lan_address, tmp_path):
    """What a Nomad client meets with a registry on the LAN that only the laptop's daemon.json lists."""
    lan_registry = registry_service.start(tmp_path / "lan-registry", host=lan_address)
    try:
        rows = _docker_rows(ssh_server, tmp_path, docker_engine_service.base_url, lan_registry.address)
    finally:
        registry_service.stop(lan_registry)
    pull = rows["pull on 127.0.0.1"]
    assert not pull.ok
    assert f"the plain-HTTP registry {lan_registry.address} is not in the insecure-registries" in pull.found
    assert "server gave HTTP response to HTTPS client" in pull.found
    assert f'"insecure-registries": ["{lan_registry.address}"]' in pull.fix and "/etc/docker/daemon.json" in pull.fix


def test_the_docker_plugin_block_of_client_hcl():
    from mlflow_self_host.adapters.client_docker import docker_plugin

    text = ('client { enabled = true }\n# plugin "docker" { config { endpoint = "unix:///commented" } }\n'
            'plugin "raw_exec" { config { enabled = true } }\n'
            'plugin "docker" {\n  config {\n    volumes { enabled = true }  # "}" in a comment\n'
            '    endpoint = "unix:///run/docker-nomad.sock"\n'
            '    auth {\n      config = "/root/.docker/config.json"\n    }\n  }\n}\n')
    plugin = docker_plugin(text)
    assert (plugin.endpoint, plugin.auth_config, plugin.auth_helper) == (
        "unix:///run/docker-nomad.sock", "/root/.docker/config.json", "")
    assert docker_plugin('client { enabled = true }\n').endpoint == ""


# --- the shared artifacts folder (store: postgres, issue 18) ------------------------------------------------------
@pytest.mark.parametrize("answer, allocations, ok, says", [
    ("nfs4 nas.lan:/export/mlflow /opt/nomad/data/mlflow/artifacts", 2, True, "nfs4 from nas.lan:/export/mlflow"),
    ("cifs //nas/mlflow /mnt/nas", 3, True, "mounted at /mnt/nas"),
    ("nfs", 2, True, "shared storage"),  # stat -f's answer, where findmnt is missing
    ("ext4 /dev/sda1 /", 2, False, "this client's own disk"),
    ("ext2/ext3", 2, False, "this client's own disk"),
    ("fuse.bindfs /srv/x /opt", 2, False, "this client's own disk"),  # a FUSE mount of a local folder
    ("ext4 /dev/sda1 /", 1, True, "one allocation: fine"),
    ("missing", 2, False, "does not exist"),
    ("fuseblk", 2, False, "which `stat -f` cannot name"),  # stat -f's name for any FUSE filesystem
    ("nfs4 nas:/export/ml\\x20flow /mnt/ml\\x20data", 2, True, "from nas:/export/ml flow, mounted at /mnt/ml data"),
])
def test_the_shared_artifacts_row_names_the_filesystem(answer, allocations, ok, says):
    from mlflow_self_host.steps.store import health

    row = health.artifacts_row("/opt/nomad/data/mlflow/artifacts", "m700", health.parse_mount(answer), allocations)
    assert row.name == "shared artifacts" and row.ok is ok and says in row.found
    assert ("every Nomad client" in row.fix or "findmnt" in row.fix) is (not ok)


def test_doctor_checks_the_artifacts_folder_and_the_variable_only_for_the_postgres_store():
    for store, wanted in (("sqlite", False), ("postgres", True)):
        checks = [check.run for check in doctor._checks(_settings(store=store))]
        assert (doctor.check_artifacts in checks) is wanted and (doctor.check_database_variable in checks) is wanted


def test_a_local_artifacts_folder_is_red_over_ssh_with_two_allocations(ssh_server, tmp_path):
    folder = tmp_path / "artifacts"
    folder.mkdir()
    base = dict(ssh_server.settings(), store="postgres", artifacts_path=str(folder))
    (row,) = doctor.check_artifacts(_settings(**base, count=2), 10)
    assert not row.ok and f"{folder} on 127.0.0.1 is on " in row.found, row
    assert "this client's own disk: with 2 allocations" in row.found and "every Nomad client" in row.fix
    (row,) = doctor.check_artifacts(_settings(**base, count=1), 10)
    assert row.ok and "one allocation" in row.found
    (row,) = doctor.check_artifacts(_settings(**dict(base, artifacts_path=str(folder / "nope")), count=2), 10)
    assert not row.ok and "does not exist" in row.found


def test_an_sshfs_artifacts_folder_is_shared_storage(ssh_server):
    """A real network filesystem on the client: the test sshd's folder mounted through sshfs (FUSE)."""
    import tempfile

    from tests.services import need_binary

    sshfs = need_binary("sshfs", "sshfs")
    share = Path(tempfile.mkdtemp(prefix="msh-share-"))
    mount = Path(tempfile.mkdtemp(prefix="msh-artifacts-"))
    share.chmod(0o777)
    try:
        subprocess.run([sshfs, f"{ssh_server.user}@127.0.0.1:{share}", str(mount), "-o",
                        f"port={ssh_server.port},IdentityFile={ssh_server.key_file},BatchMode=yes,"
                        f"UserKnownHostsFile={ssh_server.known_hosts},StrictHostKeyChecking=yes"],
                       check=True, capture_output=True, timeout=30)
        try:
            settings = _settings(**ssh_server.settings(), store="postgres", artifacts_path=str(mount))
            (row,) = doctor.check_artifacts(settings, 10)
            assert row.ok and f"fuse.sshfs from {ssh_server.user}@127.0.0.1:{share}" in row.found, row
            assert "2 allocations see the same artifacts" in row.found
        finally:
            subprocess.run(["umount", str(mount)], check=True, capture_output=True, timeout=30)
    finally:
        mount.rmdir()
        shutil.rmtree(share)
