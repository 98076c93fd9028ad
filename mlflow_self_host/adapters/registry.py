"""The registry's HTTP API (/v2): does a tag exist, and which manifest digest it points at.

HTTPS first, then plain HTTP (what an engine allows for an "insecure" registry, and for loopback).
Credentials: ``registry_username`` with MSH_REGISTRY_PASSWORD, basic or token auth.
"""
from __future__ import annotations

from ..core.errors import ExitCode, UserError, connection_reason

TIMEOUT = 10
UNKNOWN_HOST = "unknown host name"  # what errors.connection_reason says of a name that does not resolve
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


def tag_exists(settings, tag: str) -> bool:
    """Whether ``{registry}/{image}:{tag}`` is in the registry."""
    return digest(settings, tag) is not None


def digest(settings, tag: str) -> str | None:
    """The manifest digest (``sha256:...``) of ``{image}:{tag}``, or None if the registry lacks it."""
    response = _request(settings, "HEAD", f"/v2/{settings.image}/manifests/{tag}", {"Accept": MANIFEST_TYPES})
    if response.status_code == 404:
        return None
    _raise_for(settings, response)
    return response.headers.get("Docker-Content-Digest")


INDEX_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json")


def platforms(settings, tag: str) -> list | None:
    """The platforms (steps/image/platform.py) of ``{image}:{tag}`` in the registry, None if it lacks the tag.

    A manifest list / OCI index names them (buildx's attestation entries, ``unknown/unknown``, are not
    images); a single manifest's config blob has ``os``, ``architecture`` and ``variant``.
    """
    from ..core.platforms import Platform

    response = _request(settings, "GET", f"/v2/{settings.image}/manifests/{tag}", {"Accept": MANIFEST_TYPES})
    if response.status_code == 404:
        return None
    _raise_for(settings, response)
    manifest = response.json()
    kind = manifest.get("mediaType") or response.headers.get("Content-Type", "").split(";")[0]
    if kind in INDEX_TYPES or "manifests" in manifest:
        found = []
        for entry in manifest.get("manifests") or []:
            p = entry.get("platform") or {}
            if p.get("architecture") in (None, "", "unknown"):
                continue
            platform = Platform.of_image(p)
            if platform not in found:
                found.append(platform)
        return found
    digest = (manifest.get("config") or {}).get("digest")
    if not digest:
        raise UserError(f"registry {settings.registry}: the manifest of {settings.image}:{tag} has no config "
                        "(a schema 1 image?)", hint="push it again with a current Docker engine",
                        code=ExitCode.REGISTRY_UNREACHABLE)
    blob = _request(settings, "GET", f"/v2/{settings.image}/blobs/{digest}", {})
    _raise_for(settings, blob)
    return [Platform.of_image(blob.json())]


def labels(settings, tag: str) -> dict | None:
    """The labels of ``{image}:{tag}`` in the registry (its image config's ``config.Labels``; a manifest list's
    first image's: the platforms of one build carry the same labels), None if it lacks the tag."""
    response = _request(settings, "GET", f"/v2/{settings.image}/manifests/{tag}", {"Accept": MANIFEST_TYPES})
    if response.status_code == 404:
        return None
    _raise_for(settings, response)
    manifest = response.json()
    if "manifests" in manifest:
        entry = next((m for m in manifest["manifests"]
                      if ((m.get("platform") or {}).get("architecture") or "unknown") != "unknown"), None)
        if entry is None:
            return {}
        response = _request(settings, "GET", f"/v2/{settings.image}/manifests/{entry['digest']}",
                            {"Accept": MANIFEST_TYPES})
        _raise_for(settings, response)
        manifest = response.json()
    digest = (manifest.get("config") or {}).get("digest")
    if not digest:
        return {}
    blob = _request(settings, "GET", f"/v2/{settings.image}/blobs/{digest}", {})
    _raise_for(settings, blob)
    return (blob.json().get("config") or {}).get("Labels") or {}


