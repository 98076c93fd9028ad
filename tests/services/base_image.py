"""A local stand-in for the official Python base image, made without any container registry.

debootstrap (minbase, python3 + venv) into a folder, then ``docker import``. The machine's extra CA
certificates (/usr/local/share/ca-certificates) are trusted inside it, or pip fails in ``docker build``
behind a TLS-inspecting proxy. Built once: the image is saved to a cache tar keyed by its recipe and
the certificates, and a warm run only loads it (about 2 s).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import TEST_CACHE, need_binary, unavailable

TAG = "mlflow-self-host/python-base:bookworm"
SUITE = "bookworm"
MIRROR = os.environ.get("MSH_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
CERT_ENV = {
    "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
}
CACHE_DIR = TEST_CACHE / "base-image"  # the suite's own (never the user's ~/.cache/mlflow-self-host)


def _extra_certs() -> list[Path]:
    return sorted(p for p in EXTRA_CA_DIR.rglob("*.crt")) if EXTRA_CA_DIR.is_dir() else []


def recipe_key() -> str:
    h = hashlib.sha256(f"{SUITE}|{MIRROR}|{PACKAGES}|{sorted(CERT_ENV.items())}".encode())
    for cert in _extra_certs():
        h.update(cert.read_bytes())
    return h.hexdigest()[:16]


def cache_file() -> Path:
    return CACHE_DIR / f"python-base-{recipe_key()}.tar"


def _has_image(client, tag: str) -> bool:
    import docker

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def ensure(client, tag: str = TAG) -> str:
    """Make sure the engine has the stand-in base; returns its tag."""
    if _has_image(client, tag):
        return tag
    cached = cache_file()
    if cached.exists():
        with open(cached, "rb") as fh:
            client.images.load(fh.read())
        if _has_image(client, tag):
            return tag
    build(client, tag)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial")
    with open(partial, "wb") as fh:
        for chunk in client.images.get(tag).save(named=True):
            fh.write(chunk)
    partial.replace(cached)
    return tag


def build(client, tag: str) -> None:
    debootstrap = need_binary("debootstrap", "debootstrap")
    with tempfile.TemporaryDirectory(prefix="msh-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        result = subprocess.run(
            [debootstrap, "--variant=minbase", f"--include={PACKAGES}", SUITE, str(rootfs), MIRROR],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            unavailable(f"debootstrap failed: {(result.stdout + result.stderr)[-1500:]}")
        certs = _extra_certs()
        if certs:
            target = rootfs / "usr/local/share/ca-certificates"
            target.mkdir(parents=True, exist_ok=True)
            for cert in certs:
                shutil.copy(cert, target / cert.name)
            subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], check=True, capture_output=True)
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        changes = [f"ENV {k}={v}" for k, v in CERT_ENV.items()] + ['CMD ["python3"]']
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        _import(client, tar, tag, changes)
        tar.wait()


def _import(client, tar, tag: str, changes: list[str]) -> None:
    """docker import from a stream (the SDK's import_image wants a file name or bytes)."""
    data = tar.stdout.read()
    repo, _, version = tag.partition(":")
    client.api.import_image_from_data(data, repository=repo, tag=version, changes=changes)
