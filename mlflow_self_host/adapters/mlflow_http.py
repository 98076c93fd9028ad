"""MLflow's HTTP(S) service, as every part of ours reaches it: deploy's service check, `inv smoke`, doctor's rows and
`inv users` (and so migrate, whose deploy checks the service).

The certificate is verified with the setting ``ca_file`` (a private CA's PEM), else the system's CAs; the MLflow
client gets the same file as ``MLFLOW_TRACKING_SERVER_CERT_PATH`` (``client_env``). A certificate that does not verify
(another CA, expired, not for the name) is one red line naming ``ca_file``, exit 18 (``ExitCode.CERTIFICATE``),
whichever task met it; any other failure stays the caller's (requests' exceptions, unchanged).
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

from ..core.errors import ExitCode, UserError, first_line

CERT_PATH_ENV = "MLFLOW_TRACKING_SERVER_CERT_PATH"  # the MLflow client's CA bundle (mlflow.environment_variables)
_VERIFY_FAILED = re.compile(r"certificate verify failed: (.+?)\.? \(_ssl\.c:\d+\)|certificate verify failed: ([^(\"]+)",
                            re.I)  # OpenSSL's reason, before Python's "(_ssl.c:NNNN)" (or the quote that ends it)


def verify(settings) -> str | bool:
    """What requests verifies MLflow's certificate with: ``ca_file`` (checked at load: a PEM file), else True."""
    return str(settings.ca_file) if settings.ca_file else True


def request(settings, method: str, url: str, **kwargs):
    """``requests.request`` with the certificate verified as ``verify`` says; a certificate that does not verify
    raises ``certificate_refused`` (exit 18), anything else what requests raises."""
    import requests

    kwargs.setdefault("verify", verify(settings))
    try:
        return requests.request(method, url, **kwargs)
    except requests.exceptions.SSLError as exc:
        reason = verify_failure(exc)
        if reason is None:  # a handshake that failed otherwise (plain HTTP on the port...): the caller's to say
            raise
        raise certificate_refused(settings, url, reason) from None


def get(settings, url: str, **kwargs):
    return request(settings, "GET", url, **kwargs)


def verify_failure(exc: BaseException) -> str | None:
    """OpenSSL's reason when ``exc`` is a certificate that did not verify ("unable to get local issuer certificate",
    "certificate has expired", "Hostname mismatch, certificate is not valid for 'x'"); None for any other error."""
    found = _VERIFY_FAILED.search(str(exc))
    if not found:
        return None
    return found.group(1).strip() if found.group(1) else found.group(2).strip().rstrip("'.")


def trusted_by(settings) -> str:
    return f"ca_file {settings.ca_file}" if settings.ca_file else "the system's CAs (ca_file is empty)"


def certificate_refused(settings, url: str, reason: str) -> UserError:
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}/"
    return UserError(f"{origin}: its TLS certificate is refused ({reason}), checked with {trusted_by(settings)}",
                     hint=f"set ca_file to the PEM of the CA that signed the proxy's certificate for {parts.hostname} "
                          "(settings.yaml or MSH_CA_FILE), or give Traefik a certificate for that name "
                          "(traefik_certresolver); `inv doctor` shows the certificate",
                     code=ExitCode.CERTIFICATE)


@contextlib.contextmanager
def client_env(settings):
    """``MLFLOW_TRACKING_SERVER_CERT_PATH`` = ``ca_file`` for the block (unless the user set their own), for the
    MLflow client; put back as it was after."""
    before = os.environ.get(CERT_PATH_ENV)
    if settings.ca_file and not before:
        os.environ[CERT_PATH_ENV] = str(settings.ca_file)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CERT_PATH_ENV, None)
        else:
            os.environ[CERT_PATH_ENV] = before


@dataclass
class Certificate:
    """The certificate a TLS server shows for a name, and whether it verifies."""

    subject: str
    issuer: str
    not_after: datetime
    problem: str  # why it does not verify for the name (OpenSSL's words); "" when it does

    def days_left(self, now: datetime | None = None) -> int:
        return int((self.not_after - (now or datetime.now(timezone.utc))).total_seconds() // 86400)


def certificate(settings, url: str, timeout: float) -> Certificate:
    """The certificate ``url``'s server shows (SNI: its host), read without verifying, then verified as our tasks
    verify it (``ca_file`` or the system's CAs, and the name). Raises OSError when it cannot be reached."""
    import socket
    import ssl

    from cryptography import x509

    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443

    def handshake(context):
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                return tls.getpeercert(binary_form=True)

    reading = ssl.create_default_context()
    reading.check_hostname, reading.verify_mode = False, ssl.CERT_NONE
    cert = x509.load_der_x509_certificate(handshake(reading))
    problem = ""
    try:
        handshake(ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None))
    except ssl.SSLCertVerificationError as exc:
        problem = (exc.verify_message or first_line(exc)).rstrip(".")
    return Certificate(cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), cert.not_valid_after_utc, problem)
