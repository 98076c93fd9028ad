"""A minimal Nomad HTTP API stand-in for restore and doctor, until tests/doubles/nomad.py lands.

Only what backup/doctor call: status/leader, agent/self, acl/token/self, nodes, job read, stop
(DELETE /v1/job/:id, no purge), register (POST /v1/job/:id) and job allocations. A started job gets
one allocation that is running and healthy. Error bodies are text/plain as Nomad's (NOTES.md).
"""
from __future__ import annotations

import json
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.services import free_port


class NomadStandin:
    def __init__(self, job_name="mlflow", datacenter="DC0", acl_token=None):
        self.datacenter = datacenter
        self.acl_token = acl_token  # None: ACLs disabled
        self.job = {"ID": job_name, "Name": job_name, "Datacenters": [datacenter], "Stop": False, "Version": 0,
                    "TaskGroups": [{"Name": "mlflow", "Tasks": [{"Name": "mlflow",
                                                                 "Config": {"image": "reg/mlflow:v0.99"}}]}]}
        self.allocs = [self._alloc(1)]
        self.calls: list[tuple[str, str]] = []
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _alloc(self, index):
        return {"ID": f"alloc-{index}", "JobID": self.job["ID"], "CreateIndex": index, "ClientStatus": "running",
                "DeploymentID": f"dep-{index}", "DeploymentStatus": {"Healthy": True}}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body):
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method):
                path = urlsplit(self.path).path
                double.calls.append((method, path))
                token = self.headers.get("X-Nomad-Token")
                if path == "/v1/status/leader":
                    return self._send(200, '"127.0.0.1:4647"')  # a JSON string
                if double.acl_token is not None and token != double.acl_token:
                    return self._send(403, "ACL token not found" if token else "Permission denied")
                if path == "/v1/agent/self":
                    return self._send(200, {"config": {"Version": {"Version": "1.9.7"}}})
                if path == "/v1/acl/token/self":
                    if double.acl_token is None:
                        return self._send(400, "ACL support disabled")
                    return self._send(200, {"Name": "ops", "Type": "client", "Policies": ["mlflow"]})
                if path == "/v1/nodes":
                    return self._send(200, [{"ID": "n1", "Datacenter": double.datacenter, "Status": "ready"}])
                job_path = f"/v1/job/{double.job['ID']}"
                if path == job_path and method == "GET":
                    return self._send(200, double.job)
                if path == job_path and method == "DELETE":
                    double.job["Stop"] = True
                    for alloc in double.allocs:
                        alloc["ClientStatus"] = "complete"
                    return self._send(200, {"EvalID": "e1"})
                if path == job_path and method == "POST":
                    length = int(self.headers.get("Content-Length") or 0)
                    job = json.loads(self.rfile.read(length))["Job"]
                    job["Version"] = double.job["Version"] + 1
                    double.job = job
                    if not job.get("Stop"):
                        double.allocs.append(double._alloc(len(double.allocs) + 1))
                    return self._send(200, {"EvalID": "e2", "JobModifyIndex": job["Version"]})
                if path == job_path + "/allocations":
                    return self._send(200, double.allocs)
                if path.startswith("/v1/job/"):
                    return self._send(404, "job not found")
                return self._send(404, "Invalid URL")

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

        return Handler


def ensure_nomad_api(monkeypatch):
    """Use mlflow_self_host.job.nomad_api when it exists; until then a python-nomad client from settings."""
    try:
        from mlflow_self_host.job import nomad_api  # noqa: F401
        return
    except ImportError:
        pass
    import nomad

    module = types.ModuleType("mlflow_self_host.job.nomad_api")
    module.client = lambda settings: nomad.Nomad(address=settings.nomad_addr, token=settings.nomad_token or None,
                                                 namespace=settings.nomad_namespace, region=settings.nomad_region,
                                                 timeout=5)
    monkeypatch.setitem(sys.modules, "mlflow_self_host.job.nomad_api", module)
    import mlflow_self_host.job as job_package

    monkeypatch.setattr(job_package, "nomad_api", module, raising=False)
