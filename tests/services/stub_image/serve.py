"""The stub server: behaves as its image says (STUB_BEHAVIOUR), with the MLflow image's contract.

- serve      answer /health, /version (printing STUB_MESSAGE on stdout) and the experiments search;
             write a marker in the store
- exit       print STUB_MESSAGE on stderr and exit STUB_EXIT_CODE at once
- unhealthy  run, but answer /health with 503 forever
With MLFLOW_AUTH=basic (the job's template hands it the admin's password, hex-encoded) its API answers only the
admin's HTTP Basic credentials (401 otherwise), as MLflow's auth app does for an unknown user.
Like the real entrypoint it refuses a store folder it cannot write and an empty MLFLOW_BACKEND_STORE_URI (exit 78),
and like the real server it stops when the database refuses it: here, a store URI with the password "refused".
"""
import base64
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

behaviour = os.environ.get("STUB_BEHAVIOUR", "serve")
label = os.environ.get("STUB_LABEL", "")
port = int(os.environ.get("MLFLOW_PORT", "5000"))
store = "/mnt/backend_store"

if behaviour == "exit":
    sys.stderr.write(os.environ.get("STUB_MESSAGE", "") + "\n")
    sys.exit(int(os.environ.get("STUB_EXIT_CODE", "78")))
uri = os.environ.get("MLFLOW_BACKEND_STORE_URI")
if uri == "":
    sys.stderr.write("mlflow-entrypoint: MLFLOW_BACKEND_STORE_URI is empty\n")
    sys.exit(78)
if uri and ":refused@" in uri:
    sys.stderr.write('sqlalchemy.exc.OperationalError: FATAL:  password authentication failed for user "mlflow"\n')
    sys.exit(1)
if not os.access(store, os.W_OK):
    sys.stderr.write(f"mlflow-entrypoint: {store} is missing or not writable by uid {os.getuid()}; "
                     f"mount a folder owned by uid {os.getuid()} there\n")
    sys.exit(78)
with open(os.path.join(store, "stub-starts.log"), "a") as fh:
    fh.write(f"{label or behaviour} uid={os.getuid()}\n")


def _admin_header():
    if os.environ.get("MLFLOW_AUTH") != "basic":
        return None
    hexed = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD_HEX", "")
    password = bytes.fromhex(hexed).decode() if hexed else os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")
    user = os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


ADMIN = _admin_header()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("INFO:     %s - \"%s\"\n" % (self.address_string(), fmt % args))

    def _send(self, code, body, ctype="application/json"):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self._send(503 if behaviour == "unhealthy" else 200, "OK", "text/plain")
        if self.path == "/version":
            if os.environ.get("STUB_MESSAGE"):
                print(os.environ["STUB_MESSAGE"], flush=True)  # a serving stub says its message on stdout
            return self._send(200, label or "stub", "text/plain")
        if self.path.startswith("/api/") and ADMIN is not None and self.headers.get("Authorization") != ADMIN:
            return self._send(401, "You are not authenticated.", "text/plain")
        if self.path.startswith("/api/2.0/mlflow/experiments/search"):
            return self._send(200, json.dumps({"experiments": [], "stub": label}))
        return self._send(404, "Not Found", "text/plain")


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 has no default handler: stop like uvicorn
print(f"stub {label or behaviour} listening on 0.0.0.0:{port}", flush=True)
sys.stderr.write(f"INFO:     Uvicorn running on http://0.0.0.0:{port}\n")
ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
