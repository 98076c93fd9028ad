"""Stub images for the deploy tests: tests/services/stub_image, built from the stand-in base, pushed as
``{registry}/{repository}:v{version}`` so that the Nomad double's client pulls and runs them for real.

A variant's behaviour is baked into the image (``serve``, ``exit`` with a message, ``unhealthy``), as a
broken release would bake its bug in: the job never tells the stub how to behave.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

CONTEXT = Path(__file__).resolve().parent / "stub_image"
REPOSITORY = "mlflow-stub"


@dataclass
class StubImages:
    client: object  # docker.DockerClient
    registry: str  # 127.0.0.1:PORT
    base_image: str
    repository: str = REPOSITORY
    _built: dict = field(default_factory=dict)
    _pushed: dict = field(default_factory=dict)  # version -> image ID the registry's tag holds
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def image(self, behaviour: str = "serve", message: str = "", exit_code: int = 78, label: str = "") -> str:
        """The image ID of a variant, built once per session."""
        key = (behaviour, message, exit_code, label)
        with self._lock:
            if key not in self._built:
                image, _ = self.client.images.build(
                    path=str(CONTEXT), network_mode="host", rm=True, forcerm=True,
                    buildargs={"BASE_IMAGE": self.base_image, "BEHAVIOUR": behaviour, "MESSAGE": message,
                               "EXIT_CODE": str(exit_code), "LABEL": label})
                self._built[key] = image.id
            return self._built[key]

    def ref(self, version: str) -> str:
        return f"{self.registry}/{self.repository}:v{version}"

    def publish(self, version: str, behaviour: str = "serve", message: str = "", exit_code: int = 78,
                label: str = "") -> str:
        """Tag the variant as v{version} and push it; returns the reference Nomad will pull."""
        image_id = self.image(behaviour, message, exit_code, label or f"v{version}")
        pushed = self._pushed.get(version)
        if pushed and pushed[0] == image_id and self._still_ours(version, *pushed):
            return self.ref(version)
        repo = f"{self.registry}/{self.repository}"
        self.client.api.tag(image_id, repo, f"v{version}", force=True)
        digest = None
        for event in self.client.api.push(repo, tag=f"v{version}", stream=True, decode=True):
            if event.get("error"):
                raise RuntimeError(f"push of {repo}:v{version} failed: {event['error']}")
            digest = (event.get("aux") or {}).get("Digest") or digest
        self._pushed[version] = (image_id, digest)
        return self.ref(version)

    def _still_ours(self, version: str, image_id: str, digest: str | None) -> bool:
        """The tag still names our image here and in the registry: a test that builds and pushes with the
        cluster's settings (`inv release`, `inv build push`) tags its own image ``{repository}:v{version}``."""
        import urllib.error

        try:
            if self.client.images.get(self.ref(version)).id != image_id:
                return False
        except Exception:  # noqa: BLE001 - the local tag is gone
            return False
        try:
            return digest is not None and self._registry_digest(version) == digest
        except (urllib.error.URLError, OSError):
            return False

    def _registry_digest(self, version: str) -> str:
        """The manifest digest the registry's tag v{version} names (urllib.error.HTTPError 404: no such tag)."""
        import urllib.request

        head = urllib.request.Request(f"http://{self.registry}/v2/{self.repository}/manifests/v{version}",
                                      method="HEAD", headers={"Accept": "application/vnd.docker.distribution"
                                                                        ".manifest.v2+json"})
        with urllib.request.urlopen(head, timeout=5) as resp:
            return resp.headers["Docker-Content-Digest"]

    def unpublish(self, version: str) -> None:
        """Delete v{version} from the registry (the tag is gone; Nomad's pull then fails)."""
        import urllib.error
        import urllib.request

        self._pushed.pop(version, None)
        try:
            digest = self._registry_digest(version)
        except urllib.error.HTTPError:
            return
        urllib.request.urlopen(urllib.request.Request(
            f"http://{self.registry}/v2/{self.repository}/manifests/{digest}", method="DELETE"), timeout=5)

    def remove(self) -> None:
        """Untag what the session made (layers stay as build cache)."""
        repo = f"{self.registry}/{self.repository}"
        for image in self.client.images.list(name=repo):
            for tag in image.tags:
                try:
                    self.client.images.remove(tag, noprune=True)
                except Exception:  # noqa: BLE001 - in use by a container being removed
                    pass
