"""A Pi-hole v6 double: the auth, config and action paths ``inv dns`` uses, and a DNS answer from them.

Follows /work/shared/reference/pihole/ (auth.yaml, config.yaml, action.yaml, NOTES.md) and FTL's
source at v6.4.1 (8d1add8d), file by file:

- ``POST /api/auth`` with ``{"password": ...}`` (src/api/auth.c): 200 with a session (sid, csrf,
  validity) and a ``sid`` cookie; a wrong password is 401 with a session object (``valid: false``,
  ``message: "password incorrect"``, no csrf); no payload / no password / a non-string password is
  400; a full house of sessions is 429 ``api_seats_exceeded``. The app password makes an *app*
  session, the CLI password (``/etc/pihole/cli_pw``) a *CLI* session. With 2FA on (``totp=True``)
  the main password without ``totp`` is 400 "No 2FA token found in JSON payload". With no password
  configured, login needs nothing (``sid: null``, ``validity: -1``).
- ``GET /api/auth``: 200 with the session when it is valid, else 401 with a session object.
  ``DELETE /api/auth``: 204, no body; 401 with a session object without a valid session.
- The SID is read as FTL does, in this order: the JSON payload's ``sid``, the ``sid`` or
  ``X-FTL-SID`` header, the ``sid`` cookie (which then needs the CSRF token in ``X-CSRF-TOKEN``),
  the ``sid`` query parameter. Any authenticated call extends the session by
  ``session_timeout`` (``webserver.session.timeout``, 1800 s).
- ``/api/config...`` (src/api/config.c) and ``/api/action/restartdns`` (src/api/action.c) without a
  valid session: 401 ``unauthorized``.
- ``GET /api/config`` and ``GET /api/config/{element}``: ``{"config": {...}, "took": ...}``.
- ``PUT|DELETE /api/config/{element}/{value}`` (value percent-decoded, as civetweb does), checked in
  FTL's order: 403 for an app session unless ``app_sudo``, then 403 for a CLI session (each with its
  own hint); 400 "Invalid path depth"; 404 ``{"took"}`` for an unknown element; 400 for an item set
  by an ``FTLCONF_`` variable; PUT: 400 "Item already present" (exact string), 400 "Invalid value"
  for a malformed CNAME; DELETE: 404 ``{"took"}`` when absent. Then, for an item that needs a
  restart (``dns.cnameRecords``, ``dns.upstreams``), the dnsmasq configuration FTL would write
  (src/config/dnsmasq_config.c: upstreams, CNAMEs, ``conf-dir`` of ``dnsmasq_d`` when
  ``etc_dnsmasq_d``, ``misc.dnsmasq_lines``) is checked with the real ``dnsmasq --test``; a failure
  is 400 "Invalid configuration" with dnsmasq's message as the hint (the offending line of the
  generated file appended, as FTL does) and nothing is saved. Else PUT 201 ``{"took"}``, DELETE 204.
- A change that needs a restart, unless ``?restart=false``, restarts FTL after the answer is sent
  (src/api/api.c ``restart_ftl``; src/main.c): the resolver stops at once, the API answers for
  ``shutdown_grace`` more seconds (FTL's 250 ms), then both ports close for ``restart_seconds``
  and come back with the saved configuration applied and the sessions kept (``session.restore``).
  ``dns.hosts`` changes apply without a restart (FTL rewrites its hosts file, dnsmasq rereads it).
- ``POST /api/action/restartdns``: 403 unless ``allow_destructive``, else 200
  ``{"status": "success"}`` and the same restart.
- A UDP DNS server on its own loopback port answers A queries from the applied ``dns.cnameRecords``
  and ``dns.hosts`` (``"IP name"``), and ``pi.hole`` with its own address, as FTL does.
- HTTPS (``tls_dir``): a CA and a certificate as FTL makes them (src/webserver/x509.c): the names
  ``pi.hole`` and ``webserver.domain``, no IP address.

Every request answered is recorded in ``requests`` (method, path, query, status, time) for the tests;
``restarts`` lists each restart as (went down, came back) on ``time.monotonic()``.
"""
from __future__ import annotations

