"""Names under the test suffixes (``.lan``) resolved through the test dnsmasq, in this process and in
the ``python -m invoke ...`` subprocesses the tests start.

The MLflow client (requests → urllib3 → ``socket.getaddrinfo``) and the tasks ask the system resolver,
which knows nothing of the dnsmasq on a loopback port (``tests/services/dns_server.py``). Here
``socket.getaddrinfo`` (and ``socket.gethostbyname``) is wrapped: a name ending with one of the
suffixes is asked of the DNS server with a real query (dnspython), following a CNAME to its A records
(``mlflow.lan`` → CNAME ``traefik.lan`` → 127.0.0.1); every other name goes to the original function.
Failures look like the system's: NXDOMAIN → ``gaierror(EAI_NONAME)``, a name without an address of
the family → ``EAI_NODATA``, no answer from the server → ``EAI_AGAIN``.

- In-process: ``with use_dns(dns_server.port): ...`` (or ``install(...)`` / its returned undo).
- Subprocesses: ``env={**os.environ, **env_for_subprocess(dns_server.port)}``. It puts a folder with a
  ``sitecustomize.py`` first on ``PYTHONPATH`` (keeping the entries already there); that file installs
  the same wrapper at interpreter start when ``MSH_TEST_DNS`` is set, then runs the
  ``sitecustomize`` it shadows, if any. The subprocess must be a Python with dnspython (the venv's).

This module imports only the standard library and dnspython at the top: the subprocesses' sitecustomize
loads it by file path, before the project is on ``sys.path``.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path

ENV_SERVER = "MSH_TEST_DNS"  # "127.0.0.1:PORT"
ENV_SUFFIXES = "MSH_TEST_DNS_SUFFIXES"  # ".lan" or ".lan,.test"
DEFAULT_SUFFIXES = (".lan",)
MAX_CNAME_DEPTH = 8
TIMEOUT = 3.0

_SITECUSTOMIZE = '''\
"""Written by tests/services/resolver.py: resolve the test names through the test DNS server."""
import os as _os
import sys as _sys


def _msh_test_dns():
    if not _os.environ.get({env_server!r}):
        return
    import importlib.util
    spec = importlib.util.spec_from_file_location("_msh_test_resolver", {resolver!r})
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        module.install_from_environment()
    except Exception as exc:  # a broken test patch must not break the interpreter; say why
        print(f"sitecustomize: test DNS not installed: {{exc!r}}", file=_sys.stderr)


def _shadowed_sitecustomize():
    """Run the sitecustomize this file hides (the next one on sys.path), as Python would have."""
    import importlib.machinery
    import importlib.util
    here = _os.path.dirname(_os.path.abspath(__file__))
    path = [p for p in _sys.path if _os.path.abspath(p or _os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_msh_test_dns()
_shadowed_sitecustomize()
'''


def _suffixes(suffixes) -> tuple[str, ...]:
    return (suffixes,) if isinstance(suffixes, str) else tuple(suffixes)


class _Resolver:
    def __init__(self, address: str, port: int, suffixes):
        import dns.resolver

        self.suffixes = tuple(s.lower() if s.startswith(".") else "." + s.lower() for s in _suffixes(suffixes))
        self.dns = dns.resolver.Resolver(configure=False)
        self.dns.nameservers = [address]
        self.dns.port = port
        self.dns.lifetime = TIMEOUT
        self.dns.cache = None

    def handles(self, host) -> bool:
        if isinstance(host, (bytes, bytearray)):
            host = bytes(host).decode("ascii", "replace")
        if not isinstance(host, str):
            return False
        name = host.lower().rstrip(".")
        return any(name.endswith(suffix) for suffix in self.suffixes)

    def addresses(self, host, family: int) -> tuple[str, list[str]]:
        """(canonical name, addresses) of ``host`` for ``family``; raises socket.gaierror like the system."""
        import dns.exception
        import dns.resolver

        if isinstance(host, (bytes, bytearray)):
            host = bytes(host).decode("ascii")
        rdtypes = {socket.AF_INET: ["A"], socket.AF_INET6: ["AAAA"]}.get(family, ["A", "AAAA"])
        name, found, canonical, failures = host.rstrip("."), [], host.rstrip("."), []
        for rdtype in rdtypes:  # like glibc for AF_UNSPEC: A and AAAA, one failing is fine if the other answers
            try:
                target, addresses = self._query(name, rdtype)
            except (dns.resolver.NXDOMAIN, dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
                failures.append(exc)
                continue
            if addresses and not found:
                canonical = target
            found += addresses
        if not found and failures:
            if isinstance(failures[0], dns.resolver.NXDOMAIN):
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution") from failures[0]
        if not found:
            raise socket.gaierror(getattr(socket, "EAI_NODATA", socket.EAI_NONAME),
                                  "No address associated with hostname")
        return canonical, found

    def _query(self, name: str, rdtype: str) -> tuple[str, list[str]]:
        for _ in range(MAX_CNAME_DEPTH):
            answer = self.dns.resolve(name, rdtype, raise_on_no_answer=False, search=False)
            if answer.rrset is not None:  # dnspython follows a CNAME chain inside one answer
                return str(answer.canonical_name).rstrip("."), [r.address for r in answer.rrset]
            canonical = str(answer.canonical_name).rstrip(".")
            if canonical.lower() == name.lower():
                return name, []  # the name exists, without an address of this type
            name = canonical  # a CNAME whose target the server did not add: ask for the target
        return name, []


_installed: list[tuple[object, object]] = []  # (original getaddrinfo, original gethostbyname) stack


def install(server_port: int, suffixes=DEFAULT_SUFFIXES, address: str = "127.0.0.1"):
    """Wrap socket.getaddrinfo/gethostbyname in this process; returns a function that undoes it."""
    resolver = _Resolver(address, int(server_port), suffixes)
    original_getaddrinfo, original_gethostbyname = socket.getaddrinfo, socket.gethostbyname

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if not resolver.handles(host):
            return original_getaddrinfo(host, port, family, type, proto, flags)
        canonical, addresses = resolver.addresses(host, family)
        results = []
        for ip in addresses:
            ip_family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            for fam, socktype, prot, canonname, sockaddr in original_getaddrinfo(
                    ip, port, ip_family, type, proto, (flags | socket.AI_NUMERICHOST) & ~socket.AI_CANONNAME):
                results.append((fam, socktype, prot, canonical if flags & socket.AI_CANONNAME and not results
                                else "", sockaddr))
        return results

    def gethostbyname(host):
        if not resolver.handles(host):
            return original_gethostbyname(host)
        return resolver.addresses(host, socket.AF_INET)[1][0]

    socket.getaddrinfo, socket.gethostbyname = getaddrinfo, gethostbyname
    _installed.append((original_getaddrinfo, original_gethostbyname))

    def undo():
        if socket.getaddrinfo is getaddrinfo:
            socket.getaddrinfo, socket.gethostbyname = original_getaddrinfo, original_gethostbyname
        with contextlib.suppress(ValueError):
            _installed.remove((original_getaddrinfo, original_gethostbyname))

    return undo


@contextlib.contextmanager
def use_dns(server_port: int, suffixes=DEFAULT_SUFFIXES, address: str = "127.0.0.1"):
    """Within the block, names ending with ``suffixes`` resolve through the DNS server at address:port."""
    undo = install(server_port, suffixes, address)
    try:
        yield
    finally:
        undo()


def install_from_environment(environ=None):
    """The sitecustomize's entry: install from MSH_TEST_DNS ("ADDRESS:PORT") and MSH_TEST_DNS_SUFFIXES."""
    environ = os.environ if environ is None else environ
    server = environ.get(ENV_SERVER, "")
    if not server:
        return None
    address, _, port = server.rpartition(":")
    suffixes = [s.strip() for s in environ.get(ENV_SUFFIXES, "").split(",") if s.strip()] or DEFAULT_SUFFIXES
    return install(int(port), suffixes, address.strip("[]") or "127.0.0.1")


