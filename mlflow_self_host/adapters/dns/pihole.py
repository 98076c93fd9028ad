"""Pi-hole v6 REST API: log in, read ``dns.cnameRecords``, PUT/DELETE items, always log out.

What FTL v6.4.1 does, and what we do about it (../shared/reference/pihole/NOTES.md; FTL's source):

- Login: ``POST /api/auth`` with the password (or an app password) from ``PIHOLE_PASSWORD`` /
  ``MSH_PIHOLE_PASSWORD``; the SID goes in the ``X-FTL-SID`` header (read before the cookie, so no
  CSRF token is needed: src/api/auth.c).
- Add: ``PUT /api/config/dns/cnameRecords/<encodeURIComponent(entry)>`` (201); remove: ``DELETE``
  on the same path (204). Every call but the last passes ``?restart=false``, so FTL restarts once,
  with the final list (src/api/config.c). FTL checks each change with ``dnsmasq --test`` first and
  answers 400 "Invalid configuration" when its resolver would not start: nothing is saved then.
- The restart is FTL's own (src/api/api.c ``restart_ftl``, src/main.c): DNS and the API are gone for
  seconds. If the last call changed nothing (someone made the same change meanwhile), FTL does not
  restart and the earlier ``restart=false`` changes are saved but not served:
  ``POST /api/action/restartdns`` applies them (src/api/action.c).
- Logout: ``DELETE /api/auth`` at the end, whatever happened in between, retried while FTL restarts
  (for ``dns_check_timeout`` seconds): sessions survive the restart and hold one of the API seats
  (16 by default) for 30 minutes.
- 403 has three causes, told apart by FTL's hint: an app password without
  ``webserver.api.app_sudo``, the CLI password (``/etc/pihole/cli_pw``; src/api/config.c), and
  ``restartdns`` without ``webserver.api.allow_destructive`` (src/api/action.c).
- TLS: ``pihole_cafile`` (a copy of the Pi-hole's /etc/pihole/tls_ca.crt) or, explicitly,
  ``pihole_insecure``. Pi-hole's own certificate names only ``pi.hole`` and ``webserver.domain``
  (src/webserver/x509.c): ``https://<ip>`` is checked for the name ``pi.hole`` (or
  ``pihole_tls_server_name``, as ``NOMAD_TLS_SERVER_NAME`` does for Nomad). A password sent over
  plain HTTP to another host is warned about.
Every failure becomes a UserError saying what to do; the password is never shown.
"""
from __future__ import annotations

import ipaddress
import os
import time
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from ...core import plan as plans
from ...core import poll
from ...core.errors import UserError, connection_reason, first_line
from .record import Record, RecordPlan, make_record_plan

TIMEOUT = 15
RETRY_INTERVAL = 0.5
LOGOUT_GRACE = 5.0  # seconds the logout is retried when we did not restart FTL ourselves
CNAME_PATH = "/config/dns/cnameRecords"
PIHOLE_NAME = "pi.hole"  # the name on the certificate Pi-hole makes for itself
APP_SUDO_HINT = ("allow app passwords to change settings: in the web interface Settings > All settings > "
                 "Webserver and API > webserver.api.app_sudo (expert mode), or on the Pi-hole "
                 "`sudo pihole-FTL --config webserver.api.app_sudo true` (Docker: "
                 "FTLCONF_webserver_api_app_sudo=true), or use the admin password instead")
CLI_PASSWORD_HINT = ("PIHOLE_PASSWORD holds the Pi-hole's CLI password (/etc/pihole/cli_pw), which may read "
                     "but never change settings: use the web interface password, or an app password with "
                     "webserver.api.app_sudo enabled")
CA_HINT = ("copy the Pi-hole's CA here (`scp PIHOLE:/etc/pihole/tls_ca.crt ~/.config/pihole-ca.crt`) and set "
           "pihole_cafile (MSH_PIHOLE_CAFILE) to it, or, knowingly, pass --insecure (MSH_PIHOLE_INSECURE=true)")


