"""A container registry on a loopback port: Debian's docker-registry (distribution v2), plain HTTP.

Docker engines allow plain HTTP to 127.0.0.0/8 registries without configuration.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import free_port, need_binary, stop_process, wait_for


@dataclass
class Registry:
    address: str  # 127.0.0.1:PORT, the `registry` setting for tests
    proc: subprocess.Popen
    root: Path

    def url(self, path: str = "/v2/") -> str:
        return f"http://{self.address}{path}"

    def tags(self, image: str) -> list[str]:
        import json
        import urllib.request

        try:
            with urllib.request.urlopen(self.url(f"/v2/{image}/tags/list"), timeout=5) as resp:
                return sorted(json.load(resp).get("tags") or [])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise

    def digest(self, image: str, tag: str) -> str | None:
        import urllib.request

        req = urllib.request.Request(self.url(f"/v2/{image}/manifests/{tag}"), method="HEAD", headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                      "application/vnd.oci.image.manifest.v1+json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.headers.get("Docker-Content-Digest")
        except urllib.error.HTTPError:
            return None


def start(root: Path, host: str = "127.0.0.1") -> Registry:
    """``host``: the address to listen on (another than loopback: a registry engines reach only over HTTPS,
    or over plain HTTP when it is in their insecure-registries)."""
    binary = need_binary("docker-registry", "docker-registry")
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n  filesystem:\n    rootdirectory: " + str(root / "data") + "\n"
        "  delete:\n    enabled: true\n"
        "http:\n  addr: " + host + ":" + str(port) + "\n"
    )
    log = open(root / "registry.log", "ab")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    registry = Registry(address=f"{host}:{port}", proc=proc, root=root)

    def answers():
        import urllib.request

        if proc.poll() is not None:
            raise RuntimeError((root / "registry.log").read_text()[-1000:])
        with urllib.request.urlopen(registry.url(), timeout=2) as resp:
            return resp.status == 200

    wait_for(answers, 20, "docker-registry")
    return registry


def stop(registry: Registry) -> None:
    stop_process(registry.proc)
