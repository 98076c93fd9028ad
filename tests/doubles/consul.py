"""A Consul double: the catalogue the Nomad double registers Consul services in, and that Traefik's
``consulCatalog`` provider (tests/services/proxy.py's stand-in) reads, on a free loopback port.

What Nomad and Traefik use of Consul, and nothing else (Consul's HTTP API docs: catalog.mdx, health.mdx):
- ``GET /v1/catalog/services``: ``{name: [tags...]}``, every service with the union of its instances'
  tags (the servers' own ``consul`` service included when the agent is a server);
- ``GET /v1/catalog/service/<name>``: the instances as ``CatalogService`` entries (Node, Address,
  ServiceID, ServiceTags, ServiceAddress, ServicePort...);
- ``GET /v1/health/service/<name>``: ``[{"Node", "Service", "Checks"}]``, the node's ``serfHealth``
  check with the service's own; ``?passing`` keeps the entries whose checks all pass;
  both service reads take ``?tag=`` (the entries with that tag) and ``?dc=`` (another datacenter:
  500 "No path to datacenter");
- ``GET /v1/agent/self``: what Nomad's consul fingerprinter asks (client/fingerprint/consul.go) — and
  ``fingerprint(node)`` gives the node attributes it derives from the answer (``consul.version``,
  ``consul.datacenter``, ``consul.server``, ``unique.consul.name``...), which the Nomad double's node
  reports;
- answers carry ``X-Consul-Index``, ``X-Consul-KnownLeader`` and ``X-Consul-LastContact``; no
  blocking queries, no ACLs.

Registrations come from the Nomad double's client, at the points of an allocation's life where Nomad
registers and deregisters them (client.py: before the task starts, before it is killed, when it ends),
with the IDs Nomad gives them (``_nomad-task-<alloc>-group-<group>-<service>-<port label>``, checks
``_nomad-check-...``) and ``external-source: nomad`` in the service's meta. The HTTP checks are the
Consul agent's (agent/checks/check.go CheckHTTP): a new check is ``critical`` until it first passes,
2xx is ``passing``, 429 ``warning``, anything else or no answer ``critical``; the double reads their
state from the Nomad double's client, which runs them (``checks`` given at registration).
"""
from __future__ import annotations

import copy
import hashlib
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

SERF_HEALTH = {"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing", "Notes": "",
               "Output": "Agent alive and reachable", "ServiceID": "", "ServiceName": "", "ServiceTags": [],
               "Type": "", "Definition": {}}


def check_id(service_id: str, check_name: str) -> str:
    """Nomad's check ID in Consul (command/agent/consul MakeCheckID: a hash of the service ID and check)."""
    return "_nomad-check-" + hashlib.sha1(f"{service_id}/{check_name}".encode()).hexdigest()


