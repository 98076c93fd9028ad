"""The real services the other tests stand on: each starts and does its job."""
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.services import free_port, proxy as proxy_service, resolver


def test_docker_engine_runs_a_container_with_host_networking(docker_client, base_image):
    out = docker_client.containers.run(base_image, ["python3", "-c", "print(6*7)"], network_mode="host",
                                       remove=True)
    assert out.strip() == b"42"


def test_base_image_trusts_the_machines_extra_certificates(docker_client, base_image):
    from tests.services.base_image import _extra_certs

    names = " ".join(p.name for p in _extra_certs())
    out = docker_client.containers.run(base_image, ["ls", "/usr/local/share/ca-certificates"], remove=True)
    for name in names.split():
        assert name.encode() in out


def test_registry_answers_v2(registry):
    import urllib.request

    with urllib.request.urlopen(registry.url("/v2/"), timeout=5) as resp:
        assert resp.status == 200
    assert registry.tags("nothing-here") == []


def test_ssh_server_runs_sudo_for_the_test_user(ssh_server):
    result = subprocess.run(
        ["ssh", "-i", str(ssh_server.key_file), "-p", str(ssh_server.port),
         "-o", f"UserKnownHostsFile={ssh_server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", f"{ssh_server.user}@{ssh_server.host}", "sudo -n id -u"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_dnsmasq_answers_and_restarts_with_new_records(dns_server):
    from tests.services.dns_server import PROXY_NAME

    (dns_server.conf_dir / "10-test.conf").write_text(f"cname=probe.lan,{PROXY_NAME}\n")
    before = dns_server.pid()
    subprocess.run([dns_server.restart_command], check=True)
    assert dns_server.pid() != before
    answer = dns_server.resolve("probe.lan")
    assert [r.address for r in answer] == ["127.0.0.1"]
    (dns_server.conf_dir / "10-test.conf").unlink()
    subprocess.run([dns_server.restart_command], check=True)


# --- the Traefik stand-in (tests/services/proxy.py) and the test resolver (tests/services/resolver.py) --

MLFLOW_TAGS = ["traefik.enable=true", "traefik.http.routers.mlflow.rule=Host(`mlflow.lan`)",
               "traefik.http.routers.mlflow.entrypoints=web"]  # as nomad/mlflow.nomad.hcl renders them
TOKEN = "test-nomad-token"


class _Server:
    """An http.server on a loopback port in a thread; can go down and come back on the same port."""

    def __init__(self, handler, port=0):
        self.handler, self.port, self.httpd = handler, port, None
        self.up()

    def up(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def down(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


class FakeCatalogue:
    """Nomad's service catalogue, as GET /v1/services and /v1/service/<name> answer it."""

    def __init__(self):
        self.services = {}  # name -> [registration]
        self.requests = []  # (path, query, X-Nomad-Token)
        catalogue = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                from urllib.parse import parse_qs, unquote, urlsplit

                url = urlsplit(self.path)
                catalogue.requests.append((url.path, parse_qs(url.query), self.headers.get("X-Nomad-Token")))
                if url.path == "/v1/services":
                    body = [{"Namespace": "default", "Services": [
                        {"ServiceName": name, "Tags": sorted({t for r in regs for t in r["Tags"]})}
                        for name, regs in catalogue.services.items()]}]
                elif url.path.startswith("/v1/service/"):
                    body = catalogue.services.get(unquote(url.path[len("/v1/service/"):]), [])
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = _Server(Handler)
        self.address = f"http://127.0.0.1:{self.server.port}"

    def register(self, name, port, tags, index=0):
        self.services.setdefault(name, []).append({
            "ID": f"_nomad-task-{name}-{index}", "ServiceName": name, "Namespace": "default",
            "NodeID": "node-1", "Datacenter": "DC0", "JobID": name, "AllocID": f"alloc-{index}",
            "Tags": list(tags), "Address": "127.0.0.1", "Port": port, "CreateIndex": 10, "ModifyIndex": 10})


class Backend:
    """A tiny upstream answering with its own name and what it received."""

    def __init__(self, name):
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self, received):
                data = json.dumps({"backend": backend.name, "host": self.headers.get("Host"),
                                   "x-forwarded-for": self.headers.get("X-Forwarded-For"),
                                   "x-forwarded-proto": self.headers.get("X-Forwarded-Proto"),
                                   "x-forwarded-host": self.headers.get("X-Forwarded-Host"),
                                   "received": received}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.answer(0)

            def do_POST(self):
                length, received = int(self.headers.get("Content-Length", 0)), 0
                while received < length:
                    chunk = self.rfile.read(min(65536, length - received))
                    if not chunk:
                        break
                    received += len(chunk)
                self.answer(received)

            def log_message(self, *args):
                pass

        self.name = name
        self.server = _Server(Handler)
        self.port = self.server.port


def request(proxy, host, method="GET", body=None):
    """(status, content type, body) of a request to the proxy with this Host header."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        connection.request(method, "/", body=body, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def backend_seen(proxy, host, **kwargs):
    status, _, body = request(proxy, host, **kwargs)
    assert status == 200, (status, body)
    return json.loads(body)


@pytest.fixture
def catalogue():
    fake = FakeCatalogue()
    yield fake
    fake.server.down()


@pytest.fixture
def backends():
    made = {}

    def make(name):
        made[name] = Backend(name)
        return made[name]

    yield make
    for backend in made.values():
        backend.server.down()


@pytest.fixture
def proxy(tmp_path, catalogue):
    started = proxy_service.start(tmp_path / "proxy", catalogue.address, poll=0.2, token=TOKEN)
    yield started
    proxy_service.stop(started)


def test_proxy_routes_a_service_once_nomad_lists_it(proxy, catalogue, backends):
    assert request(proxy, "mlflow.lan") == (404, "text/plain; charset=utf-8", b"404 page not found\n")

    a = backends("backend-a")
    catalogue.register("mlflow", a.port, MLFLOW_TAGS)
    assert proxy.wait_for_route("mlflow.lan") == [f"127.0.0.1:{a.port}"]

    seen = backend_seen(proxy, f"mlflow.lan:{proxy.port}")
    assert seen["backend"] == "backend-a"
    assert seen["host"] == f"mlflow.lan:{proxy.port}"  # unchanged, with the port
    assert seen["x-forwarded-host"] == f"mlflow.lan:{proxy.port}"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert backend_seen(proxy, "MLflow.LAN")["backend"] == "backend-a"  # host names are case-insensitive
    upload = os.urandom(3 * 1024 * 1024)  # above nginx's default 1 MB body limit: artifacts go through it
    assert backend_seen(proxy, "mlflow.lan", method="POST", body=upload)["received"] == len(upload)

    assert request(proxy, f"unknown.lan:{proxy.port}") == (404, "text/plain; charset=utf-8", b"404 page not found\n")
    assert proxy.reloads == 1
    paths = {path for path, _, _ in catalogue.requests}
    assert {"/v1/services", "/v1/service/mlflow"} <= paths
    assert all(token == TOKEN and query.get("namespace") == ["default"] for _, query, token in catalogue.requests)
    assert {tuple(query.get("filter", [])) for path, query, _ in catalogue.requests if path == "/v1/service/mlflow"} \
        == {('Tags contains "traefik.enable=true"',)}  # exposedByDefault=false: Traefik's fetchService filter


def test_proxy_serves_only_enabled_routers_on_its_entry_point(proxy, catalogue, backends):
    a, b = backends("backend-a"), backends("backend-b")
    catalogue.register("web-two-hosts", a.port, [
        "traefik.enable=true", "traefik.http.routers.two.rule=Host(`one.lan`) || Host(`two.lan`)",
        "traefik.http.routers.two.entrypoints=web"])
    catalogue.register("websecure-only", b.port, [
        "traefik.enable=true", "traefik.http.routers.secure.rule=Host(`secure.lan`)",
        "traefik.http.routers.secure.entrypoints=websecure"])
    catalogue.register("not-enabled", b.port, [
        "traefik.http.routers.off.rule=Host(`off.lan`)", "traefik.http.routers.off.entrypoints=web"])
    catalogue.register("enabled-false", b.port, [
        "traefik.enable=false", "traefik.http.routers.no.rule=Host(`no.lan`)"])

    proxy.wait_for_route("one.lan")
    time.sleep(3 * proxy.poll)  # a few more polls: nothing else appears
    assert proxy.routes() == {"one.lan": [f"127.0.0.1:{a.port}"], "two.lan": [f"127.0.0.1:{a.port}"]}
    assert backend_seen(proxy, "one.lan")["backend"] == "backend-a"
    assert backend_seen(proxy, "two.lan")["backend"] == "backend-a"
    for host in ("secure.lan", "off.lan", "no.lan"):
        assert request(proxy, host)[:2] == (404, "text/plain; charset=utf-8"), host
    assert "/v1/service/not-enabled" not in {path for path, _, _ in catalogue.requests}  # as Traefik: not fetched


def test_proxy_follows_the_registration_to_its_new_port_and_reloads_only_on_change(proxy, catalogue, backends):
    a, b = backends("backend-a"), backends("backend-b")
    catalogue.register("mlflow", a.port, MLFLOW_TAGS)
    proxy.wait_for_route("mlflow.lan")
    time.sleep(5 * proxy.poll)
    assert proxy.reloads == 1  # polls that find the same routes change nothing

    catalogue.services["mlflow"][0]["Port"] = b.port  # a new allocation, a new dynamic port
    assert proxy.wait_for_route("mlflow.lan", upstreams=[f"127.0.0.1:{b.port}"])
    assert proxy.reloads == 2
    assert backend_seen(proxy, "mlflow.lan")["backend"] == "backend-b"

    catalogue.register("mlflow", a.port, MLFLOW_TAGS, index=1)  # a second allocation: both serve
    proxy.wait_for_route("mlflow.lan", upstreams=[f"127.0.0.1:{b.port}", f"127.0.0.1:{a.port}"])
    assert {backend_seen(proxy, "mlflow.lan")["backend"] for _ in range(6)} == {"backend-a", "backend-b"}

    catalogue.services["mlflow"] = []  # no registration left: no route (Traefik's allowEmptyServices=false)
    proxy.wait_for_no_route("mlflow.lan")
    assert request(proxy, "mlflow.lan")[0] == 404


def test_proxy_answers_502_when_the_backend_refuses(proxy, catalogue):
    catalogue.register("mlflow", free_port(), MLFLOW_TAGS)  # nothing listens there
    proxy.wait_for_route("mlflow.lan")
    status, content_type, body = request(proxy, "mlflow.lan")
    assert (status, body) == (502, b"Bad Gateway")


def test_proxy_keeps_its_routes_while_nomad_is_down(proxy, catalogue, backends):
    a, b = backends("backend-a"), backends("backend-b")
    catalogue.register("mlflow", a.port, MLFLOW_TAGS)
    proxy.wait_for_route("mlflow.lan")

    catalogue.server.down()  # the agent restarts
    time.sleep(3 * proxy.poll)
    assert proxy.last_error and "reading" in proxy.last_error
    assert proxy.routes() == {"mlflow.lan": [f"127.0.0.1:{a.port}"]}
    assert backend_seen(proxy, "mlflow.lan")["backend"] == "backend-a"

    catalogue.services["mlflow"][0]["Port"] = b.port
    catalogue.server.up()  # back on the same address: the provider reads it again
    proxy.wait_for_route("mlflow.lan", upstreams=[f"127.0.0.1:{b.port}"])
    assert proxy.last_error is None
    assert backend_seen(proxy, "mlflow.lan")["backend"] == "backend-b"


def test_proxy_tls_entry_point_serves_tls_routers_and_redirects_plain_http(tmp_path, catalogue, backends):
    """Traefik's router TLS and redirectScheme, as nomad/mlflow.nomad.hcl tags them with https: true: the TLS router
    on the TLS entry point with the certificate given (any other name: 404 there too), plain HTTP redirected to
    https:// (301, 308 for a POST; the request's port dropped), a router without the middleware proxied as before."""
    import ssl

    from tests.services import tls

    ca = tls.make_ca(tmp_path / "ca")
    started = proxy_service.start(tmp_path / "proxy", catalogue.address, poll=0.2, token=TOKEN,
                                  tls_entrypoint="websecure", certificate=tls.issue(ca, tmp_path / "c", ["mlflow.lan"]))
    try:
        a, b = backends("a"), backends("b")
        catalogue.register("mlflow", a.port, [
            "traefik.enable=true", "traefik.http.routers.mlflow.rule=Host(`mlflow.lan`)",
            "traefik.http.routers.mlflow.tls=true", "traefik.http.routers.mlflow.entrypoints=websecure",
            "traefik.http.routers.mlflow-http.rule=Host(`mlflow.lan`)",
            "traefik.http.routers.mlflow-http.entrypoints=web",
            "traefik.http.routers.mlflow-http.middlewares=mlflow-https",
            "traefik.http.middlewares.mlflow-https.redirectscheme.scheme=https",
            "traefik.http.middlewares.mlflow-https.redirectscheme.permanent=true"])
        catalogue.register("other", b.port, ["traefik.enable=true", "traefik.http.routers.o.rule=Host(`o.lan`)"])
        assert started.wait_for_route("mlflow.lan", tls=True) == [f"127.0.0.1:{a.port}"]
        started.wait_for_route("o.lan")
        assert started.redirects() == {"mlflow.lan": proxy_service.Redirect("https", "", True)}
        assert started.routes() == {"o.lan": [f"127.0.0.1:{b.port}"]} and started.redirects(tls=True) == {}

        context = ssl.create_default_context(cafile=str(ca.path))
        context.check_hostname = False  # the connection goes to 127.0.0.1; the name is in the Host header

        def over_tls(host):
            connection = http.client.HTTPSConnection("127.0.0.1", started.tls_port, timeout=10, context=context)
            try:
                connection.request("GET", "/", headers={"Host": host})
                response = connection.getresponse()
                return response.status, response.read()
            finally:
                connection.close()

        status, body = over_tls("mlflow.lan")
        assert status == 200 and json.loads(body)["x-forwarded-proto"] == "https"
        assert over_tls("o.lan") == (404, b"404 page not found\n")  # a plain router: not on TLS
        for method, code in (("GET", 301), ("POST", 308)):
            connection = http.client.HTTPConnection("127.0.0.1", started.port, timeout=10)
            connection.request(method, "/api/x?y=1", headers={"Host": f"mlflow.lan:{started.port}"})
            response = connection.getresponse()
            assert (response.status, response.getheader("Location")) == (code, "https://mlflow.lan/api/x?y=1")
            connection.close()
        assert backend_seen(started, "o.lan")["backend"] == "b"
    finally:
        proxy_service.stop(started)


def test_proxy_stop_leaves_no_nginx_process(tmp_path, catalogue):
    started = proxy_service.start(tmp_path / "proxy", catalogue.address, poll=0.2)
    group = started._process.pid
    assert request(started, "x.lan")[0] == 404
    proxy_service.stop(started)
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)  # neither the master nor a worker is left in its process group
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", started.port), timeout=1).close()


def test_proxy_routes_follow_traefik_labels():
    """build_routes on its own: the default rule, the only service, conflicts, unsupported rules."""
    def reg(name, port, tags, node="n1", id_=None):
        return {"ID": id_ or f"{name}-{port}", "ServiceName": name, "NodeID": node, "Tags": tags,
                "Address": "127.0.0.1", "Port": port}

    routes = proxy_service.build_routes([
        reg("my_app", 1, ["traefik.enable=true"]),  # no router: Host(`my-app`), every entry point
        reg("paths", 2, ["traefik.enable=true", "traefik.http.routers.p.rule=PathPrefix(`/x`)"]),
        reg("noaddr", 3, ["traefik.enable=true"]) | {"Address": ""},
        reg("short", 4, ["traefik.enable=true", "traefik.http.routers.s.rule=Host(`both.lan`)"]),
        reg("long", 5, ["traefik.enable=true",
                        "traefik.http.routers.l.rule=Host(`both.lan`) || Host(`long.lan`)"]),
        reg("clash", 6, ["traefik.enable=true", "traefik.http.routers.c.rule=Host(`c1.lan`)"], id_="a"),
        reg("clash", 7, ["traefik.enable=true", "traefik.http.routers.c.rule=Host(`c2.lan`)"], id_="b"),
    ])
    assert routes == {"my-app": ["127.0.0.1:1"], "both.lan": ["127.0.0.1:5"], "long.lan": ["127.0.0.1:5"]}
    assert proxy_service.build_routes([reg("mlflow", 9, ["traefik.http.routers.m.rule=Host(`m.lan`)"])],
                                      exposed_by_default=True) == {"m.lan": ["127.0.0.1:9"]}


def test_proxy_reading_consul_routes_passing_instances_on_its_entry_point(tmp_path, backends):
    """provider="consulCatalog": Consul's catalogue (the Consul double), only instances whose checks pass
    (strictChecks passing, warning), only routers on the proxy's entry point (here "http") or on none."""
    from tests.doubles.consul import ConsulDouble

    a, b = backends("backend-a"), backends("backend-b")
    states = {"mlflow": [("mlflow-health", "critical", "")], "other": [("other-health", "passing", "")]}
    with ConsulDouble() as consul:
        consul.join("m700", "127.0.0.1")
        consul.register("m700", {"ID": "_nomad-task-1-group-svc-mlflow-http", "Service": "mlflow",
                                 "Tags": ["traefik.enable=true", "traefik.http.routers.mlflow.rule=Host(`mlflow.lan`)"],
                                 "Address": "127.0.0.1", "Port": a.port}, checks=lambda: states["mlflow"])
        consul.register("m700", {"ID": "_nomad-task-2-group-svc-other-http", "Service": "other",
                                 "Tags": ["traefik.enable=true", "traefik.http.routers.o.rule=Host(`other.lan`)",
                                          "traefik.http.routers.o.entrypoints=web"],
                                 "Address": "127.0.0.1", "Port": b.port}, checks=lambda: states["other"])
        started = proxy_service.start(tmp_path / "proxy", consul.address, poll=0.2, entrypoint="http",
                                      provider="consulCatalog")
        try:
            time.sleep(3 * started.poll)
            assert started.routes() == {} and started.last_error is None  # critical: not served yet
            states["mlflow"] = [("mlflow-health", "warning", "HTTP GET: 429 Too Many Requests")]
            assert started.wait_for_route("mlflow.lan") == [f"127.0.0.1:{a.port}"]
            assert backend_seen(started, "mlflow.lan")["backend"] == "backend-a"
            assert "other.lan" not in started.routes()  # its router names entry point "web" only
            assert ("/v1/health/service/mlflow", {"tag": "traefik.enable=true"}) in consul.requests
            assert not any(path.startswith("/v1/health/service/consul") for path, _ in consul.requests)  # not enabled
            consul.deregister("_nomad-task-1-group-svc-mlflow-http")
            started.wait_for_no_route("mlflow.lan")
        finally:
            proxy_service.stop(started)


# --- the resolver ----------------------------------------------------------------------------------

@pytest.fixture
def mlflow_cname(dns_server):
    """mlflow.lan → CNAME traefik.lan in the test dnsmasq (as `inv dns --backend dnsmasq` writes it)."""
    from tests.services.dns_server import PROXY_NAME

    record = dns_server.conf_dir / "20-resolver-test.conf"
    # local=: dnsmasq owns .lan, so an unknown name is NXDOMAIN (without it, no upstream: REFUSED).
    record.write_text(f"cname=mlflow.lan,{PROXY_NAME}\nlocal=/lan/\n")
    subprocess.run([dns_server.restart_command], check=True, capture_output=True, timeout=30)
    yield dns_server
    record.unlink()
    subprocess.run([dns_server.restart_command], check=True, capture_output=True, timeout=30)


def test_resolver_follows_the_cname_through_dnsmasq(mlflow_cname):
    original = socket.getaddrinfo
    with resolver.use_dns(mlflow_cname.port):
        answers = socket.getaddrinfo("mlflow.lan", 5000, type=socket.SOCK_STREAM, flags=socket.AI_CANONNAME)
        assert [(a[0], a[4]) for a in answers] == [(socket.AF_INET, ("127.0.0.1", 5000))]
        assert answers[0][3] == "traefik.lan"
        assert socket.gethostbyname("mlflow.lan.") == "127.0.0.1"
        with pytest.raises(socket.gaierror) as missing:
            socket.getaddrinfo("nothing-here.lan", 80)
        assert missing.value.errno == socket.EAI_NONAME
        assert socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)[0][4] == ("127.0.0.1", 80)  # others: the system
    assert socket.getaddrinfo is original


PRINT_ADDRESS = "import socket; print(socket.getaddrinfo('mlflow.lan', 5000, type=socket.SOCK_STREAM)[0][4])"


def test_resolver_in_a_subprocess_keeps_pythonpath_and_the_shadowed_sitecustomize(mlflow_cname, tmp_path):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "sitecustomize.py").write_text("import os\nos.environ['EARLIER_SITECUSTOMIZE_RAN'] = 'yes'\n")
    (earlier / "probe_module.py").write_text("VALUE = 42\n")
    env = {**os.environ, "PYTHONPATH": str(earlier)}
    env.update(resolver.env_for_subprocess(mlflow_cname.port, environ=env))
    assert env["PYTHONPATH"].split(os.pathsep)[1:] == [str(earlier)]
    assert env["MSH_TEST_DNS"] == f"127.0.0.1:{mlflow_cname.port}" and env["MSH_TEST_DNS_SUFFIXES"] == ".lan"

    code = PRINT_ADDRESS + "; import os, probe_module; print(os.environ.get('EARLIER_SITECUSTOMIZE_RAN'), probe_module.VALUE)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["('127.0.0.1', 5000)", "yes 42"]
    assert result.stderr == ""


def test_resolver_in_a_subprocess_without_pythonpath(mlflow_cname, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(resolver.env_for_subprocess(mlflow_cname.port, environ=env))
    result = subprocess.run([sys.executable, "-c", PRINT_ADDRESS], env=env,
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "('127.0.0.1', 5000)"), result.stderr
    which = "import socket; print(socket.getaddrinfo.__module__)"
    for switch, module in ((env["MSH_TEST_DNS"], "_msh_test_resolver"), ("", "socket")):  # MSH_TEST_DNS decides
        answer = subprocess.run([sys.executable, "-c", which], env={**env, "MSH_TEST_DNS": switch},
                                capture_output=True, text=True, timeout=60)
        assert (answer.returncode, answer.stdout.strip(), answer.stderr) == (0, module, "")


def test_the_user_path_by_name_through_dns_and_the_proxy(mlflow_cname, proxy, catalogue, backends):
    """http://mlflow.lan:PORT/ → dnsmasq (CNAME traefik.lan → 127.0.0.1) → nginx → the registered backend."""
    import requests

    a = backends("mlflow-backend")
    catalogue.register("mlflow", a.port, MLFLOW_TAGS)
    proxy.wait_for_route("mlflow.lan")
    with resolver.use_dns(mlflow_cname.port), requests.Session() as session:
        session.trust_env = False  # no HTTP(S)_PROXY from the developer's shell
        seen = session.get(f"http://mlflow.lan:{proxy.port}/", timeout=10).json()
    assert seen["backend"] == "mlflow-backend"
    assert seen["host"] == f"mlflow.lan:{proxy.port}"