_site_dir: Path | None = None


def sitecustomize_dir() -> Path:
    """A folder holding the sitecustomize.py (written once per process, removed at exit)."""
    global _site_dir
    if _site_dir is None or not (_site_dir / "sitecustomize.py").exists():
        folder = Path(tempfile.mkdtemp(prefix="msh-test-dns-"))
        (folder / "sitecustomize.py").write_text(
            _SITECUSTOMIZE.format(env_server=ENV_SERVER, resolver=str(Path(__file__).resolve())))
        atexit.register(shutil.rmtree, folder, True)
        _site_dir = folder
    return _site_dir


def env_for_subprocess(server_port: int, suffixes=DEFAULT_SUFFIXES, address: str = "127.0.0.1",
                       environ=None) -> dict[str, str]:
    """Variables to add to a subprocess's environment so that it resolves the suffixes the same way.

    PYTHONPATH keeps the entries of ``environ`` (default: this process's environment), after ours.
    """
    environ = os.environ if environ is None else environ
    existing = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    folder = str(sitecustomize_dir())
    return {
        "PYTHONPATH": os.pathsep.join([folder] + [p for p in existing if p != folder]),
        ENV_SERVER: f"{address}:{int(server_port)}",
        ENV_SUFFIXES: ",".join(_suffixes(suffixes)),
    }
