"""The Nomad HTTP API client (python-nomad) built from the settings, and its errors as UserErrors.

Address, ACL token, namespace, region and TLS come from the settings, which already merge the
standard NOMAD_* variables (settings.py). python-nomad does not verify TLS by default and knows no
NOMAD_CACERT: here https is verified against the system CAs, ``nomad_cacert`` when set, or not at
all with ``nomad_skip_verify`` (as the Nomad CLI does).
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable

from ..core.errors import UserError, connection_reason

TIMEOUT = 10  # seconds for one API call


def address(settings) -> str:
    """nomad_addr with its scheme (settings.with_scheme, as Settings.load checked it: http when none)."""
    from ..core.settings import with_scheme

    addr = with_scheme(settings.nomad_addr or "", "http")
    if not addr:
        raise UserError("nomad_addr is empty", hint="set NOMAD_ADDR (e.g. http://m700:4646) or nomad_addr")
    return addr


def _tls(settings) -> tuple[Any, tuple]:
    verify: Any = True
    if settings.nomad_skip_verify:
        verify = False
    elif settings.nomad_cacert:
        cacert = os.path.expanduser(settings.nomad_cacert)
        if not os.path.exists(cacert):
            raise UserError(f"nomad_cacert {cacert} does not exist", hint="point NOMAD_CACERT at the CA bundle file")
        verify = cacert
    cert, key = settings.nomad_client_cert, settings.nomad_client_key
    if bool(cert) != bool(key):
        raise UserError("a Nomad client certificate needs both NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY",
                        hint="set both, or neither")
    for path in (cert, key):
        if path and not os.path.exists(os.path.expanduser(path)):
            raise UserError(f"Nomad client certificate file {path} does not exist")
    return verify, ((os.path.expanduser(cert), os.path.expanduser(key)) if cert else ())


def client(settings, timeout: int = TIMEOUT):
    """A python-nomad client for the configured agent, token, namespace and region."""
    import nomad

    verify, cert = _tls(settings)
    return nomad.Nomad(
        address=address(settings),
        token=settings.nomad_token or None,
        namespace=settings.nomad_namespace or None,
        region=settings.nomad_region or None,
        timeout=timeout,
        verify=verify,
        cert=cert,
    )


def status_and_text(exc: BaseException) -> tuple[int | None, str]:
    """(HTTP status or None, Nomad's text/plain error body or the error) of a python-nomad exception."""
    resp = getattr(exc, "nomad_resp", None)
    code = getattr(resp, "status_code", None)
    if code is not None:
        return code, (getattr(resp, "text", "") or "").strip()
    return None, str(resp if resp is not None else exc).strip()


def one_line(text: str) -> str:
    """Nomad's error text in one line: its multierror ("1 error occurred:\n\t* reason\n\n") as the reasons."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if lines and re.match(r"^\d+ errors? occurred:$", lines[0]):
        reasons = [line.lstrip("* ").strip() for line in lines[1:] if line.startswith("*")]
        if reasons:
            return "; ".join(reasons)
    return lines[0] if lines else ""


def to_user_error(exc: BaseException, settings, what: str) -> UserError:
    """A python-nomad / requests failure as one line the user can act on. Never shows the token."""
    import requests

    addr = address(settings)
    code, text = status_and_text(exc)
    text = text.replace(settings.nomad_token, "****") if settings.nomad_token else text
    short = one_line(text)[:300]
    ns = settings.nomad_namespace or "default"
    if code == 403:
        if not settings.nomad_token:
            return UserError(f"Nomad refused {what}: ACLs are enabled and no token is set ({short})",
                             hint="export NOMAD_TOKEN=<secret id of a token with submit-job, read-job and "
                                  f"read-logs in namespace {ns}>")
        return UserError(f"Nomad refused {what}: the token lacks permission ({short})",
                         hint=f"the NOMAD_TOKEN policy needs namespace \"{ns}\" capabilities submit-job, "
                              "read-job, read-logs, and for the deploy lock `variables { path "
                              "\"mlflow-self-host/*\" { capabilities = [\"read\", \"write\", \"destroy\"] } }`; "
                              "`nomad acl token self` shows yours")
    if code == 404:
        return UserError(f"Nomad: {what}: not found ({short})",
                         hint=f"check nomad_namespace ({ns}) and job_name ({settings.job_name})")
    if code == 400:
        return UserError(f"Nomad rejected {what}: {short}")
    if code is not None:
        return UserError(f"Nomad: {what} failed (HTTP {code}): {short}")
    cause = getattr(exc, "nomad_resp", exc)
    if isinstance(cause, requests.exceptions.SSLError):
        return UserError(f"TLS with the Nomad agent at {addr} failed: {connection_reason(cause)}",
                         hint="set nomad_cacert (NOMAD_CACERT) to the CA that signed the agent's certificate, "
                              "or NOMAD_SKIP_VERIFY=true")
    if isinstance(cause, requests.exceptions.Timeout):
        return UserError(f"the Nomad agent at {addr} did not answer in time ({what})",
                         hint="is the agent overloaded or the address wrong? check nomad_addr / NOMAD_ADDR")
    if isinstance(cause, requests.exceptions.ConnectionError):
        reason = connection_reason(cause)
        return UserError(f"cannot reach the Nomad agent at {addr}: {reason}",
                         hint="is Nomad running there (`systemctl status nomad`)? check nomad_addr / NOMAD_ADDR")
    return UserError(f"Nomad: {what} failed: {short or type(exc).__name__}")


def call(settings, what: str, fn: Callable, *args, refused: Callable[[str], UserError] | None = None, **kwargs):
    """``fn(*args, **kwargs)`` with python-nomad and requests failures mapped to UserError; ``refused(text)``, when
    given, is the error for a 400 (Nomad's text: the request itself is wrong)."""
    import nomad.api.exceptions as nex
    import requests

    try:
        return fn(*args, **kwargs)
    except (nex.BaseNomadException, requests.RequestException) as exc:
        code, text = status_and_text(exc)
        if refused is not None and code == 400:
            raise refused(text) from None
        raise to_user_error(exc, settings, what) from None


def evaluation(settings, n, eval_id: str) -> dict:
    """GET /v1/evaluation/:id in the job's namespace. python-nomad sends no namespace there, and Nomad
    checks read-job in the request's namespace (eval_endpoint.go): a token limited to the job's
    namespace would get 403 without it."""
    return call(settings, "reading the evaluation", lambda: n.evaluation.request(
        eval_id, method="get", params={"namespace": settings.nomad_namespace or "default"}).json())


def set_stable(settings, n, version: int, stable: bool) -> None:
    """POST /v1/job/:id/stable: mark a job version (un)stable, the target Nomad's auto_revert picks."""
    call(settings, f"marking job version {version} {'stable' if stable else 'not stable'}",
         n.job.stable_job, settings.job_name, version, stable)


def registered_job(settings, n) -> dict | None:
    """The registered job, or None when Nomad does not know it."""
    import nomad.api.exceptions as nex

    try:
        return n.job.get_job(settings.job_name)
    except nex.URLNotFoundNomadException:
        return None
    except Exception as exc:  # noqa: BLE001 - mapped below
        raise to_user_error(exc, settings, f"reading job {settings.job_name}") from None