class ConsulDouble:
    def __init__(self, datacenter: str = "dc1", version: str = "1.17.1", revision: str = "4e3f428b",
                 server: bool = True):
        """``server``: the agents are servers (a one-box homelab), so the catalogue has the ``consul`` service."""
        self.datacenter, self.version, self.revision, self.server = datacenter, version, revision, server
        self.lock = threading.RLock()
        self.index = 10
        self.nodes: dict[str, dict] = {}  # node name -> catalogue node
        self.services: dict[str, dict] = {}  # service ID -> {"node": name, "service": {...}, "checks": callable}
        self.requests: list[tuple[str, dict]] = []  # (path, query)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="consul-double-http").start()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- what the Nomad double's nodes do --------------------------------------------------------------
    def join(self, node: str, address: str) -> None:
        """A node's agent joins the cluster: the node is in the catalogue, its serfHealth passing."""
        with self.lock:
            if node not in self.nodes:
                self.index += 1
                self.nodes[node] = {"ID": str(uuid.uuid4()), "Node": node, "Address": address,
                                    "Datacenter": self.datacenter,
                                    "TaggedAddresses": {"lan": address, "lan_ipv4": address, "wan": address,
                                                        "wan_ipv4": address},
                                    "Meta": {"consul-network-segment": ""}, "CreateIndex": self.index,
                                    "ModifyIndex": self.index}

    def fingerprint(self, node: str) -> dict:
        """The node attributes Nomad's consul fingerprinter sets from ``/v1/agent/self`` (default cluster)."""
        address = self.nodes.get(node, {}).get("Address", "127.0.0.1")
        return {"consul.server": "true" if self.server else "false", "consul.version": self.version,
                "consul.sku": "oss", "consul.revision": self.revision, "unique.consul.name": node,
                "consul.datacenter": self.datacenter, "consul.connect": "false", "consul.grpc": "-1",
                "consul.ft.namespaces": "false", "consul.dns.port": "8600",
                "unique.consul.dns.addr": address}

    def register(self, node: str, service: dict, checks=None) -> None:
        """Nomad's service registration through the node's agent. ``service``: ID, Service, Tags, Address,
        Port (an AgentService); ``checks``: a callable giving [(name, status, output)] now."""
        with self.lock:
            self.index += 1
            entry = {"Meta": {"external-source": "nomad"}, "Weights": {"Passing": 1, "Warning": 1},
                     "EnableTagOverride": False, "TaggedAddresses": {}, "Proxy": {"Expose": {}}, "Connect": {},
                     "PeerName": "", "Datacenter": self.datacenter, **copy.deepcopy(service),
                     "CreateIndex": self.index, "ModifyIndex": self.index}
            self.services[service["ID"]] = {"node": node, "service": entry, "checks": checks or (lambda: [])}

    def deregister(self, service_id: str) -> None:
        with self.lock:
            if self.services.pop(service_id, None) is not None:
                self.index += 1

    def service_ids(self, prefix: str = "") -> list[str]:
        with self.lock:
            return [sid for sid in self.services if sid.startswith(prefix)]

    # -- what the catalogue answers ------------------------------------------------------------------
    def catalog_services(self) -> dict[str, list[str]]:
        with self.lock:
            out: dict[str, list[str]] = {"consul": []} if self.server and self.nodes else {}
            for reg in self.services.values():
                tags = out.setdefault(reg["service"]["Service"], [])
                tags.extend(t for t in reg["service"]["Tags"] or [] if t not in tags)
            return out

    def _instances(self, name: str, tag: str | None) -> list[dict]:
        return [reg for reg in sorted(self.services.values(), key=lambda r: r["service"]["ID"])
                if reg["service"]["Service"] == name and (tag is None or tag in (reg["service"]["Tags"] or []))]

    def catalog_service(self, name: str, tag: str | None = None) -> list[dict]:
        with self.lock:
            out = []
            for reg in self._instances(name, tag):
                node, service = self.nodes[reg["node"]], reg["service"]
                out.append({"ID": node["ID"], "Node": node["Node"], "Address": node["Address"],
                            "Datacenter": node["Datacenter"], "TaggedAddresses": node["TaggedAddresses"],
                            "NodeMeta": node["Meta"], "ServiceKind": "", "ServiceID": service["ID"],
                            "ServiceName": service["Service"], "ServiceTags": service["Tags"],
                            "ServiceAddress": service["Address"], "ServiceTaggedAddresses": {},
                            "ServiceWeights": service["Weights"], "ServiceMeta": service["Meta"],
                            "ServicePort": service["Port"], "ServiceEnableTagOverride": False,
                            "ServiceProxy": {"Expose": {}}, "ServiceConnect": {}, "CreateIndex": service["CreateIndex"],
                            "ModifyIndex": service["ModifyIndex"]})
            return copy.deepcopy(out)

    def health_service(self, name: str, tag: str | None = None, passing: bool = False) -> list[dict]:
        with self.lock:
            regs = self._instances(name, tag)
        out = []
        for reg in regs:  # the checks are read outside the lock: the Nomad double's client holds its own
            node, service = self.nodes[reg["node"]], reg["service"]
            checks = [dict(SERF_HEALTH, Node=node["Node"], CreateIndex=node["CreateIndex"],
                           ModifyIndex=node["ModifyIndex"])]
            for check_name, status, output in reg["checks"]():
                checks.append({"Node": node["Node"], "CheckID": check_id(service["ID"], check_name),
                               "Name": check_name, "Status": status, "Notes": "", "Output": output,
                               "ServiceID": service["ID"], "ServiceName": service["Service"],
                               "ServiceTags": service["Tags"], "Type": "http", "Definition": {},
                               "CreateIndex": service["CreateIndex"], "ModifyIndex": service["ModifyIndex"]})
            if passing and any(c["Status"] != "passing" for c in checks):
                continue
            out.append(copy.deepcopy({"Node": node, "Service": service, "Checks": checks}))
        return out

    def agent_self(self, node: str | None = None) -> dict:
        name = node or next(iter(self.nodes), "consul")
        return {"Config": {"Datacenter": self.datacenter, "NodeName": name, "Revision": self.revision,
                           "Server": self.server, "Version": self.version},
                "Member": {"Name": name, "Addr": self.nodes.get(name, {}).get("Address", "127.0.0.1"),
                           "Tags": {"dc": self.datacenter, "role": "consul" if self.server else "node"}}}

    # -- HTTP ------------------------------------------------------------------------------------------
    def route(self, path: str, query: dict) -> tuple[int, object]:
        if query.get("dc") and query["dc"] != self.datacenter:
            return 500, "No path to datacenter"
        tag = query.get("tag")
        if path == "/v1/catalog/services":
            return 200, self.catalog_services()
        if path.startswith("/v1/catalog/service/"):
            return 200, self.catalog_service(path[len("/v1/catalog/service/"):], tag)
        if path.startswith("/v1/health/service/"):
            return 200, self.health_service(path[len("/v1/health/service/"):], tag, "passing" in query)
        if path == "/v1/agent/self":
            return 200, self.agent_self()
        return 404, f"Invalid URL path: not a recognized HTTP API endpoint: {path}"

    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                path = unquote(url.path)
                with double.lock:
                    double.requests.append((path, query))
                code, body = double.route(path, query)
                data = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Consul-Index", str(double.index))
                self.send_header("X-Consul-KnownLeader", "true")
                self.send_header("X-Consul-LastContact", "0")
                self.end_headers()
                self.wfile.write(data)

        return Handler
