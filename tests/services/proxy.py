"""A reverse proxy standing in for Traefik with its Nomad or Consul Catalog provider: nginx, routed from
Nomad's service catalogue or Consul's.

Traefik is not available on the test machines, so the tests run Debian's nginx (``apt-get install
nginx``) and a "provider" thread that does what Traefik's provider does: read the catalogue
(``provider="nomad"``, the default: Nomad's; ``provider="consulCatalog"``: Consul's, at ``endpoint``),
build routes from the services' ``traefik.*`` tags, and, only when the routes changed, rewrite nginx's
config and reload it (``nginx -s reload``). nginx runs as root with its own prefix, config, pid, logs
and temp folders under ``root`` and listens on ``127.0.0.1:<free port>``: the one entry point, named
``entrypoint`` (``web`` unless told otherwise, as Traefik's ``entryPoints.<name>``).

What was taken from Traefik's source (github.com/traefik/traefik, ``pkg/provider/nomad/``):

- ``nomad.go``: the provider lists ``GET /v1/services`` (every namespace stub in the answer), skips a
  service whose tags do not enable it (``getExtraConf``: ``traefik.enable``, else exposedByDefault),
  then ``GET /v1/service/<name>`` for each enabled one, with the filter
  ``Tags contains "traefik.enable=true"`` when exposedByDefault is false (``fetchService``), the
  namespace and the ``X-Nomad-Token``. Every registration becomes an item with its own tags, address
  and port. The default ``refreshInterval`` is 15 s (``SetDefaults``; polling, not ``watch``), and
  Traefik's own default for ``exposedByDefault`` is true: our Traefik is configured with
  ``exposedByDefault=false``, which this stand-in follows (``exposed_by_default=False``). A failed
  read (agent down, an error answer for one service) fails the whole load; the operation is retried
  with backoff and the last configuration stays in force (``Provide``).
- ``tag.go``: ``tagsToLabels``: a tag ``<prefix>.<key>=<value>`` is the label ``traefik.<key>``.
- ``pkg/provider/consulcatalog/consul_catalog.go`` (the ``consulCatalog`` provider): it lists
  ``GET /v1/catalog/services`` (``{name: tags}``), skips a service whose tags do not enable it
  (``getExtraConf``), then ``GET /v1/health/service/<name>`` (``Health().Service(name, tag, false)``)
  with ``tag=traefik.enable=true`` when exposedByDefault is false (``fetchService``); each entry is an
  item with the service's tags, address (the node's when the service has none) and port, and the
  aggregated status of its checks (consul api ``HealthChecks.AggregatedStatus``: critical over warning
  over passing). ``config.go`` ``keepContainer`` drops an item whose status is not in ``strictChecks``
  (default passing and warning: ``defaultStrictChecks``), so an instance whose check has not passed
  yet is not served. The routes are built as for the Nomad provider (``buildConfiguration``: items
  named ``Normalize(Node-Name-ID)``, merged the same way).
- ``config.go``: ``buildConfig`` skips disabled items (``keepItem``) and items without an address or
  port (``addServer``); the service is named after the Nomad service (``getName``: ``Normalize``d), its
  servers are ``http://Address:Port`` of every registration, merged across registrations
  (``pkg/provider/merge.go``: equal routers merge, conflicting routers with one name are dropped).
  A service with no registrations yields no item, so its route disappears (``allowEmptyServices`` is
  false by default).
- ``pkg/provider/configuration.go`` (``BuildRouterConfiguration``): no router in the tags gives one
  router named after the service; a router without a rule gets the default rule
  ``Host(`{{ normalize .Name }}`)``; a router without a service gets the only service.
- ``pkg/server/aggregator.go``: a router without entry points gets the default entry points (here the
  one entry point); ``pkg/config/runtime/runtime_http.go``: an entry point the router names but that
  does not exist is an error (logged), so a router naming only other entry points is not served.
- ``pkg/muxer/http/matcher.go``: ``Host`` matches the request's host without the port, case-insensitive;
  an unmatched request gets Go's ``404 page not found`` (text/plain).

Where the stand-in differs:

- It polls every ``poll`` seconds (default 1 s), the equivalent of setting Traefik's
  ``providers.nomad.refreshInterval`` (or ``providers.consulCatalog.refreshInterval``), and retries a
  failed read at the next poll instead of with exponential backoff. Like Traefik it keeps the last
  routes meanwhile.
- Rules: only ``Host(`a`)`` and ``Host(`a`) || Host(`b`)`` (backticks or double quotes); a router with
  another rule is not served. Only the tags ``traefik.enable``,
  ``traefik.http.routers.<router>.{rule,entrypoints,service,middlewares,tls,tls.*}`` and
  ``traefik.http.middlewares.<name>.redirectscheme.{scheme,port,permanent}``; other labels (other middlewares,
  which a router then goes without, ``services.<name>.loadbalancer.*``, TCP/UDP, canary) are ignored.
- TLS (``start(..., tls_entrypoint="websecure", certificate=(cert, key))``): a second entry point, its own port,
  where nginx terminates TLS with that one certificate for every name (Traefik's default certificate: a
  ``tls.certresolver`` is ignored). As in Traefik a router with ``tls`` (``tls=true``, or any ``tls.*`` label)
  takes TLS requests only and one without plain ones only (``pkg/server/router/router.go``, the docs' "router
  TLS"); the stand-in's plain entry point takes no TLS and its TLS one no plain HTTP (nginx answers that 400),
  where Traefik's entry points take both. No SNI routing: every name shares the certificate.
- ``redirectScheme`` (``pkg/middlewares/redirect/redirect_scheme.go``): a router whose middlewares include one
  answers every request with a redirect to ``scheme://host[:port]/uri`` (the request's port dropped; ``port``
  the middleware's, none for 443 with https), 302 (307 for a method other than GET), ``permanent`` 301 (308). Two routers claiming one host: the
  longer rule wins (Traefik's default priority), then the router name.
- nginx does the proxying: Host passed through unchanged (with its port), ``X-Forwarded-For`` (the
  client's address: Traefik trusts no incoming forwarded headers by default), ``-Proto``, ``-Host``,
  ``-Port``, ``X-Real-Ip``; no body size limit, request and response bodies streamed (no buffering),
  HTTP/1.1 to the upstreams, no retries (``proxy_next_upstream off``, as Traefik without the retry
  middleware) and round robin; a refused upstream gives ``502 Bad Gateway``. An upstream server is
  never marked down (``max_fails=0``), Traefik has no passive health check either.
- The Host ``generation.proxy.invalid`` answers the config generation nginx serves, so that ``routes()``
  only reports a route once nginx really serves it.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import subprocess
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import free_port, need_binary, stop_process, unavailable, wait_for

log = logging.getLogger(__name__)

PREFIX = "traefik"
GENERATION_HOST = "generation.proxy.invalid"
NOMAD_TIMEOUT = 5.0
RELOAD_TIMEOUT = 10.0
PROVIDERS = ("nomad", "consulCatalog")
STRICT_CHECKS = ("passing", "warning")  # consulcatalog defaultStrictChecks

_HOST_CALL = re.compile(r"""\s*Host\(\s*(?:`([^`]*)`|"([^"]*)")\s*\)\s*""")
_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")


# --- routes from the catalogue (what Traefik's provider builds) -------------------------------------

@dataclass(frozen=True)
class Router:
    name: str
    rule: str
    entrypoints: tuple[str, ...]
    service: str
    tls: bool = False  # takes TLS requests only (else plain ones only)
    middlewares: tuple[str, ...] = ()


@dataclass(frozen=True)
class Redirect:
    """Traefik's redirectScheme middleware."""

    scheme: str
    port: str = ""
    permanent: bool = False

    def location(self) -> str:
        """nginx's target: scheme://$host[:port]$request_uri ($host has no port, as Traefik's drops it)."""
        default = {"http": "80", "https": "443"}.get(self.scheme)
        port = f":{self.port}" if self.port and self.port != default else ""
        return f"{self.scheme}://$host{port}$request_uri"


@dataclass(frozen=True)
class Served:
    """What the proxy serves: {host: upstreams} on the plain and the TLS entry point, {host: Redirect} on each."""

    plain: dict = field(default_factory=dict)
    tls: dict = field(default_factory=dict)
    redirects: dict = field(default_factory=dict)  # on the plain entry point
    tls_redirects: dict = field(default_factory=dict)


def normalize(name: str) -> str:
    """Traefik's provider.Normalize: runs of anything but letters and digits become one ``-``."""
    return "-".join(re.findall(r"[^\W_]+", name))


def tags_to_labels(tags, prefix: str = PREFIX) -> dict[str, str]:
    labels = {}
    for tag in tags or ():
        if tag.startswith(prefix) and "=" in tag:
            left, right = (part.strip() for part in tag.split("=", 1))
            key = left[len(prefix) + 1:] if left.startswith(prefix + ".") else left
            labels["traefik." + key] = right
    return labels


def enabled(tags, exposed_by_default: bool) -> bool:
    value = tags_to_labels(tags).get("traefik.enable")
    return exposed_by_default if value is None else value.lower() == "true"


def rule_hosts(rule: str) -> list[str] | None:
    """The hosts of ``Host(`a`)`` or ``Host(`a`) || Host(`b`)``; None for any other rule."""
    hosts = []
    for part in rule.split("||"):
        match = _HOST_CALL.fullmatch(part)
        if not match:
            return None
        host = (match.group(1) if match.group(1) is not None else match.group(2)).lower().rstrip(".")
        if not _HOST_NAME.match(host):
            return None
        hosts.append(host)
    return hosts


def _routers(service_name: str, labels: dict[str, str]) -> dict[str, Router]:
    fields: dict[str, dict[str, str]] = {}
    for key, value in labels.items():
        parts = key.split(".")
        if len(parts) == 5 and parts[:3] == ["traefik", "http", "routers"]:
            fields.setdefault(parts[3], {})[parts[4].lower()] = value
    if not fields:  # no router in the tags: one named after the service (BuildRouterConfiguration)
        fields[service_name] = {}
    tls_labelled = {key.split(".")[3] for key in labels
                    if len(key.split(".")) > 5 and key.split(".")[:3] == ["traefik", "http", "routers"]
                    and key.split(".")[4].lower() == "tls"}  # tls.certresolver, tls.options... make it TLS too
    routers = {}
    for name, values in fields.items():
        entrypoints = tuple(e.strip() for e in values.get("entrypoints", "").split(",") if e.strip())
        routers[name] = Router(
            name=name,
            rule=values.get("rule") or f"Host(`{service_name}`)",  # the default rule
            entrypoints=entrypoints,
            service=values.get("service") or service_name,
            tls=values.get("tls", "").lower() == "true" or name in tls_labelled,
            middlewares=tuple(m.strip().split("@", 1)[0] for m in values.get("middlewares", "").split(",")
                              if m.strip()),
        )
    return routers


def _redirects(labels: dict[str, str]) -> dict[str, Redirect]:
    """{middleware name: Redirect} of the redirectScheme middlewares in the labels (one without a scheme: none)."""
    fields: dict[str, dict[str, str]] = {}
    for key, value in labels.items():
        parts = key.split(".")
        if len(parts) == 6 and parts[:3] == ["traefik", "http", "middlewares"] and parts[4].lower() == "redirectscheme":
            fields.setdefault(parts[3], {})[parts[5].lower()] = value
    return {name: Redirect(values["scheme"], values.get("port", ""), values.get("permanent", "").lower() == "true")
            for name, values in fields.items() if values.get("scheme")}


def _server(registration: dict) -> str | None:
    address, port = registration.get("Address") or "", registration.get("Port") or 0
    if not address or not isinstance(port, int) or port <= 0:
        return None
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def build_routes(registrations: list[dict], entrypoint: str = "web",
                 exposed_by_default: bool = False, tls: bool = False) -> dict[str, list[str]]:
    """{host: [upstream "address:port", ...]} served on ``entrypoint``, from Nomad registrations: its plain
    requests' routers (``tls``: its TLS requests'), those that redirect left out (``build_redirects``)."""
    return {host: servers for host, (_, servers, redirect) in
            _claims(registrations, entrypoint, exposed_by_default, tls).items() if redirect is None}


def build_redirects(registrations: list[dict], entrypoint: str = "web", exposed_by_default: bool = False,
                    tls: bool = False) -> dict[str, Redirect]:
    """{host: Redirect} on ``entrypoint``: the hosts whose router has a redirectScheme middleware."""
    return {host: redirect for host, (_, _, redirect) in
            _claims(registrations, entrypoint, exposed_by_default, tls).items() if redirect is not None}


def _claims(registrations: list[dict], entrypoint: str, exposed_by_default: bool, tls: bool) -> dict:
    """{host: (router name, upstreams, Redirect or None)}: the router each host is served by on ``entrypoint``."""
    def item_name(r):  # buildConfig's svcName, the order Traefik merges items in
        return normalize(f"{r.get('NodeID', '')}-{r.get('ServiceName', '')}-{r.get('ID', '')}")

    routers: dict[str, Router] = {}
    conflicts: set[str] = set()
    servers: dict[str, list[str]] = {}
    redirects: dict[str, Redirect] = {}
    for registration in sorted(registrations, key=item_name):
        tags = registration.get("Tags") or []
        server = _server(registration)
        if not enabled(tags, exposed_by_default) or server is None:
            continue
        service_name = normalize(registration.get("ServiceName", ""))
        servers.setdefault(service_name, []).append(server)
        labels = tags_to_labels(tags)
        for name, redirect in _redirects(labels).items():
            redirects.setdefault(name, redirect)
        for name, router in _routers(service_name, labels).items():
            if name in routers and routers[name] != router:
                conflicts.add(name)
            routers.setdefault(name, router)

    claims: dict[str, tuple[int, str, list[str], Redirect | None]] = {}
    for name, router in sorted(routers.items()):
        if name in conflicts:
            log.warning("router %s: conflicting definitions across registrations, not served", name)
            continue
        if router.tls != tls:  # a TLS router takes TLS requests only, another plain ones only
            continue
        if entrypoint not in (router.entrypoints or (entrypoint,)):  # no entry points: the default ones
            log.warning("router %s: entryPoint %s doesn't exist, not served", name, ",".join(router.entrypoints))
            continue  # it names only entry points this proxy does not have
        hosts = rule_hosts(router.rule)
        if hosts is None:
            log.warning("router %s: rule %r is not supported by the stand-in, not served", name, router.rule)
            continue
        if router.service not in servers:
            continue
        redirect = next((redirects[m] for m in router.middlewares if m in redirects), None)
        for host in hosts:
            claim = (-len(router.rule), name, servers[router.service], redirect)
            if host not in claims or claim[:2] < claims[host][:2]:
                claims[host] = claim
    return {host: (claim[1], list(claim[2]), claim[3]) for host, claim in sorted(claims.items())}


# --- nginx ------------------------------------------------------------------------------------------

def nginx_config(root: Path, port: int, routes: "dict[str, list[str]] | Served", generation: int, tls_port: int = 0,
                 certificate: tuple[Path, Path] | None = None) -> str:
    """``routes``: the plain entry point's {host: upstreams}, or everything served (``Served``); ``tls_port`` and
    ``certificate`` (cert, key): the TLS entry point, when there is one."""
    served = routes if isinstance(routes, Served) else Served(plain=routes)
    listen = f"127.0.0.1:{port}"
    user = "user root;\n" if os.geteuid() == 0 else ""
    upstreams, servers = [], []
    entrypoints = [(listen, served.plain, served.redirects)]
    if tls_port and certificate:
        entrypoints.append((f"127.0.0.1:{tls_port} ssl", served.tls, served.tls_redirects))
    index = 0
    for where, routed, redirects in entrypoints:
        for host, upstream in sorted(routed.items()):
            lines = "".join(f"    server {address} max_fails=0;\n" for address in upstream)
            upstreams.append(f"  upstream route_{index} {{\n{lines}  }}\n")
            servers.append(
                f"  server {{\n    listen {where};\n    server_name {host};\n"
                f"    location / {{ proxy_pass http://route_{index}; }}\n"
                f"    error_page 502 @bad_gateway;\n    error_page 504 @gateway_timeout;\n"
                f"    location @bad_gateway {{ return 502 \"Bad Gateway\"; }}\n"
                f"    location @gateway_timeout {{ return 504 \"Gateway Timeout\"; }}\n  }}\n"
            )
            index += 1
        for host, redirect in sorted(redirects.items()):
            get, other = (301, 308) if redirect.permanent else (302, 307)
            servers.append(
                f"  server {{\n    listen {where};\n    server_name {host};\n    location / {{\n"
                f"      if ($request_method = GET) {{ return {get} {redirect.location()}; }}\n"
                f"      return {other} {redirect.location()};\n    }}\n  }}\n"
            )
    if len(entrypoints) > 1:
        cert, key = certificate
        servers.append(
            f"  server {{\n    listen {entrypoints[1][0]} default_server;\n    server_name _;\n"
            "    location / { return 404 \"404 page not found\\n\"; }\n  }\n"
        )
        tls_lines = f"  ssl_certificate {cert};\n  ssl_certificate_key {key};\n"
    else:
        tls_lines = ""
    tmp = root / "tmp"
    return (
        f"# written by tests/services/proxy.py: generation {generation}\n"
        f"{user}daemon off;\nmaster_process on;\nworker_processes 1;\n"
        f"pid {root / 'nginx.pid'};\nerror_log {root / 'logs' / 'error.log'} notice;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        f"  access_log {root / 'logs' / 'access.log'};\n"
        f"  client_body_temp_path {tmp / 'body'};\n  proxy_temp_path {tmp / 'proxy'};\n"
        f"  fastcgi_temp_path {tmp / 'fastcgi'};\n  uwsgi_temp_path {tmp / 'uwsgi'};\n"
        f"  scgi_temp_path {tmp / 'scgi'};\n"
        "  default_type \"text/plain; charset=utf-8\";\n"
        "  server_tokens off;\n"
        "  client_max_body_size 0;\n"
        "  proxy_request_buffering off;\n  proxy_buffering off;\n"
        "  proxy_http_version 1.1;\n"
        "  proxy_next_upstream off;\n"
        "  proxy_connect_timeout 30s;\n  proxy_read_timeout 1h;\n  proxy_send_timeout 1h;\n"
        "  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }\n"
        "  proxy_set_header Host $http_host;\n"
        "  proxy_set_header Upgrade $http_upgrade;\n"
        "  proxy_set_header Connection $connection_upgrade;\n"
        "  proxy_set_header X-Forwarded-For $remote_addr;\n"
        "  proxy_set_header X-Forwarded-Proto $scheme;\n"
        "  proxy_set_header X-Forwarded-Host $http_host;\n"
        "  proxy_set_header X-Forwarded-Port $server_port;\n"
        "  proxy_set_header X-Real-Ip $remote_addr;\n"
        + tls_lines +
        "  server {\n"
        f"    listen {listen} default_server;\n    server_name _;\n"
        "    location / { return 404 \"404 page not found\\n\"; }\n  }\n"
        "  server {\n"
        f"    listen {listen};\n    server_name {GENERATION_HOST};\n"
        f"    location / {{ return 200 \"{generation}\"; }}\n  }}\n"
        + "".join(upstreams) + "".join(servers) +
        "}\n"
    )


def aggregated_status(checks) -> str:
    """consul api HealthChecks.AggregatedStatus: maintenance, critical, warning, else passing."""
    statuses = set()
    for check in checks or ():
        check_id = check.get("CheckID") or ""
        if check_id == "_node_maintenance" or check_id.startswith("_service_maintenance:"):
            return "maintenance"
        if check.get("Status") not in ("passing", "warning", "critical"):
            return ""
        statuses.add(check["Status"])
    return next((s for s in ("critical", "warning") if s in statuses), "passing")


@dataclass
class Proxy:
    port: int
    root: Path
    endpoint: str  # the agent the provider reads: Nomad's, or Consul's for consulCatalog
    entrypoint: str
    namespace: str
    poll: float
    token: str | None = field(default=None, repr=False)
    exposed_by_default: bool = False
    provider: str = "nomad"  # or consulCatalog
    tls_entrypoint: str | None = None  # the TLS entry point's name (None: none)
    tls_port: int = 0
    certificate: tuple | None = None  # (cert, key) PEM files: the TLS entry point's certificate for every name
    reloads: int = 0  # nginx reloads after a route change (not counting the start)
    last_error: str | None = None  # the provider's last failure, None once a read succeeds
    _binary: str = ""
    _process: subprocess.Popen | None = field(default=None, repr=False)
    _stderr: object = field(default=None, repr=False)
    _served: Served = field(default_factory=Served, repr=False)
    _generation: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def config_file(self) -> Path:
        return self.root / "nginx.conf"

    def routes(self, tls: bool = False) -> dict[str, list[str]]:
        """{host: ["address:port", ...]} that nginx serves now on the plain entry point (``tls``: the TLS one)."""
        with self._lock:
            routed = self._served.tls if tls else self._served.plain
            return {host: list(upstreams) for host, upstreams in routed.items()}

    def redirects(self, tls: bool = False) -> dict[str, Redirect]:
        """{host: Redirect} that nginx answers with a redirect now on the plain entry point (``tls``: the TLS one)."""
        with self._lock:
            return dict(self._served.tls_redirects if tls else self._served.redirects)

    def wait_for_route(self, host: str, timeout: float = 10.0, upstreams: list[str] | None = None,
                       tls: bool = False) -> list[str]:
        """The upstreams nginx serves ``host`` with, once it does (and, given ``upstreams``, once they are those)."""
        def served():
            self._check_running()
            current = self.routes(tls).get(host.lower())
            return current if current and (upstreams is None or current == list(upstreams)) else None
        return wait_for(served, timeout, f"proxy route for {host}" + (f" to {upstreams}" if upstreams else "")
                        + (f" (provider: {self.last_error})" if self.last_error else ""), interval=0.05)

    def wait_for_no_route(self, host: str, timeout: float = 10.0) -> None:
        wait_for(lambda: self._check_running() or host.lower() not in self.routes(), timeout,
                 f"removal of the proxy route for {host}", interval=0.05)

    def error_log(self) -> str:
        try:
            return (self.root / "logs" / "error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # the provider ---------------------------------------------------------------------------------

    def _get(self, path: str, token_header: str, **query) -> object:
        request = urllib.request.Request(f"{self.endpoint.rstrip('/')}{path}"
                                         + (f"?{urllib.parse.urlencode(query)}" if query else ""))
        if self.token:
            request.add_header(token_header, self.token)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an HTTP(S)_PROXY
        with opener.open(request, timeout=NOMAD_TIMEOUT) as response:
            return json.loads(response.read())

    def _nomad_get(self, path: str, **query) -> object:
        return self._get(path, "X-Nomad-Token", namespace=self.namespace, **query)

    def read_catalogue(self) -> Served:
        """What the provider's catalogue gives now (routes and redirects of each entry point); raises when it
        cannot be read."""
        registrations = self._read_consul() if self.provider == "consulCatalog" else self._read_nomad()
        exposed, tls = self.exposed_by_default, self.tls_entrypoint
        return Served(plain=build_routes(registrations, self.entrypoint, exposed),
                      tls=build_routes(registrations, tls, exposed, tls=True) if tls else {},
                      redirects=build_redirects(registrations, self.entrypoint, exposed),
                      tls_redirects=build_redirects(registrations, tls, exposed, tls=True) if tls else {})

    def _read_consul(self) -> list[dict]:
        """Traefik's consulCatalog provider (getConsulServicesData): the instances it keeps, as registrations."""
        registrations = []
        for name, tags in (self._get("/v1/catalog/services", "X-Consul-Token") or {}).items():
            if not enabled(tags, self.exposed_by_default):
                continue
            query = {} if self.exposed_by_default else {"tag": f"{PREFIX}.enable=true"}
            path = f"/v1/health/service/{urllib.parse.quote(name, safe='')}"
            for entry in self._get(path, "X-Consul-Token", **query) or []:
                service, node = entry.get("Service") or {}, entry.get("Node") or {}
                if aggregated_status(entry.get("Checks")) not in STRICT_CHECKS:
                    continue  # keepContainer: not in strictChecks
                registrations.append({"ID": service.get("ID", ""), "ServiceName": name, "NodeID": node.get("Node", ""),
                                      "Tags": service.get("Tags") or [],
                                      "Address": service.get("Address") or node.get("Address") or "",
                                      "Port": service.get("Port") or 0})
        return registrations

    def _read_nomad(self) -> list[dict]:
        """Traefik's Nomad provider: every registration of the enabled services."""
        registrations = []
        for stub in self._nomad_get("/v1/services") or []:
            for service in stub.get("Services") or []:
                if not enabled(service.get("Tags"), self.exposed_by_default):
                    continue
                query = {} if self.exposed_by_default else {"filter": f'Tags contains "{PREFIX}.enable=true"'}
                name = urllib.parse.quote(service["ServiceName"], safe="")
                registrations.extend(self._nomad_get(f"/v1/service/{name}", **query) or [])
        return registrations

    def refresh(self) -> bool:
        """One provider round: read the catalogue, reload nginx if the routes changed. True if reloaded."""
        try:
            wanted = self.read_catalogue()
        except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException) as exc:
            self.last_error = f"reading {self.endpoint}: {exc}"
            log.warning("proxy provider: %s; keeping the last routes", self.last_error)
            return False
        self.last_error = None
        with self._lock:
            if wanted == self._served:
                return False
        try:
            self._apply(wanted)
        except (OSError, RuntimeError, TimeoutError) as exc:
            self.last_error = f"reloading nginx: {exc}"
            log.error("proxy provider: %s", self.last_error)
            return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.poll)

    def _apply(self, routes: Served) -> None:
        generation = self._generation + 1
        self._write_config(routes, generation)
        test = subprocess.run(self._command("-t"), capture_output=True, text=True, timeout=30)
        if test.returncode != 0:
            raise RuntimeError(f"nginx -t refused the new config: {test.stderr.strip()}")
        old_workers = self._workers()
        reload = subprocess.run(self._command("-s", "reload"), capture_output=True, text=True, timeout=30)
        if reload.returncode != 0:
            raise RuntimeError(f"nginx -s reload failed: {reload.stderr.strip()}")
        # Until an old worker handles its QUIT it still accepts connections with the old routes.
        wait_for(lambda: all(self._stopped_accepting(pid) for pid in old_workers), RELOAD_TIMEOUT,
                 "nginx's old workers to stop accepting", interval=0.02)
        wait_for(lambda: self._served_generation() == generation, RELOAD_TIMEOUT,
                 f"nginx serving config generation {generation}", interval=0.02)
        with self._lock:
            self._generation, self._served = generation, routes
            self.reloads += 1
        log.info("proxy: routes %s (reload %d)", routes, self.reloads)

    def _write_config(self, routes: Served, generation: int) -> None:
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(nginx_config(self.root, self.port, routes, generation, self.tls_port, self.certificate))
        os.replace(tmp, self.config_file)

    def _command(self, *args: str) -> list[str]:
        return [self._binary, "-p", f"{self.root}/", "-e", str(self.root / "logs" / "error.log"),
                "-c", str(self.config_file), *args]

    def _workers(self) -> set[int]:
        """The pids of nginx's worker processes (the master's children)."""
        master, workers = self._process.pid, set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    workers.add(int(entry))
        return workers

    def _stopped_accepting(self, pid: int) -> bool:
        """A worker has closed its listening sockets: it said so in the error log, or it is gone."""
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        log_text = self.error_log()
        return state in ("Z", "X") or f"{pid}#{pid}: gracefully shutting down" in log_text \
            or f"{pid}#{pid}: exiting" in log_text

    def _served_generation(self) -> int | None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", "/", headers={"Host": GENERATION_HOST, "Connection": "close"})
            response = connection.getresponse()
            body = response.read().decode()
            return int(body) if response.status == 200 and body.isdigit() else None
        finally:
            connection.close()

    def _check_running(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"nginx exited ({self._process.returncode}): {self.error_log()[-2000:]}")


def start(root: Path, endpoint: str, poll: float = 1.0, entrypoint: str = "web",
          namespace: str = "default", token: str | None = None, exposed_by_default: bool = False,
          provider: str = "nomad", tls_entrypoint: str | None = None, certificate: tuple | None = None) -> Proxy:
    """nginx on 127.0.0.1:<free port> and the provider thread polling ``endpoint`` every ``poll`` s: Nomad's
    agent, or Consul's with ``provider="consulCatalog"``; ``entrypoint`` names the plain entry point;
    ``tls_entrypoint`` a second one, on its own port (``tls_port``), terminating TLS with ``certificate``
    ((cert, key) PEM files)."""
    if bool(tls_entrypoint) != bool(certificate):
        raise ValueError("a TLS entry point needs a certificate, and a certificate a TLS entry point")
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, not {provider!r}")
    binary = need_binary("nginx", "nginx")
    root.mkdir(parents=True, exist_ok=True)
    for folder in ("logs", "tmp"):
        (root / folder).mkdir(exist_ok=True)
    proxy = Proxy(port=free_port(), root=root, endpoint=endpoint, entrypoint=entrypoint,
                  namespace=namespace, poll=poll, token=token, exposed_by_default=exposed_by_default,
                  provider=provider, tls_entrypoint=tls_entrypoint, tls_port=free_port() if tls_entrypoint else 0,
                  certificate=tuple(str(p) for p in certificate) if certificate else None, _binary=binary)
    proxy._write_config(Served(), 0)
    proxy._stderr = open(root / "logs" / "nginx.stderr", "ab")
    proxy._process = subprocess.Popen(proxy._command(), stdin=subprocess.DEVNULL, stdout=proxy._stderr,
                                      stderr=proxy._stderr, start_new_session=True)
    try:
        wait_for(lambda: proxy._check_running() or proxy._served_generation() == 0, 10, "nginx")
    except (TimeoutError, RuntimeError) as exc:
        stop(proxy)
        unavailable(f"nginx did not start: {exc}\n{proxy.error_log()[-2000:]}")
    proxy._thread = threading.Thread(target=proxy._run, name=f"proxy-provider-{proxy.port}", daemon=True)
    proxy._thread.start()
    return proxy


def stop(proxy: Proxy) -> None:
    """Stop the provider and nginx (master and workers); leaves no process."""
    proxy._stop.set()
    if proxy._thread is not None:
        proxy._thread.join(NOMAD_TIMEOUT * 2 + RELOAD_TIMEOUT + 30)
    process = proxy._process
    if process is not None:
        stop_process(process)
        try:  # the workers share the master's new session and process group
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proxy._stderr is not None:
        proxy._stderr.close()
        proxy._stderr = None
