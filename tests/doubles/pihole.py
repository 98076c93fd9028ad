"""A Pi-hole v6 API double: the auth and config paths ``inv dns`` uses, and a DNS answer from them.

Follows /work/shared/reference/pihole/ (auth.yaml, config.yaml, common.yaml, NOTES.md):

- ``POST /api/auth`` with ``{"password": ...}``: 200 with a session (sid, csrf, validity); a wrong
  password is 401 with a session object (``valid: false``, ``message: "password incorrect"``);
  no payload / no password / a non-string password is 400; a full house of sessions is 429
  ``api_seats_exceeded``. A login with the app password makes an *app* session. With 2FA on
  (``totp=True``) the main password without ``totp`` is 400 "No 2FA token found in JSON payload".
  With no password configured, login needs nothing (``sid: null``, ``validity: -1``).
- ``GET /api/auth``: 200 with the session when it is valid, else 401 with a session object.
- ``DELETE /api/auth``: 204, no body; 401 without a valid session.
- The SID is read from the ``X-FTL-SID`` or ``sid`` header, the ``sid`` query parameter, or the
  ``sid`` cookie (which also needs the ``X-FTL-CSRF`` header).
- Any ``/api/config...`` call without a valid session: 401 ``unauthorized``.
- ``GET /api/config`` and ``GET /api/config/{element}``: ``{"config": {...}, "took": ...}``.
- ``PUT|DELETE /api/config/{element}/{value}`` (value percent-decoded, as civetweb does):
  403 for an app session unless ``webserver.api.app_sudo``; 400 "Invalid path depth"; 404 with
  ``{"took"}`` for an unknown element; 400 for an item set by an ``FTLCONF_`` variable; PUT: 400
  "Item already present" (exact string), 400 "Invalid value" for a malformed CNAME, else 201 with
  ``{"took"}``; DELETE: 404 ``{"took"}`` when absent, else 204.
  ``?restart=false`` keeps the change out of the DNS answers until the next change that restarts
  (FTL applies cnameRecords to its resolver only on a restart).
- A UDP DNS server on its own loopback port answers A queries from the applied ``dns.cnameRecords``
  and ``dns.hosts`` (``"IP name"``), as FTL's embedded dnsmasq does.

Every request is recorded in ``requests`` (method, path, query) for the tests to assert on.
"""
from __future__ import annotations

import copy
import datetime
import json
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

SESSION_VALIDITY = 300
ARRAY_ITEMS = {("dns", "cnameRecords"), ("dns", "hosts"), ("dns", "upstreams")}


@dataclass
class Call:
    method: str
    path: str  # percent-decoded path, without the query
    query: dict
    status: int


@dataclass
class Session:
    sid: str
    csrf: str
    app: bool
    valid_until: float


def _took() -> float:
    return 0.003


def _error(key: str, message: str, hint=None) -> dict:
    return {"error": {"key": key, "message": message, "hint": hint}, "took": _took()}


def _ftlconf_array(value: str) -> list[str]:
    """An array from an FTLCONF_ variable: a JSON array, else one item per line or per ``;``."""
    value = value.strip()
    if value.startswith("["):
        return [str(v) for v in json.loads(value)]
    parts = value.replace(";", "\n").splitlines()
    return [p.strip() for p in parts if p.strip()]


