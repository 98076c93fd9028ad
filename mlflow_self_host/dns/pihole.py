"""Pi-hole v6 REST API: log in, read ``dns.cnameRecords``, PUT/DELETE items, always log out.

- Login: ``POST /api/auth`` with the password (or an app password) from ``PIHOLE_PASSWORD`` /
  ``MSH_PIHOLE_PASSWORD``; the SID goes in the ``X-FTL-SID`` header; ``DELETE /api/auth`` at the
  end, whatever happened in between (Pi-hole has few API seats).
- Add: ``PUT /api/config/dns/cnameRecords/<encodeURIComponent(entry)>`` (201); remove: ``DELETE``
  on the same path (204). Every call but the last passes ``?restart=false`` so FTL restarts its
  resolver once, with the final list.
- TLS: ``pihole_cafile`` (e.g. a copy of the Pi-hole's /etc/pihole/tls_ca.crt) or, explicitly,
  ``pihole_insecure``.
Every failure becomes a UserError saying what to do; the password is never shown.
"""
from __future__ import annotations

import os
from urllib.parse import quote

import requests

from .. import plan as plans
from ..errors import UserError, connection_reason
from .record import Record, RecordPlan, plan_record

TIMEOUT = 15
CNAME_PATH = "/config/dns/cnameRecords"
APP_SUDO_HINT = ("allow app passwords to change settings: in the web interface Settings > All settings > "
                 "Webserver and API > webserver.api.app_sudo (expert mode), or on the Pi-hole "
                 "`sudo pihole-FTL --config webserver.api.app_sudo true` (Docker: "
                 "FTLCONF_webserver_api_app_sudo=true), or use the admin password instead")


def api_base(url: str) -> str:
    """``http://pi.hole`` → ``http://pi.hole/api`` (``/admin`` or ``/api`` at the end are accepted)."""
    base = url.strip().rstrip("/")
    if not base:
        raise UserError("setting pihole_url is empty", hint="set pihole_url (MSH_PIHOLE_URL), e.g. http://pi.hole")
    if "://" not in base:
        base = "http://" + base
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
        self.base = api_base(settings.pihole_url)
        self.where = self.base[: -len("/api")]
        self._password = settings.pihole_password
        self.http = requests.Session()
        self.verify = tls_verify(settings)  # per request: a session's is overridden by REQUESTS_CA_BUNDLE
        self.http.headers["User-Agent"] = "mlflow-self-host"
        self.sid: str | None = None
        if self.verify is False:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            from .. import console

            console.warn(f"not verifying the TLS certificate of {self.where} (pihole_insecure)")

    # --- transport --------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if self.sid:
            headers["X-FTL-SID"] = self.sid
        try:
            return self.http.request(method, self.base + path, headers=headers, timeout=TIMEOUT,
                                     verify=self.verify, **kwargs)
        except requests.exceptions.SSLError as exc:
            reason = str(exc)
            if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate verify failed" in reason:
                raise UserError(
                    f"the TLS certificate of {self.where} is not trusted (self-signed?)",
                    hint="set pihole_cafile (MSH_PIHOLE_CAFILE) to a copy of the Pi-hole's "
                         "/etc/pihole/tls_ca.crt, or pass --insecure (MSH_PIHOLE_INSECURE=true) to skip the check",
                ) from None
            raise UserError(f"TLS with {self.where} failed: {_first_line(reason)}",
                            hint="check pihole_url (http:// or https://, and the port)") from None
        except requests.exceptions.Timeout:
            raise UserError(f"Pi-hole at {self.where} did not answer within {TIMEOUT}s",
                            hint="check that it is up and pihole_url (MSH_PIHOLE_URL) is right") from None
        except requests.exceptions.ConnectionError as exc:
            raise UserError(f"cannot reach Pi-hole at {self.where}: {connection_reason(exc)}",
                            hint="check that it is up and pihole_url (MSH_PIHOLE_URL) is right") from None
        except requests.exceptions.RequestException as exc:
            raise UserError(f"request to Pi-hole at {self.where} failed: {_first_line(str(exc))}",
                            hint="check pihole_url (MSH_PIHOLE_URL)") from None

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
        """End the session (a no-op without one); a failure here only warns."""
        if not self.sid:
            return
        try:
            response = self.request("DELETE", "/auth")
            if response.status_code not in (204, 404):
                raise self._unexpected(response, "logging out")
        except UserError as exc:
            from .. import console

            console.warn(f"could not log out of Pi-hole ({exc.message}); the session expires by itself")
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

    def add(self, entry: str, restart: bool = True) -> None:
        response = self.request("PUT", self._item_path(entry, restart))
        if response.status_code in (200, 201):
            return
        key, message, hint = _error_of(response)
        if response.status_code == 400 and message == "Item already present":
            return  # added meanwhile: the state we want
        self._refused(response, f"adding {entry!r}")

    def delete(self, entry: str, restart: bool = True) -> None:
        response = self.request("DELETE", self._item_path(entry, restart))
        if response.status_code in (200, 204, 404):  # 404: already gone
            return
        self._refused(response, f"removing {entry!r}")

    def _refused(self, response, doing: str) -> None:
        key, message, hint = _error_of(response)
        if response.status_code == 403:
            raise UserError(f"Pi-hole at {self.where} does not let this app password change settings "
                            f"(webserver.api.app_sudo is false)", hint=APP_SUDO_HINT)
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
        raise self._unexpected(response, doing)


def apply(api: PiHole, plan: RecordPlan) -> None:
    """Run the plan's PUT/DELETE calls; FTL restarts once, on the last one.

    If an add fails after the deletes, the deleted entries are put back (best effort) so that a
    failed replace does not leave the domain without a record.
    """
    done: list[tuple[str, str]] = []
    for i, (action, entry) in enumerate(plan.ops):
        last = i == len(plan.ops) - 1
        try:
            (api.delete if action == "delete" else api.add)(entry, restart=last)
        except UserError:
            _undo(api, done)
            raise
        done.append((action, entry))


def _undo(api: PiHole, done: list[tuple[str, str]]) -> None:
    for i, (action, entry) in enumerate(reversed(done)):
        try:
            (api.add if action == "delete" else api.delete)(entry, restart=i == len(done) - 1)
        except UserError:
            pass


def sync(settings, wanted: Record, remove: bool = False, dry_run: bool = False) -> RecordPlan:
    """Read the records, show the plan, apply it unless ``dry_run``; log out in every case."""
    from .. import console

    with PiHole(settings) as api:
        entries = api.cname_records()
        plan = plan_record(entries, wanted, remove=remove, title=f"Pi-hole {api.where} dns.cnameRecords")
        plans.show(plan, dry_run=dry_run)
        if dry_run or plan.empty:
            return plan
        apply(api, plan)
        console.done(f"Pi-hole {api.where}: " + ("removed " + wanted.names[0] if remove else wanted.describe()))
    return plan


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]