import copy
import datetime
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

ARRAY_ITEMS = {("dns", "cnameRecords"), ("dns", "hosts"), ("dns", "upstreams")}
RESTART_ITEMS = {("dns", "cnameRecords"), ("dns", "upstreams")}  # FLAG_RESTART_FTL in src/config/config.c
ADDRESS = "127.0.0.1"


@dataclass
class Call:
    method: str
    path: str  # percent-decoded path, without the query
    query: dict
    status: int
    time: float = 0.0  # time.monotonic() when it was answered


@dataclass
class Session:
    sid: str
    csrf: str
    app: bool
    cli: bool
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
    cli_password: str = "cli-pw-from-etc-pihole-cli_pw"
    app_sudo: bool = False  # webserver.api.app_sudo
    allow_destructive: bool = True  # webserver.api.allow_destructive (restartdns)
    totp: bool = False
    max_sessions: int = 16  # webserver.api.max_sessions
    session_timeout: float = 1800  # webserver.session.timeout, seconds
    cname_records: list = field(default_factory=list)
    hosts: list = field(default_factory=lambda: ["127.0.0.1 traefik.lan"])
    upstreams: list = field(default_factory=list)
    dnsmasq_lines: list = field(default_factory=list)  # misc.dnsmasq_lines
    etc_dnsmasq_d: bool = False  # misc.etc_dnsmasq_d
    dnsmasq_d: Path | None = None  # the folder FTL then reads (/etc/dnsmasq.d)
    env: dict = field(default_factory=dict)  # FTLCONF_* variables of the Pi-hole's container
    tls_dir: Path | None = None  # serve HTTPS with a CA and certificate made here
    webserver_domain: str = "pi.hole"  # webserver.domain: the certificate's second name
    restart_seconds: float = 5.0  # from SIGTERM's cleanup to the ports bound again (longer on a Pi)
    shutdown_grace: float = 0.25  # src/main.c sleepms(250): the API still answers, DNS does not
    dns_frozen: bool = False  # the resolver keeps its old answers (its config is never reread)
    fail_puts: int = 0  # this many next PUTs answer 500 (a server error, e.g. a full disk)
    on_request: Callable | None = None  # another API client acting: called (double, method, path) first

    def __post_init__(self):
        self.requests: list[Call] = []
        self.sessions: dict[str, Session] = {}
        self.restarts: list[tuple[float, float | None]] = []
        self.lock = threading.RLock()
        self.ca_file: Path | None = None
        self.dnsmasq_tests: list[str] = []  # dnsmasq's output of each check
        self._http: ThreadingHTTPServer | None = None
        self._dns: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._api_up = False
        self._dns_up = False
        self._restart_pending = False
        self._restarting = threading.Event()
        self._tls: ssl.SSLContext | None = None
        self._connections: set = set()
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
            "misc": {"etc_dnsmasq_d": self.etc_dnsmasq_d, "dnsmasq_lines": list(self.dnsmasq_lines)},
            "webserver": {"domain": self.webserver_domain,
                          "api": {"app_sudo": self.app_sudo, "max_sessions": self.max_sessions,
                                  "allow_destructive": self.allow_destructive}},
        }

    def _dns_view(self) -> dict:
        return {"cnameRecords": list(self.cname_records), "hosts": list(self.hosts)}

    def _array(self, section: str, key: str) -> list:
        return {"cnameRecords": self.cname_records, "hosts": self.hosts, "upstreams": self.upstreams}[key]

    def active_sessions(self) -> list[Session]:
        now = time.time()
        return [s for s in self.sessions.values() if s.valid_until > now]

    def mutations(self) -> list[Call]:
        return [c for c in self.requests if c.method in ("PUT", "DELETE", "PATCH", "POST")
                and (c.path.startswith("/api/config") or c.path.startswith("/api/action"))]

    @property
    def restart_count(self) -> int:
        return len(self.restarts)

    def wait_until_up(self, timeout: float = 30) -> None:
        """Block while a restart is under way (tests that look at the DNS answers afterwards)."""
        deadline = time.monotonic() + timeout
        while self._restarting.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)

    # --- lifetime ---------------------------------------------------------------------------
    def start(self) -> "PiHoleDouble":
        from tests.services import need_binary

        self._dnsmasq = need_binary("dnsmasq", "dnsmasq-base")
        self._work = Path(tempfile.mkdtemp(prefix="pihole-double-"))
        (self._work / "hosts").mkdir()
        if self.tls_dir is not None:
            cert, key, self.ca_file = make_certificate(Path(self.tls_dir), self.webserver_domain)
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(cert, key)
        self._bind_http(0)  # the kernel's free port, bound at once; a restart binds self.port again
        scheme = "https" if self._tls else "http"
        self.port = self._http.server_address[1]
        self.url = f"{scheme}://{ADDRESS}:{self.port}"
        self._bind_dns(0)
        self.dns_port = self._dns.getsockname()[1]
        self._api_up = self._dns_up = True
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self.lock:
            self._api_up = self._dns_up = False
            self._close_ports()
        for thread in self._threads:
            thread.join(2)
        shutil.rmtree(getattr(self, "_work", ""), ignore_errors=True)

    def _bind_http(self, port: int) -> None:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's names
                double._handle(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                double._connections.add(self.connection)

            def finish(self):
                double._connections.discard(self.connection)
                super().finish()

        server = _bind_retrying(lambda: ThreadingHTTPServer((ADDRESS, port), Handler))
        server.daemon_threads = True
        if self._tls is not None:
            server.socket = self._tls.wrap_socket(server.socket, server_side=True)
        self._http = server
        self._spawn(server.serve_forever)

    def _bind_dns(self, port: int) -> None:
        def bind():
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((ADDRESS, port))
            except OSError:
                sock.close()
                raise
            return sock

        self._dns = _bind_retrying(bind)
        self._dns.settimeout(0.2)
        self._spawn(self._serve_dns, self._dns)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _close_ports(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            http.shutdown()
            http.server_close()
        for connection in list(self._connections):  # the process exits: its connections close
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        dns_socket, self._dns = self._dns, None
        if dns_socket is not None:
            dns_socket.close()

    # --- restart (src/signals.c restart_ftl, src/main.c) ------------------------------------
    def _request_restart(self) -> None:
        self._restart_pending = True

    def _restart(self) -> None:
        went_down = time.monotonic()
        self.restarts.append((went_down, None))
        self._dns_up = False  # dnsmasq's loop ends at SIGTERM
        time.sleep(self.shutdown_grace)  # FTL's grace: the API still answers
        with self.lock:
            self._api_up = False
            self._close_ports()
        self._stopping.wait(self.restart_seconds)
        with self.lock:
            if self._stopping.is_set():
                return
            if not self.dns_frozen:
                self.applied = self._dns_view()  # the new process reads the saved configuration
            self._bind_http(self.port)
            self._bind_dns(self.dns_port)
            self._api_up = self._dns_up = True
            self.restarts[-1] = (went_down, time.monotonic())
        self._restarting.clear()

    # --- HTTP -------------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        if not self._api_up:  # a kept-alive connection to a process that is going away
            req.close_connection = True
            return
        parts = urlsplit(req.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        if self.on_request is not None:
            self.on_request(self, req.command, path)
        with self.lock:
            if not self._api_up:
                req.close_connection = True
                return
            status, payload, cookie = self._route(req.command, path, query, req.headers, body)
            restart, self._restart_pending = self._restart_pending, False
            restart = restart and not self._restarting.is_set()  # one restart at a time
            if restart:
                self._restarting.set()
            self.requests.append(Call(req.command, path, query, status, time.monotonic()))
        data = b"" if payload is None else json.dumps(payload).encode()
        req.send_response(status)
        if payload is not None:
            req.send_header("Content-Type", "application/json")
        if cookie:
            req.send_header("Set-Cookie", cookie)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)
        req.wfile.flush()
        if restart:  # after the answer is sent, as api_handler does
            self._spawn(self._restart)

    def _route(self, method, path, query, headers, body):
        if path == "/api/auth":
            return self._auth(method, query, headers, body)
        if path == "/api/config" or path.startswith("/api/config/") or path == "/api/action/restartdns":
            session = self._session(query, headers, body)
            if session is None and self.password:
                return 401, _error("unauthorized", "Unauthorized"), None
            if path == "/api/action/restartdns":
                return (*self._restartdns(method), None)
            return (*self._config(method, path, query, session), None)
        return 404, _error("not_found", "Not found", path), None

    def _sid_from(self, query, headers, body) -> tuple[str | None, bool]:
        """(sid, from a cookie) in src/api/auth.c's order: payload, header, cookie, query."""
        if body:
            try:
                data = json.loads(body)
                if isinstance(data, dict) and isinstance(data.get("sid"), str):
                    return data["sid"], False
            except ValueError:
                pass
        for name in ("sid", "X-FTL-SID"):
            if headers.get(name):
                return headers[name], False
        cookie = headers.get("Cookie") or ""
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == "sid" and value:
                return value, True
        if query.get("sid"):
            return query["sid"].replace(" ", "+"), False
        return None, False

    def _session(self, query, headers, body) -> Session | None:
        sid, from_cookie = self._sid_from(query, headers, body)
        if sid is None:
            return None
        if from_cookie and headers.get("X-CSRF-TOKEN") is None:
            return None  # "Cookie authentication without CSRF token"
        session = self.sessions.get(sid)
        if session is None:
            return None
        if from_cookie and headers.get("X-CSRF-TOKEN") != session.csrf:
            return None  # "CSRF token mismatch"
        if session.valid_until <= time.time():
            return None
        session.valid_until = time.time() + self.session_timeout  # any authenticated call extends it
        return session

    def _session_object(self, session: Session | None, valid: bool, message, with_csrf=True) -> dict:
        obj = {"valid": valid, "totp": self.totp,
               "sid": session.sid if session else None,
               "validity": int(session.valid_until - time.time()) if session else -1,
               "message": message}
        if with_csrf and session is not None:
            obj["csrf"] = session.csrf
        return {"session": obj, "took": _took()}

    def _auth(self, method, query, headers, body):
        if method == "GET":
            if not self.password:
                return 200, self._session_object(None, True, "no password set"), None
            session = self._session(query, headers, body)
            if session is None:
                return 401, self._session_object(None, False, "no SID provided", with_csrf=False), None
            return 200, self._session_object(session, True, "correct password"), None
        if method == "DELETE":
            session = self._session(query, headers, body)
            if session is None:
                if not self.password:
                    return 404, {"took": _took()}, None
                return 401, self._session_object(None, False, "session unknown", with_csrf=False), None
            del self.sessions[session.sid]
            return 204, None, "sid=deleted; SameSite=Strict; Path=/; Max-Age=-1"
        if method != "POST":
            return 405, _error("bad_request", "Method not allowed"), None
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return 400, _error("bad_request", "No valid JSON payload found"), None
        if "password" not in data:
            return 400, _error("bad_request", "No password found in JSON payload"), None
        if not isinstance(data["password"], str):
            return 400, _error("bad_request", "Field password has to be of type 'string'"), None
        if not self.password:
            return 200, self._session_object(None, True, "no password set"), None
        given = data["password"]
        app = bool(self.app_password) and secrets.compare_digest(given, self.app_password)
        cli = bool(self.cli_password) and secrets.compare_digest(given, self.cli_password)
        if not (app or cli or secrets.compare_digest(given, self.password)):
            # FTL's own answer (src/api/auth.c): a session object, no csrf
            return 401, self._session_object(None, False, "password incorrect", with_csrf=False), None
        if self.totp and not (app or cli) and "totp" not in data:
            return 400, _error("bad_request", "No 2FA token found in JSON payload"), None
        if len(self.active_sessions()) >= self.max_sessions:
            return 429, _error("api_seats_exceeded", "API seats exceeded", "increase webserver.api.max_sessions"), None
        session = Session(secrets.token_urlsafe(16), secrets.token_urlsafe(16), app, cli,
                          time.time() + self.session_timeout)
        self.sessions[session.sid] = session
        cookie = f"sid={session.sid}; SameSite=Strict; Path=/; Max-Age={int(self.session_timeout)}; HttpOnly"
        return 200, self._session_object(session, True, "app-password correct" if app else "password correct"), cookie

    def _restartdns(self, method):
        if method != "POST":
            return 404, _error("not_found", "Not found", "/api/action/restartdns")
        if not self.allow_destructive:
            return 403, _error("forbidden", "Restarting DNS is not allowed",
                               "Check setting webserver.api.allow_destructive")
        self._request_restart()
        return 200, {"status": "success", "took": _took()}

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
        if session is not None and session.cli:
            return 403, _error("forbidden", "Unable to change configuration (read-only)",
                               "The current CLI session is not allowed to modify Pi-hole config settings")
        if method == "PATCH":
            return 400, _error("bad_request", "PATCH is not part of this double")
        verb = "add" if method == "PUT" else "remove"
        if len(levels) < 3:
            return 400, _error("bad_request", "Invalid path depth",
                               f"Use, e.g., {method} /api/config/dns/upstreams/127.0.0.1 to {verb} \"127.0.0.1\" "
                               f"{'to' if method == 'PUT' else 'from'} config.dns.upstreams")
        section, key, value = levels[0], levels[1], "/".join(levels[2:])
        if (section, key) not in ARRAY_ITEMS:
            return 404, {"took": _took()}
        if f"FTLCONF_{section}_{key}" in self.env:
            return 400, _error("bad_request",
                               "Config items set via environment variables cannot be changed via the API",
                               f"{section}.{key}")
        items = self._array(section, key)
        restart = query.get("restart", "true").lower() not in ("false", "no", "0")
        new = list(items)
        if method == "PUT":
            if self.fail_puts > 0:
                self.fail_puts -= 1
                return 500, _error("internal_error", "Could not write config file", None)
            if value in items:
                return 400, _error("bad_request", "Item already present", "Uniqueness of items is enforced")
            new.append(value)
            if key == "cnameRecords":
                problem = _cname_problem(value)
                if problem:
                    return 400, _error("bad_request", "Invalid value", f"{section}.{key}[{len(items)}]: {problem}")
        else:
            if value not in items:
                return 404, {"took": _took()}
            new.remove(value)
        if (section, key) in RESTART_ITEMS:
            problem = self._dnsmasq_test(**{key: new})
            if problem is not None:
                return 400, _error("bad_request", "Invalid configuration", problem)
        items[:] = new
        if (section, key) == ("dns", "hosts") and not self.dns_frozen:
            self.applied["hosts"] = list(self.hosts)  # the hosts file is reread without a restart
        if (section, key) in RESTART_ITEMS and restart:
            self._request_restart()
        if method == "PUT":
            return 201, {"took": _took()}
        return 204, None

    # --- dnsmasq --test on what FTL would write (src/config/dnsmasq_config.c) ----------------
    def dnsmasq_config(self, cnameRecords=None, upstreams=None) -> str:  # noqa: N803 - FTL's names
        cnames = self.cname_records if cnameRecords is None else cnameRecords
        servers = self.upstreams if upstreams is None else upstreams
        lines = ["# Pi-hole: A black hole for Internet advertisements",
                 "# Dnsmasq config for Pi-hole's FTLDNS (written by the test double)",
                 f"hostsdir={self._work / 'hosts'}", "no-resolv", "port=53"]
        lines += [f"server={s}" for s in servers]
        lines += ["cache-size=10000"]
        if cnames:
            lines += ["# User-defined custom CNAMEs"] + [f"cname={c}" for c in cnames] + [""]
        lines += ["server=/test/", "server=/invalid/", "address=/localhost/127.0.0.1", "address=/localhost/::1",
                  "server=/bind/", "server=/onion/"]
        if self.etc_dnsmasq_d and self.dnsmasq_d is not None and Path(self.dnsmasq_d).is_dir():
            lines += ["# Load additional user configs", f"conf-dir={self.dnsmasq_d},*.conf"]
        if self.dnsmasq_lines:
            lines += ["#### Additional user configuration - START ####", *self.dnsmasq_lines,
                      "#### Additional user configuration - END ####"]
        return "\n".join(lines) + "\n"

    def _dnsmasq_test(self, **change) -> str | None:
        """None when dnsmasq accepts the configuration, else FTL's error text (test_dnsmasq_config)."""
        temp = self._work / "dnsmasq.conf.temp"
        temp.write_text(self.dnsmasq_config(**change))
        done = subprocess.run([self._dnsmasq, f"--conf-file={temp}", "--test"], capture_output=True,
                              text=True, timeout=30)
        output = done.stderr.strip().replace("\n", " ")
        self.dnsmasq_tests.append(output)
        if done.returncode == 0:
            temp.replace(self._work / "dnsmasq.conf")
            return None
        marker = " at line "
        if marker in output:
            try:
                lineno = int(output.split(marker, 1)[1].split()[0])
                line = temp.read_text().splitlines()[lineno - 1]
                output += f': "{line}"'
            except (ValueError, IndexError):
                pass
        temp.unlink()
        return output

    # --- DNS --------------------------------------------------------------------------------
    def _serve_dns(self, sock: socket.socket) -> None:
        import dns.message

        while not self._stopping.is_set() and self._dns is sock:
            try:
                wire, peer = sock.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            if not self._dns_up:
                continue  # the resolver has stopped: no answer
            try:
                query = dns.message.from_wire(wire)
                reply = self._answer(query)
                sock.sendto(reply.to_wire(), peer)
            except Exception:  # noqa: BLE001 - a bad packet is dropped, as a server would
                continue

    def _answer(self, query):
        import dns.message
        import dns.rcode
        import dns.rdatatype
        import dns.rrset

        reply = dns.message.make_response(query)
        reply.flags |= 0x0080  # RA
        question = query.question[0]
        cnames, addresses = {}, {"pi.hole": [ADDRESS]}  # FTL answers pi.hole with its own address
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


def _bind_retrying(bind, timeout: float = 10.0):
    """Bind again on the same port (a restarted FTL does); retried while the old socket lingers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return bind()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _cname_problem(value: str) -> str | None:
    """FTL's validator (src/config/validator.c) for one dns.cnameRecords item."""
    parts = value.split(",")
    if len(parts) < 2:
        return "not a valid CNAME definition (too few elements)"
    for i, part in enumerate(parts):
        if not part.strip():
            return f"not a valid CNAME definition (contains an empty string at position {i})"
    return None


def make_certificate(folder: Path, domain: str = "pi.hole") -> tuple[Path, Path, Path]:
    """A CA and a server certificate as FTL makes them (src/webserver/x509.c): (cert, key, ca).

    Issuer ``CN=pi.hole,O=Pi-hole,C=DE``; the server certificate's names are ``pi.hole`` and
    ``webserver.domain`` when it is another name; no IP address.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pi.hole"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pi-hole"),
                         x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")])
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
    names = [x509.DNSName("pi.hole")] + ([x509.DNSName(domain)] if domain.lower() != "pi.hole" else [])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
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