@dataclass
class PiHoleDouble:
    password: str = "s3cret-admin"
    app_password: str = "app-pw-0123456789"
    app_sudo: bool = False
    totp: bool = False
    max_sessions: int = 16
    cname_records: list = field(default_factory=list)
    hosts: list = field(default_factory=lambda: ["127.0.0.1 traefik.lan"])
    upstreams: list = field(default_factory=list)
    env: dict = field(default_factory=dict)  # FTLCONF_* variables of the Pi-hole's container
    tls_dir: Path | None = None  # serve HTTPS with a self-signed CA made here
    dns_frozen: bool = False  # the resolver keeps its old answers (a restart that did not happen)
    fail_puts: int = 0  # this many next PUTs answer 500 (a server error, e.g. a full disk)

    def __post_init__(self):
        self.requests: list[Call] = []
        self.sessions: dict[str, Session] = {}
        self.restarts = 0
        self.lock = threading.Lock()
        self.ca_file: Path | None = None
        self._http: ThreadingHTTPServer | None = None
        self._dns: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        for section, key in ARRAY_ITEMS:  # an FTLCONF_ variable sets the item (and makes it read-only)
            value = self.env.get(f"FTLCONF_{section}_{key}")
            if value is not None:
                self._array(section, key)[:] = _ftlconf_array(value)
        self.applied = self._dns_view()

    # --- state ------------------------------------------------------------------------------
    def config(self) -> dict:
        return {
            "dns": {"cnameRecords": list(self.cname_records), "hosts": list(self.hosts),
                    "upstreams": list(self.upstreams), "port": 53},
            "webserver": {"api": {"app_sudo": self.app_sudo, "max_sessions": self.max_sessions}},
        }

    def _dns_view(self) -> dict:
        return {"cnameRecords": list(self.cname_records), "hosts": list(self.hosts)}

    def restart(self) -> None:
        """What FTL does after a config change: its resolver now answers from the new config."""
        if not self.dns_frozen:
            self.applied = self._dns_view()
        self.restarts += 1

    def _array(self, section: str, key: str) -> list:
        return {"cnameRecords": self.cname_records, "hosts": self.hosts, "upstreams": self.upstreams}[key]

    def active_sessions(self) -> list[Session]:
        now = time.time()
        return [s for s in self.sessions.values() if s.valid_until > now]

    def mutations(self) -> list[Call]:
        return [c for c in self.requests if c.method in ("PUT", "DELETE", "PATCH", "POST")
                and c.path.startswith("/api/config")]

    # --- lifetime ---------------------------------------------------------------------------
    def start(self) -> "PiHoleDouble":
        from tests.services import free_port

        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's names
                double._handle(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

            def log_message(self, *args):
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        scheme = "http"
        if self.tls_dir is not None:
            cert, key, self.ca_file = make_self_signed(Path(self.tls_dir))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self._http.server_address[1]}"
        self._dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._dns.bind(("127.0.0.1", 0))
        self._dns.settimeout(0.2)
        self.dns_port = self._dns.getsockname()[1]
        for target in (self._http.serve_forever, self._serve_dns):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._http:
            self._http.shutdown()
            self._http.server_close()
        for thread in self._threads:
            thread.join(2)
        if self._dns:
            self._dns.close()

    # --- HTTP -------------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(req.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        with self.lock:
            status, payload = self._route(req.command, path, query, req.headers, body)
        self.requests.append(Call(req.command, path, query, status))
        data = b"" if payload is None else json.dumps(payload).encode()
        req.send_response(status)
        if payload is not None:
            req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _route(self, method, path, query, headers, body):
        if path == "/api/auth":
            return self._auth(method, query, headers, body)
        if path == "/api/config" or path.startswith("/api/config/"):
            session = self._session(query, headers, body)
            if session is None and self.password:
                return 401, _error("unauthorized", "Unauthorized")
            return self._config(method, path, query, session)
        return 404, _error("not_found", "Not found", path)

    def _sid_from(self, query, headers, body) -> str | None:
        for name in ("sid", "X-FTL-SID"):
            if headers.get(name):
                return headers[name]
        if query.get("sid"):
            return query["sid"]
        if body:
            try:
                data = json.loads(body)
                if isinstance(data, dict) and data.get("sid"):
                    return data["sid"]
            except ValueError:
                pass
        cookie = headers.get("Cookie") or ""
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == "sid" and value:
                session = self.sessions.get(value)
                if session and headers.get("X-FTL-CSRF") == session.csrf:
                    return value
        return None

    def _session(self, query, headers, body) -> Session | None:
        sid = self._sid_from(query, headers, body)
        session = self.sessions.get(sid) if sid else None
        if session is None or session.valid_until <= time.time():
            return None
        session.valid_until = time.time() + SESSION_VALIDITY  # any authenticated call extends it
        return session

    def _session_object(self, session: Session | None, valid: bool, message, with_csrf=True) -> dict:
        obj = {"valid": valid, "totp": self.totp,
               "sid": session.sid if session else None,
               "validity": SESSION_VALIDITY if session else -1,
               "message": message}
        if with_csrf:
            obj["csrf"] = session.csrf if session else None
        return {"session": obj, "took": _took()}

    def _auth(self, method, query, headers, body):
        if method == "GET":
            if not self.password:
                return 200, self._session_object(None, True, "no auth for local user")
            session = self._session(query, headers, body)
            if session is None:
                return 401, self._session_object(None, False, "no SID provided")
            return 200, self._session_object(session, True, None)
        if method == "DELETE":
            session = self._session(query, headers, body)
            if session is None:
                if not self.password:
                    return 404, {"took": _took()}
                return 401, _error("unauthorized", "Unauthorized")
            del self.sessions[session.sid]
            return 204, None
        if method != "POST":
            return 405, _error("bad_request", "Method not allowed")
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return 400, _error("bad_request", "No valid JSON payload found")
        if "password" not in data:
            return 400, _error("bad_request", "No password found in JSON payload")
        if not isinstance(data["password"], str):
            return 400, _error("bad_request", "Field password has to be of type 'string'")
        if not self.password:
            return 200, self._session_object(None, True, "no auth for local user")
        given = data["password"]
        app = bool(self.app_password) and secrets.compare_digest(given, self.app_password)
        if not app and not secrets.compare_digest(given, self.password):
            # FTL's own answer (src/api/auth.c): a session object, no csrf
            return 401, self._session_object(None, False, "password incorrect", with_csrf=False)
        if self.totp and not app and "totp" not in data:
            return 400, _error("bad_request", "No 2FA token found in JSON payload")
        if len(self.active_sessions()) >= self.max_sessions:
            return 429, _error("api_seats_exceeded", "API seats exceeded",
                               "increase webserver.api.max_sessions")
        session = Session(secrets.token_urlsafe(16), secrets.token_urlsafe(16), app,
                          time.time() + SESSION_VALIDITY)
        self.sessions[session.sid] = session
        return 200, self._session_object(session, True, "app password" if app else "correct password")

    def _config(self, method, path, query, session):
        levels = [p for p in path[len("/api/config"):].split("/") if p]
        if method == "GET":
            config = self.config()
            if not levels:
                return 200, {"config": config, "took": _took()}
            node = config
            for level in levels:
                if not isinstance(node, dict) or level not in node:
                    return 404, {"took": _took()}
                node = node[level]
            wanted = copy.deepcopy(node)
            for level in reversed(levels):
                wanted = {level: wanted}
            return 200, {"config": wanted, "took": _took()}
        if method not in ("PUT", "DELETE", "PATCH"):
            return 405, _error("bad_request", "Method not allowed")
        if session is not None and session.app and not self.app_sudo:
            return 403, _error(
                "forbidden", "Unable to change configuration (read-only)",
                "The current app session is not allowed to modify Pi-hole config settings "
                "(webserver.api.app_sudo is false)")
        if method == "PATCH":
            return 400, _error("bad_request", "PATCH is not part of this double")
        if len(levels) < 3:
            return 400, _error("bad_request", "Invalid path depth",
                               "Use, e.g., DELETE /config/dns/upstreams/127.0.0.1 to remove \"127.0.0.1\" "
                               "from config.dns.upstreams")
        section, key, value = levels[0], levels[1], "/".join(levels[2:])
        if (section, key) not in ARRAY_ITEMS:
            return 404, {"took": _took()}
        if f"FTLCONF_{section}_{key}" in self.env:
            return 400, _error("bad_request",
                               "Config items set via environment variables cannot be changed via the API",
                               f"{section}.{key}")
        items = self._array(section, key)
        restart = query.get("restart", "true").lower() != "false"
        if method == "PUT":
            if self.fail_puts > 0:
                self.fail_puts -= 1
                return 500, _error("internal_error", "Could not write config file", None)
            if value in items:
                return 400, _error("bad_request", "Item already present", "Uniqueness of items is enforced")
            if key == "cnameRecords":
                problem = _cname_problem(value)
                if problem:
                    return 400, _error("bad_request", "Invalid value",
                                       f"{section}.{key}[{len(items)}]: {problem}")
            items.append(value)
            if restart:
                self.restart()
            return 201, {"took": _took()}
        if value not in items:
            return 404, {"took": _took()}
        items.remove(value)
        if restart:
            self.restart()
        return 204, None

    # --- DNS --------------------------------------------------------------------------------
    def _serve_dns(self) -> None:
        import dns.message

        while not self._stopping.is_set():
            try:
                wire, peer = self._dns.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            try:
                query = dns.message.from_wire(wire)
                reply = self._answer(query)
                self._dns.sendto(reply.to_wire(), peer)
            except Exception:  # noqa: BLE001 - a bad packet is dropped, as a server would
                continue

    def _answer(self, query):
        import dns.message
        import dns.name
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype
        import dns.rrset

        reply = dns.message.make_response(query)
        reply.flags |= 0x0080  # RA
        question = query.question[0]
        cnames, addresses = {}, {}
        for entry in self.applied["cnameRecords"]:
            parts = [p.strip() for p in entry.split(",")]
            ttl = int(parts.pop()) if len(parts) > 2 and parts[-1].isdigit() else 0
            *names, target = parts
            for name in names:
                cnames[name.lower()] = (target, ttl)
        for entry in self.applied["hosts"]:
            address, *names = entry.split()
            for name in names:
                addresses.setdefault(name.lower(), []).append(address)
        name = question.name.to_text().rstrip(".").lower()
        seen = set()
        while name in cnames and name not in seen:
            seen.add(name)
            target, ttl = cnames[name]
            reply.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", "CNAME", target + "."))
            name = target.lower()
        if question.rdtype == dns.rdatatype.A and name in addresses:
            reply.answer.append(dns.rrset.from_text(name + ".", 0, "IN", "A", *addresses[name]))
        if not reply.answer and name not in addresses:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply


def _cname_problem(value: str) -> str | None:
    """FTL's validator (src/config/validator.c) for one dns.cnameRecords item."""
    parts = value.split(",")
    if len(parts) < 2:
        return "not a valid CNAME definition (too few elements)"
    for i, part in enumerate(parts):
        if not part.strip():
            return f"not a valid CNAME definition (contains an empty string at position {i})"
    return None


def make_self_signed(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, as Pi-hole makes at install: (cert, key, ca)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pi.hole root CA (test)")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pi.hole")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("pi.hole"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file, ca_file = folder / "tls.crt", folder / "tls.key", folder / "tls_ca.crt"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file, ca_file
