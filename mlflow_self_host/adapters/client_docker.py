"""The Docker engine of the Nomad client, the one Nomad's docker driver pulls and runs the image with.

Which engine: the docker plugin's ``endpoint`` in client.hcl, else the standard socket
(drivers/docker/driver.go: ``endpoint``, else the DOCKER_* environment of the agent, which a packaged
Nomad does not set). Its credentials for a registry: the job's ``auth`` block (ours has none), or the
plugin's ``auth { config = "..." }`` / ``auth { helper = "..." }`` (utils.go firstValidAuth).

``probe`` asks that engine, over SSH and with sudo (the socket is root's), for its version and for the
image's descriptor in the registry (``GET /distribution/{ref}/json``): the engine itself contacts the
registry, with its own insecure-registries, CAs, DNS and network, as a pull does, without downloading
the image. It runs a few lines of the host's python3 against the socket (no curl or docker CLI needed).
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

DEFAULT_ENDPOINT = "unix:///var/run/docker.sock"

_PROBE = r"""
import http.client, json, socket, sys, urllib.parse
endpoint, ref, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
def connect():
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme == "unix":
        conn = http.client.HTTPConnection("localhost", timeout=timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(url.path)
        conn.sock = sock
        return conn
    return http.client.HTTPConnection(url.hostname, url.port or 2375, timeout=timeout)
out = {}
for key, path in (("version", "/version"), ("distribution", "/distribution/" + ref + "/json")):
    try:
        conn = connect()
        conn.request("GET", path)
        resp = conn.getresponse()
        out[key] = {"status": resp.status, "body": resp.read(65536).decode("utf-8", "replace")}
    except Exception as exc:
        out[key] = {"error": "%s: %s" % (type(exc).__name__, exc)}
        if key == "version":
            break
print(json.dumps(out))
"""


@dataclass
class DockerPlugin:
    endpoint: str = ""
    auth_config: str = ""
    auth_helper: str = ""

    @property
    def has_auth(self) -> bool:
        return bool(self.auth_config or self.auth_helper)


@dataclass
class Probe:
    endpoint: str
    version: dict = field(default_factory=dict)  # the engine's /version, {} when it did not answer
    error: str = ""  # why the engine did not answer
    status: int | None = None  # of /distribution/{ref}/json
    answer: dict = field(default_factory=dict)
    message: str = ""  # the engine's error text for the distribution call


def _without_comments(text: str) -> str:
    """HCL without its comments (``#``, ``//``, ``/* */``), strings kept as they are."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < len(text) and text[j] not in '"\n':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif ch == "#" or text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _block(text: str, opening: str) -> str | None:
    """The body of the first block whose header matches ``opening`` (ending with ``{``) in comment-free
    HCL, braces matched outside strings."""
    m = re.search(opening, text)
    if not m:
        return None
    depth, i, start = 1, m.end(), m.end()
    while i < len(text) and depth:
        ch = text[i]
        if ch == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        i += 1
    return text[start:i - 1]


def _attr(text: str, name: str) -> str:
    m = re.search(rf'(?m)^\s*{name}\s*=\s*"([^"]*)"', text or "")
    return m.group(1) if m else ""


def docker_plugin(client_hcl: str) -> DockerPlugin:
    """What client.hcl says about the docker driver (``plugin "docker" { config { ... } }``)."""
    plugin = _block(_without_comments(client_hcl or ""), r'plugin\s+"docker"\s*\{')
    config = _block(plugin, r"\bconfig\s*\{") if plugin is not None else None
    if config is None:
        return DockerPlugin()
    auth = _block(config, r"\bauth\s*\{") or ""
    return DockerPlugin(_attr(config, "endpoint"), _attr(auth, "config"), _attr(auth, "helper"))


def probe(remote, endpoint: str, ref: str, timeout: float) -> Probe:
    """Ask the client's engine (see the module's docstring); ``remote`` is adapters/ssh.py's Remote."""
    from ..core.errors import UserError

    command = "python3 -c {} {} {} {}".format(shlex.quote(_PROBE), shlex.quote(endpoint), shlex.quote(ref),
                                              shlex.quote(str(timeout)))
    result = remote.run(command, sudo=True, check=False)
    if result.exited == 127:
        raise UserError(f"python3 is not installed on {remote.where}: cannot ask its Docker engine",
                        hint="install it there (`sudo apt-get install python3-minimal`)")
    try:
        data = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise UserError(f"asking the Docker engine on {remote.where} failed: {result.reason}") from None
    out = Probe(endpoint)
    version = data.get("version") or {}
    if "error" in version or version.get("status") != 200:
        out.error = version.get("error") or f"HTTP {version.get('status')}: {version.get('body', '')[:200]}"
        return out
    out.version = json.loads(version["body"])
    dist = data.get("distribution") or {}
    if "error" in dist:
        out.message = dist["error"]
        return out
    out.status = dist.get("status")
    try:
        body = json.loads(dist.get("body") or "{}")
    except ValueError:
        body = {"message": dist.get("body", "")}
    if out.status == 200:
        out.answer = body
    else:
        out.message = " ".join(str(body.get("message") or body).split())
    return out