class Unreachable(UserError):
    """Pi-hole did not answer at all (down, restarting, or the wrong address)."""


def api_base(url: str) -> str:
    """``https://pi.hole`` → ``https://pi.hole/api`` (``/admin`` or ``/api`` at the end are accepted).

    Without a scheme, ``https://`` (Pi-hole v6 serves both; the password then never goes in clear).
    """
    from ...core.settings import with_scheme

    base = with_scheme(url, "https")
    if not base:
        raise UserError("setting pihole_url is empty", hint="set pihole_url (MSH_PIHOLE_URL), e.g. https://pi.hole")
    for suffix in ("/admin", "/api"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base + "/api"


def tls_verify(settings):
    """What requests' ``verify`` gets: the CA file, False (explicit insecure), or True."""
    if settings.pihole_cafile:
        cafile = os.path.expanduser(settings.pihole_cafile)
        if not os.path.isfile(cafile):
            raise UserError(f"pihole_cafile {cafile} not found",
                            hint="copy the Pi-hole's /etc/pihole/tls_ca.crt here, or fix pihole_cafile")
        return cafile
    return not settings.pihole_insecure


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


class _ServerNameAdapter(HTTPAdapter):
    """Check the certificate for ``server_name`` (and send it as SNI) whatever the URL's host is."""

    def __init__(self, server_name: str):
        self.server_name = server_name
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["assert_hostname"] = self.server_name
        kwargs["server_hostname"] = self.server_name
        super().init_poolmanager(*args, **kwargs)


def _error_of(response) -> tuple[str, str, str]:
    """(key, message, hint) of a Pi-hole error body; empty strings when there is none."""
    try:
        data = response.json()
    except ValueError:
        return "", "", ""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return "", "", ""
    hint = error.get("hint")
    return str(error.get("key") or ""), str(error.get("message") or ""), "" if hint is None else str(hint)


class PiHole:
    """One API session; use as a context manager so that the logout always happens."""

    def __init__(self, settings):
        from ...core import console

        self.base = api_base(settings.pihole_url)
        self.where = self.base[: -len("/api")]
        parts = urlsplit(self.base)
        self.scheme, self.host, self.port = parts.scheme, parts.hostname or "", parts.port
        self._password = settings.pihole_password
        self.settle = max(float(settings.dns_check_timeout), 0.0)  # how long FTL may take to come back
        self.http = requests.Session()
        self.verify = tls_verify(settings)  # per request: a session's is overridden by REQUESTS_CA_BUNDLE
        # The name the certificate must have: Pi-hole's own never names an IP address (x509.c), always pi.hole.
        self.server_name = settings.pihole_tls_server_name.strip().rstrip(".") or (
            PIHOLE_NAME if _is_address(self.host) else "")
        if self.scheme == "https" and self.server_name:
            self.http.mount(f"https://{parts.netloc}", _ServerNameAdapter(self.server_name))
        self.http.headers["User-Agent"] = "mlflow-self-host"
        self.sid: str | None = None
        self.restarted_at: float | None = None  # when our last call made FTL restart (monotonic)
        if self.scheme == "https" and self.verify is False:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            console.warn(f"not verifying the TLS certificate of {self.where} (pihole_insecure)")
        if self.scheme == "http" and self._password and not is_loopback(self.host):
            console.warn(f"the Pi-hole password goes to {self.where} in clear text (plain HTTP): set pihole_url "
                         f"to https://{self.host if not _is_address(self.host) else PIHOLE_NAME} "
                         f"(Pi-hole v6 serves HTTPS too)")

    # --- transport --------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if self.sid:
            headers["X-FTL-SID"] = self.sid
        try:
            return self.http.request(method, self.base + path, headers=headers, timeout=TIMEOUT,
                                     verify=self.verify, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise self._tls_error(str(exc)) from None
        except requests.exceptions.Timeout:
            raise Unreachable(f"Pi-hole at {self.where} did not answer within {TIMEOUT}s",
                              hint="check that it is up and pihole_url (MSH_PIHOLE_URL) is right") from None
        except requests.exceptions.ConnectionError as exc:
            reason = connection_reason(exc)
            hint = "check that it is up and pihole_url (MSH_PIHOLE_URL) is right"
            if self.scheme == "https" and reason == "connection refused":
                hint += ("; Pi-hole serves HTTPS on port 443 unless webserver.port says otherwise "
                         "(Docker: publish 443)")
            raise Unreachable(f"cannot reach Pi-hole at {self.where}: {reason}", hint=hint) from None
        except requests.exceptions.RequestException as exc:
            raise UserError(f"request to Pi-hole at {self.where} failed: {first_line(str(exc))}",
                            hint="check pihole_url (MSH_PIHOLE_URL)") from None

    def _tls_error(self, reason: str) -> UserError:
        """The TLS failure by its cause: another name, an unknown CA, an expired certificate, no TLS."""
        text = reason.lower()
        checked = self.server_name or self.host
        if "mismatch" in text or "doesn't match" in text or "not valid for" in text:
            names = certificate_names(self.host, self.port or 443, self.server_name or self.host)
            shown = f" (it names {', '.join(names)})" if names else ""
            name = next((n for n in names if not _is_address(n) and "*" not in n), PIHOLE_NAME)
            if _is_address(checked):
                hint = (f"the certificate Pi-hole makes names no IP address: set pihole_tls_server_name "
                        f"(MSH_PIHOLE_TLS_SERVER_NAME or --tls-server-name) to {name} to check it for that name "
                        f"at this address, or use https://{name} where that name resolves")
            else:
                hint = (f"use a name the certificate has in pihole_url (https://{name}), or set "
                        f"pihole_tls_server_name (MSH_PIHOLE_TLS_SERVER_NAME) to it")
            return UserError(f"the TLS certificate of {self.where} is not for {checked}{shown}", hint=hint)
        if "expired" in text or "not yet valid" in text:
            return UserError(f"the TLS certificate of {self.where} is expired or not yet valid",
                             hint="check this machine's clock, and renew the Pi-hole's certificate "
                                  "(webserver.tls.cert)")
        if any(s in text for s in ("self-signed", "self signed", "unable to get local issuer",
                                   "unable to verify the first certificate", "unknown ca")):
            if isinstance(self.verify, str):
                return UserError(f"the TLS certificate of {self.where} is not signed by the CA in "
                                 f"pihole_cafile {self.verify}",
                                 hint="the Pi-hole may have made a new CA: copy its /etc/pihole/tls_ca.crt again, "
                                      "or point pihole_cafile at the CA that signed its certificate")
            return UserError(f"the TLS certificate of {self.where} is signed by a CA this machine does not trust "
                             f"(Pi-hole makes its own)", hint=CA_HINT)
        if any(s in text for s in ("wrong version number", "record layer failure", "http request",
                                   "unknown protocol", "packet length too long")):
            return UserError(f"{self.where} does not speak TLS on this port",
                             hint="use http:// for this port, or the Pi-hole's HTTPS port (443 by default)")
        return UserError(f"TLS with {self.where} failed: {first_line(reason)}",
                         hint="check pihole_url (http:// or https://, and the port)")

    def _unexpected(self, response, doing: str) -> UserError:
        key, message, hint = _error_of(response)
        if response.status_code == 401:
            return UserError(f"Pi-hole at {self.where} refused the session while {doing} (401 unauthorized)",
                             hint="the session may have expired; run again")
        if response.status_code == 429:
            return UserError(f"Pi-hole at {self.where} is rate-limiting ({message or 'too many requests'})",
                             hint=(hint + "; " if hint else "") + "wait a minute, or close other API sessions "
                                  "(Settings > Web interface / API > Currently active sessions)")
        detail = f"{message} ({hint})" if message and hint else message or response.reason or ""
        return UserError(f"Pi-hole at {self.where} answered {response.status_code} while {doing}"
                         + (f": {detail}" if detail else ""),
                         hint="run `inv --debug dns` for details")

    # --- session ----------------------------------------------------------------------------
    def login(self) -> None:
        if not self._password:
            # A Pi-hole without a password needs no login: GET /api/auth tells.
            response = self.request("GET", "/auth")
            self._check_is_pihole(response)
            if response.status_code == 200:
                return
            raise UserError("no Pi-hole password: PIHOLE_PASSWORD is not set",
                            hint="export PIHOLE_PASSWORD (the admin password, or an app password with "
                                 "webserver.api.app_sudo enabled); it is never read from a file")
        response = self.request("POST", "/auth", json={"password": self._password})
        self._check_is_pihole(response)
        if response.status_code == 200:
            session = (response.json() or {}).get("session") or {}
            self.sid = session.get("sid")
            return
        key, message, hint = _error_of(response)
        if response.status_code == 401:
            raise UserError(f"Pi-hole at {self.where} refused the password (wrong password)",
                            hint="check PIHOLE_PASSWORD (or MSH_PIHOLE_PASSWORD): the web interface password "
                                 "or an app password")
        if response.status_code == 400 and "2FA" in message:
            raise UserError(f"Pi-hole at {self.where} asks for a 2FA code with this password",
                            hint="use an app password instead (Settings > Web interface / API > "
                                 "Configure app password) and enable webserver.api.app_sudo")
        if response.status_code == 429:
            if key == "api_seats_exceeded":
                raise UserError(f"Pi-hole at {self.where} has no free API session ({message})",
                                hint=(hint + ", " if hint else "") + "or end sessions in Settings > "
                                     "Web interface / API > Currently active sessions")
            raise UserError(f"Pi-hole at {self.where} is rate-limiting logins ({message})",
                            hint="wait a minute and run again")
        raise self._unexpected(response, "logging in")

    def _check_is_pihole(self, response) -> None:
        if response.status_code in (200, 400, 401, 429):
            try:
                data = response.json()
            except ValueError:
                data = None
            if isinstance(data, dict) and ("session" in data or "error" in data):
                return
        raise UserError(
            f"{self.where} does not answer like a Pi-hole v6 API (HTTP {response.status_code} on /api/auth)",
            hint="check pihole_url; Pi-hole v5 has no such API: use dns_backend dnsmasq (--backend dnsmasq)",
        )

    def logout(self) -> None:
        """End the session (a no-op without one), retried while FTL restarts; a failure only warns.

        FTL keeps sessions across its restart (webserver.session.restore), so a logout lost to the
        restart would hold one of its API seats until the session expires.
        """
        from ...core import console

        if not self.sid:
            return
        start = self.restarted_at if self.restarted_at is not None else time.monotonic()
        deadline = poll.Deadline(start + (self.settle if self.restarted_at is not None else LOGOUT_GRACE)
                                 - time.monotonic())
        waiting, lost = False, None

        def logged_out() -> bool:
            nonlocal waiting, lost
            try:
                response = self.request("DELETE", "/auth")
            except Unreachable as exc:
                lost = exc
                if not waiting and not deadline.passed:
                    console.info(f"Pi-hole at {self.where} is restarting; logging out when it is back "
                                 f"(up to {deadline.left():.0f}s more, dns_check_timeout)")
                    waiting = True
                return False
            # 401: the session is gone already (FTL did not restore it after its restart)
            if response.status_code not in (204, 401, 404):
                raise self._unexpected(response, "logging out")
            return True

        def still_unreachable(_):
            raise lost

        try:
            poll.until(logged_out, deadline, interval=RETRY_INTERVAL, on_timeout=still_unreachable)
        except UserError as exc:
            console.warn(f"could not log out of Pi-hole ({exc.message}); the session holds one of its API seats "
                         f"(webserver.api.max_sessions, 16 by default) until it expires (30 minutes by default)")
        finally:
            self.sid = None

    def __enter__(self) -> "PiHole":
        try:
            self.login()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.logout()
        finally:
            self.close()

    def close(self) -> None:
        self.http.close()

    # --- dns.cnameRecords -------------------------------------------------------------------
    def cname_records(self) -> list[str]:
        response = self.request("GET", CNAME_PATH)
        if response.status_code != 200:
            raise self._unexpected(response, "reading dns.cnameRecords")
        try:
            records = response.json()["config"]["dns"]["cnameRecords"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"Pi-hole at {self.where} sent no config.dns.cnameRecords",
                            hint="is it Pi-hole v6? for v5 use dns_backend dnsmasq") from None
        return [str(r) for r in records]

    def _item_path(self, entry: str, restart: bool) -> str:
        # encodeURIComponent, as Pi-hole's own web interface does
        return f"{CNAME_PATH}/{quote(entry, safe='')}" + ("" if restart else "?restart=false")

    def add(self, entry: str, restart: bool = True) -> bool:
        """PUT the entry; True when it changed the list (FTL then restarts unless ``restart`` is False)."""
        response = self.request("PUT", self._item_path(entry, restart))
        if response.status_code in (200, 201):
            self._changed(restart)
            return True
        key, message, hint = _error_of(response)
        if response.status_code == 400 and message == "Item already present":
            return False  # added meanwhile: the state we want, and FTL did not restart
        self._refused(response, f"adding {entry!r}")

    def delete(self, entry: str, restart: bool = True) -> bool:
        """DELETE the entry; True when it changed the list, False when it was gone already (404)."""
        response = self.request("DELETE", self._item_path(entry, restart))
        if response.status_code in (200, 204):
            self._changed(restart)
            return True
        if response.status_code == 404:
            return False
        self._refused(response, f"removing {entry!r}")

    def _changed(self, restart: bool) -> None:
        if restart:
            self.restarted_at = time.monotonic()

    def restart_dns(self) -> None:
        """``POST /api/action/restartdns``: FTL applies the saved configuration (and restarts)."""
        try:
            response = self.request("POST", "/action/restartdns")
        except Unreachable:
            self.restarted_at = time.monotonic()  # it may have gone down before answering: the check tells
            return
        if response.status_code == 200:
            self.restarted_at = time.monotonic()
            return
        key, message, hint = _error_of(response)
        if response.status_code == 403:
            raise UserError(f"Pi-hole at {self.where} saved the record but does not serve it yet, and refuses to "
                            f"restart its DNS resolver ({message}: {hint})",
                            hint="restart it on the Pi-hole (`pihole restartdns`, or Settings > System > "
                                 "Restart DNS resolver), or enable webserver.api.allow_destructive")
        raise self._unexpected(response, "restarting its DNS resolver")

    def _refused(self, response, doing: str) -> None:
        key, message, hint = _error_of(response)
        if response.status_code == 403:
            if "app session" in hint or "app_sudo" in hint:
                raise UserError(f"Pi-hole at {self.where} does not let this app password change settings "
                                f"(webserver.api.app_sudo is false)", hint=APP_SUDO_HINT)
            if "CLI session" in hint:
                raise UserError(f"Pi-hole at {self.where} does not let the CLI password change settings",
                                hint=CLI_PASSWORD_HINT)
            raise UserError(f"Pi-hole at {self.where} refused {doing} (403 {message or 'forbidden'})",
                            hint=hint or "use the web interface password")
        if response.status_code == 400 and "environment variable" in message:
            raise UserError(
                f"dns.cnameRecords on {self.where} is read-only: it is set by the FTLCONF_dns_cnameRecords "
                f"environment variable",
                hint="add the record to FTLCONF_dns_cnameRecords (one entry per line) where the Pi-hole "
                     "container is defined and recreate it, or remove that variable to manage records here",
            )
        if response.status_code == 400 and message == "Invalid value":
            raise UserError(f"Pi-hole refused {doing}: {hint or message}",
                            hint="check domain, dns_target and dns_ttl (`inv config`)")
        if response.status_code == 400 and message == "Invalid configuration":
            if "duplicate cname" in hint.lower():
                advice = ("a name in it is defined elsewhere on the Pi-hole too: in misc.dnsmasq_lines "
                          "(Settings > All settings > Miscellaneous, expert mode) or, with misc.etc_dnsmasq_d "
                          "on, in a file in /etc/dnsmasq.d; remove that definition and run again")
            else:
                advice = "fix the Pi-hole's DNS settings that dnsmasq names, then run again"
            raise UserError(f"Pi-hole refused {doing}: its DNS resolver would not start with it ({hint}); "
                            f"nothing was changed", hint=advice)
        raise self._unexpected(response, doing)


class PiholeBackend:
    """The pihole backend of ``inv dns``: one API session (``with``: login, and the logout whatever
    happens), ``dns.cnameRecords`` read, one PUT/DELETE per step.

    FTL restarts once, on the plan's last call. If that call changes nothing (someone made the same
    change meanwhile), FTL does not restart and serves the old records: ``restartdns`` applies what
    is saved. If a call fails, the calls made before it are undone (all of them were
    ``restart=false``: FTL still serves what it had).
    """

    def __init__(self, settings):
        self.api = PiHole(settings)
        self.done: list[tuple[str, str]] = []  # the steps made so far, to undo on a failure
        self.restarted = False  # whether the last call made FTL restart

    @property
    def where(self) -> str:
        return f"Pi-hole {self.api.where}"

    def __enter__(self) -> "PiholeBackend":
        self.api.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.api.__exit__(*exc)

    def read_facts(self) -> list[str]:
        return self.api.cname_records()

    def make_plan(self, entries: list[str], wanted: Record, remove: bool = False) -> RecordPlan:
        return make_record_plan(entries, wanted, remove=remove,
                                title=f"Pi-hole {self.api.where} dns.cnameRecords")

    def apply_one(self, change, plan) -> object:
        """The change's steps, each one call; after the plan's last step, ``restartdns`` when FTL did
        not restart by itself."""
        api, total = self.api, len(plan.ops)
        for action, entry in change.op.steps:
            last = len(self.done) == total - 1
            try:
                changed = (api.delete if action == "delete" else api.add)(entry, restart=last)
            except UserError as exc:
                _undo(api, self.done, exc)
                raise
            self.done.append((action, entry))
            self.restarted = last and changed
        if len(self.done) == total and not self.restarted:
            api.restart_dns()
        return plans.QUIET


def _undo(api: PiHole, done: list[tuple[str, str]], failure: UserError) -> None:
    """Put back what ``done`` changed, without a restart; a failure here is added to ``failure``."""
    for action, entry in reversed(done):
        try:
            (api.add if action == "delete" else api.delete)(entry, restart=False)
        except UserError as exc:
            failure.message += (f"; putting back {entry!r} failed too ({exc.message}): see Local DNS Records "
                                f"in the Pi-hole's web interface")
            failure.args = (failure.message,)


def certificate_names(host: str, port: int, server_name: str, timeout: float = 5.0) -> list[str]:
    """The DNS names and addresses on the server's certificate, read without checking it; [] on failure."""
    import socket
    import ssl

    try:
        from cryptography import x509

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sni = None if _is_address(server_name) else server_name
            with context.wrap_socket(raw, server_hostname=sni) as tls:
                der = tls.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [str(n) for n in san.get_values_for_type(x509.DNSName)] + \
               [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    except Exception:  # noqa: BLE001 - only for a better hint
        return []