def ping(settings) -> str:
    """``GET /v2/``: what answered (``http://host:port/v2/: HTTP 200``), or UserError (7 when nothing
    answers, or what answers is not a registry; 9 when credentials are set and refused)."""
    response = _request(settings, "GET", "/v2/", {})
    if response.status_code == 401 and settings.registry_username and settings.registry_password:
        raise unauthorized(settings, "HTTP 401")
    if response.status_code not in (200, 401):
        raise UserError(f"registry {settings.registry} answered HTTP {response.status_code} for /v2/: not a "
                        "Docker registry", hint="set registry to host:port of your registry",
                        code=ExitCode.REGISTRY_UNREACHABLE)
    return f"{response.url}: HTTP {response.status_code}"


def _raise_for(settings, response) -> None:
    if response.status_code in (401, 403):
        raise unauthorized(settings, f"HTTP {response.status_code}")
    if response.status_code >= 400:
        raise UserError(
            f"registry {settings.registry} answered HTTP {response.status_code} for {response.request.path_url}",
            code=ExitCode.REGISTRY_UNREACHABLE,
        )


def unauthorized(settings, detail: str) -> UserError:
    if settings.registry_username and settings.registry_password:
        hint = (f"the registry refused user {settings.registry_username!r}: check MSH_REGISTRY_PASSWORD "
                "and the registry_username setting")
    else:
        hint = ("set the registry_username setting (MSH_REGISTRY_USERNAME) and export MSH_REGISTRY_PASSWORD, "
                f"or run `docker login {settings.registry}`")
    return UserError(f"registry {settings.registry}: unauthorized ({detail})", hint=hint, code=ExitCode.UNAUTHORIZED)


def unreachable(settings, reason: str) -> UserError:
    return UserError(
        f"registry {settings.registry} is unreachable: {reason}",
        hint="check the registry setting (MSH_REGISTRY) and that the registry is running and reachable from here",
        code=ExitCode.REGISTRY_UNREACHABLE,
    )


def _request(settings, method: str, path: str, headers: dict):
    import requests

    session = requests.Session()
    last = ""
    for scheme in ("https", "http"):
        url = f"{scheme}://{settings.registry}{path}"
        try:
            response = session.request(method, url, headers=headers, timeout=TIMEOUT)
        except requests.exceptions.SSLError:
            last = "TLS handshake failed"
            continue
        except requests.exceptions.ConnectionError as exc:
            last = connection_reason(exc)
            if last == UNKNOWN_HOST:
                break  # it will not resolve over plain HTTP either
            continue
        except requests.exceptions.Timeout:
            last = f"no answer within {TIMEOUT}s"
            continue
        if response.status_code == 401:
            response = _authenticate(settings, session, method, url, headers, response)
        return response
    raise unreachable(settings, last or "no answer")


def _authenticate(settings, session, method, url, headers, challenge):
    """Retry a 401 with the configured credentials (basic, or a bearer token from the realm)."""
    user, password = settings.registry_username, settings.registry_password
    if not (user and password):
        return challenge
    scheme, _, params = challenge.headers.get("WWW-Authenticate", "").partition(" ")
    if scheme.lower() == "bearer":
        fields = dict(_parse_params(params))
        realm = fields.pop("realm", "")
        token_response = session.get(realm, params=fields, auth=(user, password), timeout=TIMEOUT)
        if token_response.status_code != 200:
            raise unauthorized(settings, f"token request: HTTP {token_response.status_code}")
        body = token_response.json()
        token = body.get("token") or body.get("access_token")
        return session.request(method, url, headers={**headers, "Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    return session.request(method, url, headers=headers, auth=(user, password), timeout=TIMEOUT)


def _parse_params(text: str):
    import re

    for key, value in re.findall(r'(\w+)="([^"]*)"', text):
        yield key, value
