"""A stand-in registry for the push errors a real one cannot easily give on loopback.

``mode="unauthorized"``: every /v2/ request gets 401 with a Basic challenge (a registry that needs a
login). ``mode="plain"``: a plain-HTTP server that knows no image (bound to a non-loopback address,
an engine refuses it unless it is in daemon.json's insecure-registries).
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeRegistry:
    def __init__(self, mode: str, host: str = "127.0.0.1"):
        self.mode = mode
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Authorization header)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                owner.requests.append((self.command, self.path, self.headers.get("Authorization", "")))
                if owner.mode == "unauthorized":
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="fake registry"')
                    self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                    body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
                else:
                    self.send_response(200 if self.path == "/v2/" else 404)
                    body = b"{}"
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.address = f"{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeRegistry":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
