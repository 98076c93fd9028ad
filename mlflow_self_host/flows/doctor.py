"""`inv doctor`: check every part the other tasks use, each a row with ✓/✗, what was found and the fix.

Checks run side by side, each in its own thread with a deadline (setting ``doctor_timeout``), so a
silent host or a firewalled port shows a red row instead of a hang. A check is a generator of rows
(``Row``); when it stops answering, the row it was working on turns red ("no answer within Ns") and
the rows after it are skipped. Exit 0 only when every row passes.
"""
from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import threading
from dataclasses import asdict
from typing import NamedTuple
from urllib.parse import urlsplit

from ..core.doctor_row import Row
from ..core.errors import UserError, connection_reason, first_line


NOT_CHECKED = "not checked"  # a row after a failed one in the same check


def _fail(name, found, fix):
    return Row(name, False, found, fix)


# --- the checks (each yields its rows in order) -------------------------------------------------
def check_version(settings):
    from ..core.version import read_version

    try:
        yield Row("version.txt", True, f"v{read_version(settings.root)}")
    except UserError as exc:
        yield _fail("version.txt", exc.message, exc.hint or "write a version such as 0.99 into version.txt")


def check_git(settings, timeout):
    git = shutil.which("git")
    if not git:
        yield _fail("git", "git is not installed", "sudo apt-get install git (release needs it)")
        return
    version = subprocess.run([git, "--version"], capture_output=True, text=True, timeout=timeout).stdout.strip()
    proc = subprocess.run([git, "-C", str(settings.root), "status", "--porcelain"], capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        yield _fail("git", f"{version}; {settings.root} is not a git repository",
                    "git init && git add -A && git commit (release commits and tags version.txt)")
        return
    changed = [line for line in proc.stdout.splitlines() if line.strip()]
    state = "tree clean" if not changed else f"{len(changed)} uncommitted or untracked (release needs --allow-dirty)"
    yield Row("git", True, f"{version.replace('git version ', 'git ')}; {state}")


def _docker(timeout):
    import docker

    return docker.from_env(timeout=max(1, int(_inner(timeout))))


def check_docker(settings, timeout):
    from ..adapters import engine

    where = engine.describe()
    try:
        info = _docker(timeout).version()
    except Exception as exc:  # noqa: BLE001 - any failure means: not reachable
        yield _fail("Docker engine", f"not reachable at {where}: {connection_reason(exc)}",
                    "start it (`sudo systemctl start docker`), join the docker group, or set DOCKER_HOST")
        return
    yield Row("Docker engine", True, f"Docker {info.get('Version', '?')} (API {info.get('ApiVersion', '?')}) at {where}")


def _registry_scheme(registry: str, timeout: float) -> tuple[str | None, str]:
    """('https'|'http'|None, what was seen) for GET /v2/ (200 or 401 both mean: a registry answers)."""
    import requests

    seen = ""
    for scheme in ("https", "http"):
        try:
            resp = requests.get(f"{scheme}://{registry}/v2/", timeout=_inner(timeout) / 2, verify=False)
        except requests.exceptions.SSLError as exc:
            seen = f"TLS error: {first_line(exc)}"
            continue
        except requests.exceptions.RequestException as exc:
            seen = connection_reason(exc)
            continue
        if resp.status_code in (200, 401):
            return scheme, f"HTTP {resp.status_code}"
        seen = f"{scheme}://{registry}/v2/ answered HTTP {resp.status_code}"
    return None, seen


def needs_insecure(registry: str, scheme: str | None) -> bool:
    """Docker allows plain HTTP only to 127.0.0.0/8 (and localhost) without configuration."""
    if scheme != "http":
        return False
    host = urlsplit(f"//{registry}").hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return True


def engine_allows_insecure(registry: str, docker_info: dict) -> bool:
    config = docker_info.get("RegistryConfig") or {}
    index = (config.get("IndexConfigs") or {}).get(registry)
    if index is not None and index.get("Secure") is False:
        return True
    host = urlsplit(f"//{registry}").hostname or ""
    try:
        address = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        return False
    return any(address in ipaddress.ip_network(cidr, strict=False)
               for cidr in config.get("InsecureRegistryCIDRs") or [])


def check_registry(settings, timeout):
    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    registry = settings.registry
    scheme, seen = _registry_scheme(registry, timeout)
    if scheme is None:
        yield _fail("registry", f"{registry}/v2/ does not answer: {seen}",
                    "start the registry, or set registry (MSH_REGISTRY) to host:port of yours")
        return
    yield Row("registry", True, f"{scheme}://{registry}/v2/ answers ({seen})")
    name = "insecure registry"
    if not needs_insecure(registry, scheme):
        why = "served over HTTPS" if scheme == "https" else "loopback: Docker allows plain HTTP"
        yield Row(name, True, f"not needed ({why})")
        return
    try:
        info = _docker(timeout).info()
    except Exception as exc:  # noqa: BLE001
        yield _fail(name, f"plain HTTP, not loopback: the engine must list it; cannot ask the engine "
                    f"({first_line(exc)})", "start the Docker engine, then run doctor again")
        return
    if engine_allows_insecure(registry, info):
        yield Row(name, True, "plain HTTP; the engine lists it in insecure-registries")
    else:
        yield _fail(name, "plain HTTP, not loopback, and not in the engine's insecure-registries",
                    f'add "insecure-registries": ["{registry}"] to /etc/docker/daemon.json (here and on the '
                    "Nomad client), then restart docker")


def check_ssh(settings, timeout):
    from ..adapters import ssh
    from ..adapters.shell import quote

    target = f"{settings.ssh_user}@{settings.host}:{settings.ssh_port}"
    try:
        remote = ssh.connect(settings)
        remote.run("true", check=True)
    except UserError as exc:
        yield _fail("SSH", f"{target}: {exc.message}", exc.hint or "check host, ssh_user, ssh_key, known_hosts")
        return
    except Exception as exc:  # noqa: BLE001
        yield _fail("SSH", f"{target}: {first_line(exc)}", "check host, ssh_port, ssh_user, ssh_key, known_hosts")
        return
    yield Row("SSH", True, target)
    try:
        remote.run("true", sudo=True, check=True)
    except UserError as exc:
        yield _fail("sudo", exc.message, exc.hint or "give the SSH user sudo rights on the host")
        return
    yield Row("sudo", True, "works" + (" (with MSH_SUDO_PASSWORD)" if settings.sudo_password else " (passwordless)"))
    config = settings.nomad_client_config
    if remote.exists(config, sudo=True):
        yield Row("client.hcl", True, config)
    else:
        yield _fail("client.hcl", f"{config} is missing", "install Nomad on the host, or set nomad_client_config")
    owner = settings.folder_owner
    result = remote.run(f"getent passwd {quote(owner)}", check=False)
    if result.exited == 0:
        uid = result.stdout.strip().split(":")[2] if result.stdout.count(":") >= 2 else "?"
        yield Row(f"user {owner}", True, f"exists (uid {uid})")
    else:
        yield _fail(f"user {owner}", "no such user on the host",
                    "install Nomad from its package (it creates the user), or set folder_owner")


def check_nomad(settings, timeout):
    from ..adapters import nomad_api

    address = nomad_api.address(settings)
    n = nomad_api.client(settings, timeout=_inner(timeout))
    try:
        leader = n.status.leader.get_leader()
    except Exception as exc:  # noqa: BLE001
        error = nomad_api.to_user_error(exc, settings, "reading the leader")
        yield _fail("Nomad agent", error.message, error.hint or "check nomad_addr / NOMAD_ADDR")
        return
    try:
        version = ((n.agent.get_agent().get("config") or {}).get("Version") or {}).get("Version")
    except Exception:  # noqa: BLE001 - agent:read is optional
        version = None
    yield Row("Nomad agent", True, f"{address}" + (f" (Nomad {version})" if version else ""))
    if leader:
        yield Row("Nomad leader", True, str(leader))
    else:
        yield _fail("Nomad leader", "no leader elected", "the servers have no quorum: `nomad server members`")
        return
    try:
        token = n.acl.get_self_token()
        yield Row("Nomad ACL token", True,
                  f"accepted: {token.get('Name') or 'unnamed'} ({token.get('Type', '?')}"
                  + (f", policies {', '.join(token.get('Policies') or [])}" if token.get("Policies") else "") + ")")
    except Exception as exc:  # noqa: BLE001
        code, text = nomad_api.status_and_text(exc)
        if code == 400 and "disabled" in text.lower():
            yield Row("Nomad ACL token", True, "ACLs are disabled: no token needed")
        elif not settings.nomad_token:
            yield _fail("Nomad ACL token", f"ACLs are enabled and no token is set ({text})",
                        "export NOMAD_TOKEN=<secret id> (a token with job and node read/write)")
            return
        else:
            yield _fail("Nomad ACL token", f"rejected ({text})",
                        "export a valid NOMAD_TOKEN (`nomad acl token self` shows yours)")
            return
    yield from datacenter_rows(settings, n)


def datacenter_rows(settings, n, follow: bool = True):
    """The datacenter row: the clients in the job's datacenters (cluster.in_datacenters, as deploy counts
    them); with ``follow`` and some found, the architecture and service provider rows after it."""
    from ..steps.job import cluster
    from ..adapters import nomad_api

    dc = settings.datacenter
    try:
        nodes = n.nodes.get_nodes() or []
    except Exception as exc:  # noqa: BLE001
        yield _fail(f"datacenter {dc}", f"cannot list client nodes: {nomad_api.status_and_text(exc)[1][:200]}",
                    "give the token node:read")
        return
    ours = [node for node in nodes if cluster.in_datacenters(settings, node)]  # as deploy reads them
    if ours:
        ready = sum(1 for node in ours if node.get("Status") == "ready")
        yield Row(f"datacenter {dc}", True, f"{len(ours)} client(s), {ready} ready")
        if follow:
            yield from _architectures(settings, n)
            yield from _service_provider(settings, n)
    else:
        known = sorted({node.get("Datacenter", "?") for node in nodes}) or ["none"]
        yield _fail(f"datacenter {dc}", f"no client in {dc} (datacenters: {', '.join(known)})",
                    "set datacenter (MSH_DATACENTER) to one of those, or the client's datacenter in its config")


def _architectures(settings, n):
    """The clients' architectures (cpu.arch, read per node), and whether v{version} in the registry runs
    on one the job can go to (what deploy checks before the push and the register)."""
    from ..steps.image import platform
    from ..adapters import registry
    from ..steps.job import cluster
    from ..core.version import read_version

    try:
        nodes = cluster.read(settings, n)
    except UserError as exc:
        yield _fail("client architecture", exc.message, exc.hint or "give the token node:read")
        return
    targets, why = cluster.targets(settings, nodes)
    found = cluster.describe(nodes, reasons=True)
    yield Row("client architecture", True, found + (f"; the job can go to {cluster.names(targets)} ({why})"
                                                    if targets else f"; {why}"))
    try:
        version = read_version(settings.root)
    except UserError:
        yield _fail("image architecture", f"{NOT_CHECKED}: version.txt failed", "")
        return
    ref = settings.image_ref(version.text)
    try:
        image = registry.platforms(settings, version.tag)
    except UserError as exc:
        yield _fail("image architecture", f"cannot read {ref}: {exc.message}", exc.hint or "see the registry row")
        return
    if image is None:
        choice = platform.wanted(settings, nodes=nodes)
        yield Row("image architecture", True, f"{ref} is not in the registry yet; `inv build` makes it for "
                                              f"{choice} ({choice.source})")
    elif not targets:
        yield Row("image architecture", True, f"{ref} is {platform.describe(image)} (no client to compare with)")
    elif cluster.image_fits(image, targets):
        yield Row("image architecture", True, f"{ref} is {platform.describe(image)}: runs on "
                                              f"{cluster.names(cluster.image_fits(image, targets))}")
    else:
        yield _fail("image architecture", f"{ref} is {platform.describe(image)}, but the clients the job can go to "
                                          f"are {cluster.describe(targets)}",
                    f"`inv build --platform {targets[0].platform}` then `inv push` (or `inv deploy`, which builds "
                    "for the clients); deploy refuses this image")


def _service_provider(settings, n):
    """Which catalogue the registered job's service is in (the user's proxy reads one), where deploy would
    put it, and whether the clients the job can go to have Consul (Nomad's ``consul.version`` attribute):
    a Consul service is only placed on such a client."""
    from ..steps.job import cluster, jobfile, service_provider

    try:
        job = jobfile.current(settings, n)
        nodes = cluster.read(settings, n)
        choice = service_provider.wanted(settings, nodes=nodes, n=n)
    except UserError as exc:
        yield _fail("service provider", exc.message, exc.hint or "give the token read-job and node:read")
        return
    running = service_provider.provider_of(job)
    fix = ""
    if not running:
        found = f"no job registered; deploy registers it in {choice.value} ({choice.source})"
    else:
        found = f"{running} (the {'stopped' if job.get('Stop') else 'running'} job)"
        if running == choice.value:
            found += f"; deploy keeps it there ({choice.source})"
        else:
            found += f"; deploy would move it to {choice.value} ({choice.source})"
            fix = (f"a proxy reading {running}'s catalogue no longer finds it after that: set "
                   f"service_provider={running} to keep it there")
    yield Row("service provider", True, found, fix)
    targets, why = cluster.targets(settings, nodes)
    shown = targets or nodes
    if not shown:
        yield Row("Consul on the client", True, f"no client to ask ({why})")
        return
    found = consul_answer(shown)
    if choice.value == "consul" and targets and not any(node.consul for node in targets):
        yield _fail("Consul on the client", f"{found}, but the service goes into Consul's catalogue "
                                            f"(service_provider: {choice.source}): Nomad cannot place the job",
                    "set service_provider=nomad (or auto) for Nomad's own catalogue, or run a Consul agent on the "
                    "client and restart Nomad")
        return
    yield Row("Consul on the client", True, found + ("" if targets else f" ({why})"))


def consul_answer(nodes) -> str:
    """'yes, 1.17.1' / 'no (Nomad found no Consul agent)' for one client; 'm700: yes, 1.17.1; pi4: no' for more."""
    def one(node):
        return f"yes, {node.consul}" if node.consul else "no"
    if len(nodes) == 1:
        return one(nodes[0]) if nodes[0].consul else "no (Nomad found no Consul agent: no consul.version attribute)"
    return "; ".join(f"{node.name}: {one(node)}" for node in nodes)


def check_client_docker(settings, timeout):
    """The Nomad client's Docker engine (the docker plugin's endpoint in client.hcl), and whether it can
    pull v{version} from the registry: its own insecure-registries, DNS and network, and credentials."""
    from ..adapters import client_docker, ssh
    from ..core.version import read_version

    engine_row, pull_row = f"Docker on {settings.host}", f"pull on {settings.host}"
    try:
        remote = ssh.connect(settings)
        plugin = client_docker.docker_plugin(remote.read(settings.nomad_client_config, sudo=True) or "")
    except UserError as exc:
        yield _fail(engine_row, f"{NOT_CHECKED}: SSH failed ({exc.message})", "")
        return
    endpoint = plugin.endpoint or client_docker.DEFAULT_ENDPOINT
    try:
        version = read_version(settings.root).text
    except UserError:
        version = "0"
    ref = settings.image_ref(version)
    probe = client_docker.probe(remote, endpoint, ref, _inner(timeout) / 2)
    if probe.error:
        yield _fail(engine_row, f"no Docker engine answers at {endpoint}: {probe.error}",
                    "install Docker there (`sudo apt-get install docker.io`) and start it, or set the docker "
                    "plugin's endpoint in client.hcl (plugin \"docker\" { config { endpoint = ... } })")
        return
    info = probe.version
    yield Row(engine_row, True, f"Docker {info.get('Version', '?')} at {endpoint} "
                                f"({info.get('Os', 'linux')}/{info.get('Arch', '?')})")
    registry, message = settings.registry, probe.message.lower()
    if probe.status == 200:
        found = ", ".join(f"{p.get('os')}/{p.get('architecture')}" for p in probe.answer.get("Platforms") or [])
        yield Row(pull_row, True, f"its engine reads {ref} from the registry" + (f" ({found})" if found else ""))
    elif probe.status == 404 or any(m in message for m in ("manifest unknown", "name unknown", "not found")):
        yield Row(pull_row, True, f"its engine reaches {registry} ({ref} is not pushed yet)")
    elif "http response to https client" in message or "tls handshake" in message:
        yield _fail(pull_row, f"the plain-HTTP registry {registry} is not in the insecure-registries of the "
                              f"engine on {settings.host} ({probe.message[:160]})",
                    f'on {settings.host} add "insecure-registries": ["{registry}"] to /etc/docker/daemon.json, '
                    "then `sudo systemctl restart docker`")
    elif any(m in message for m in ("unauthorized", "authentication required", "denied", "no basic auth")):
        if plugin.has_auth:
            source = f"config = {plugin.auth_config}" if plugin.auth_config else f"helper = {plugin.auth_helper}"
            yield Row(pull_row, True, f"{registry} wants credentials; Nomad's docker plugin has auth {{ {source} }}")
        else:
            yield _fail(pull_row, f"{registry} wants credentials, and Nomad's docker driver on {settings.host} has "
                                  "none (the job has no auth block)",
                        f"on {settings.host}: `sudo docker login {registry}`, then in client.hcl plugin \"docker\" "
                        "{ config { auth { config = \"/root/.docker/config.json\" } } } and restart nomad")
    else:
        yield _fail(pull_row, f"its engine cannot reach {registry}: {probe.message[:200]}",
                    f"check from {settings.host} that {registry} resolves and answers (DNS, firewall); the "
                    "registry setting must be an address the client can reach, not this machine's loopback")


def check_dns(settings, timeout):
    from ..adapters.dns import check

    domain = settings.domain
    try:
        answer = check.resolve(settings, domain)
    except UserError as exc:
        yield _fail("DNS server", exc.message, exc.hint or "check dns_server and dns_port")
        return
    yield Row("DNS server", True, f"{answer.server} answers")
    if answer.status != "ok" or not answer.addresses:
        yield _fail(f"DNS {domain}", answer.describe(), "`inv dns` adds the record")
    elif answer.chain and settings.dns_target and not answer.points_at(settings.dns_target):
        yield _fail(f"DNS {domain}", f"{answer.describe()} (not the proxy {settings.dns_target})",
                    "`inv dns` points it at dns_target")
    else:
        yield Row(f"DNS {domain}", True, answer.describe())


def check_service(settings, timeout):
    import requests

    from ..adapters import mlflow_http
    from ..core import auth
    from .deploy import deploy_url

    url = deploy_url(settings)  # the URL deploy checks: deploy_url, else http(s)://{domain}/
    try:  # as the admin when its password is set: with auth on, /version asks for credentials too
        resp = mlflow_http.get(settings, url + "version", timeout=_inner(timeout), auth=auth.basic(settings))
    except requests.exceptions.RequestException as exc:
        yield _fail("service URL", f"{url}: {connection_reason(exc)}",
                    "is the job healthy (`inv status`)? does the domain resolve here (see the DNS rows)?")
        return
    if resp.status_code == 403 and "host" in resp.text.lower():
        yield _fail("service URL", f"{url}: 403 {resp.text.strip()[:80]}",
                    "MLflow refuses this Host header: allow the domain (--allowed-hosts) in the job")
        return
    if resp.status_code != 200:
        yield _fail("service URL", f"{url}version answered HTTP {resp.status_code}",
                    "see `inv logs --stderr`; is the proxy routing the domain to the job?")
        return
    yield Row("service URL", True, f"{url} (MLflow {resp.text.strip()[:40]})")


def request_total(text: str, content_type: str = "") -> int | None:
    """The requests the server counted: the sum of ``mlflow_http_request_total`` in a /metrics page; 0 on a
    Prometheus page without it yet (a new server: its multiprocess registry shows a metric once it has a sample);
    None: not a Prometheus page."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("mlflow_http_request_total"):
            try:
                total += float(line.rsplit(" ", 1)[1])
                seen = True
            except (IndexError, ValueError):
                continue
    if seen:
        return int(total)
    prometheus = "version=0.0.4" in content_type or any(line.startswith("mlflow_") for line in text.splitlines())
    return 0 if prometheus else None


def check_metrics(settings, timeout):
    """The Prometheus endpoint (setting metrics), read through the URL deploy checks."""
    import requests

    from .deploy import deploy_url

    if not settings.metrics:
        yield Row("metrics", True, "off (setting metrics: false)")
        return
    from ..adapters import mlflow_http
    from ..core import auth

    url = deploy_url(settings) + "metrics"
    try:  # auth: basic guards /metrics too (a Prometheus scrape needs a user's basic_auth)
        resp = mlflow_http.get(settings, url, timeout=_inner(timeout),
                               auth=auth.basic(settings) if auth.enabled(settings) else None)
    except requests.exceptions.RequestException as exc:
        yield _fail("metrics", f"{url}: {connection_reason(exc)}", "see the service URL row")
        return
    total = request_total(resp.text, resp.headers.get("Content-Type", "")) if resp.status_code == 200 else None
    if total is None:
        yield _fail("metrics", f"{url} answered HTTP {resp.status_code}" + (" with no Prometheus metrics"
                                                                             if resp.status_code == 200 else ""),
                    "`inv deploy` (an image from before metrics, or MLFLOW_EXPOSE_PROMETHEUS off in the job); "
                    "or set metrics: false")
        return
    yield Row("metrics", True, f"{url}: {total} requests counted")


def check_auth(settings, timeout):
    """auth on or off, and, on, the admin logging in through the service URL (core/auth.py)."""
    import requests

    from ..adapters import mlflow_http
    from ..core import auth
    from .deploy import deploy_url
    from .deploy_plan import API_PATH

    url = deploy_url(settings)
    if not auth.enabled(settings):
        yield Row("auth", True, f"off (auth: none): anyone who reaches {url} may read, change and delete everything",
                  "set auth: basic and export MSH_MLFLOW_ADMIN_PASSWORD, then `inv deploy`")
        return
    try:
        auth.admin_password(settings)
    except UserError as exc:
        yield _fail("auth", exc.message, exc.hint or "")
        return
    try:
        open_ = mlflow_http.get(settings, url + API_PATH, timeout=_inner(timeout))
        logged = mlflow_http.get(settings, url + API_PATH, timeout=_inner(timeout), auth=auth.basic(settings))
    except requests.exceptions.RequestException as exc:
        yield _fail("auth", f"on; not checked: {url}: {connection_reason(exc)}", "see the service URL row")
        return
    if logged.status_code == 401:
        yield _fail("auth", f"on; the admin {settings.admin_username} cannot log in (HTTP 401)",
                    "MSH_MLFLOW_ADMIN_PASSWORD is not the admin's password: export the right one, or change it "
                    "with `inv users --set-password " + str(settings.admin_username) + "`")
    elif logged.status_code != 200:
        yield _fail("auth", f"on; {url}{API_PATH} answered HTTP {logged.status_code} to the admin",
                    "see `inv logs --stderr`")
    elif open_.status_code == 200:
        yield _fail("auth", f"{url} answers without credentials: the server runs without auth",
                    "`inv deploy` turns it on (auth: basic)")
    else:
        yield Row("auth", True, f"on; the admin {settings.admin_username} logs in, no credentials get HTTP "
                                f"{open_.status_code}")


CERTIFICATE_WARN_DAYS = 14  # the certificate row turns yellow (a fix to make, still passing) under this many days


def check_certificate(settings, timeout):
    """https only: the certificate the proxy shows for the domain (adapters/mlflow_http.py): subject, issuer, expiry;
    red when it does not verify with ca_file (or the system's CAs) for the name, or has expired; a fix (yellow)
    under CERTIFICATE_WARN_DAYS days."""
    from ..adapters import mlflow_http
    from .deploy import deploy_url

    url = deploy_url(settings)
    url = url if url.startswith("https://") else settings.service_url()
    try:
        cert = mlflow_http.certificate(settings, url, _inner(timeout))
    except (OSError, ValueError) as exc:
        yield _fail("certificate", f"{url}: {connection_reason(exc)}",
                    "does the proxy serve TLS there (a TLS entry point, traefik_tls_entrypoints)? see the service "
                    "URL row")
        return
    days = cert.days_left()
    found = f"{cert.subject}, by {cert.issuer}, until {cert.not_after:%Y-%m-%d} ({days} days left)"
    if cert.problem:
        yield _fail("certificate", f"{found}: refused ({cert.problem}), checked with {mlflow_http.trusted_by(settings)}",
                    "set ca_file to the PEM of the CA that signed it, or give Traefik a certificate for "
                    f"{settings.domain} (traefik_certresolver)")
    elif days < CERTIFICATE_WARN_DAYS:
        yield Row("certificate", True, found, f"it expires in {days} days: renew it (Traefik's ACME resolver renews "
                                              "30 days before; a certificate of your own CA: issue a new one)")
    else:
        yield Row("certificate", True, found)


def check_database(settings, timeout):
    """The PostgreSQL store's rows (only with store: postgres): mlflow_self_host/steps/store/health.py."""
    from ..steps.store import health

    yield from health.rows(settings, timeout)


def check_database_variable(settings, timeout):
    """store: postgres only: the Nomad Variable the job reads the database's URL from
    (mlflow_self_host/steps/store/health.py)."""
    from ..steps.store import health

    yield from health.variable_rows(settings, timeout)


def check_artifacts(settings, timeout):
    """store: postgres only: artifacts_path on shared storage when there are several allocations
    (mlflow_self_host/steps/store/health.py)."""
    from ..steps.store import health

    yield from health.artifacts_rows(settings, timeout)


def check_pg_dump(settings, timeout):
    """store: postgres only: the pg_dump the backups run here, of the server's major version or newer
    (mlflow_self_host/steps/backup/postgres.py)."""
    from ..steps.backup import postgres

    yield from postgres.doctor_rows(settings, timeout)


def check_backups(settings, timeout):
    """The age of the newest backup and of the last restore drill, red past backup_max_age_hours and
    drill_max_age_days (mlflow_self_host/steps/backup/drill.py)."""
    from ..steps.backup import drill

    yield from drill.doctor_rows(settings, timeout)


def check_nightly_backup(settings, timeout):
    """The nightly backup's periodic job: its schedule and its latest launch (steps/job/periodic.py)."""
    from ..steps.job import periodic

    yield periodic.nightly_row(settings)


def check_gc(settings, timeout):
    """gc on (gc_older_than): the periodic job's last run, what it removed or left (mlflow_self_host/steps/job/gc.py)."""
    from ..steps.job import gc

    yield from gc.doctor_rows(settings, timeout)


class Check(NamedTuple):
    names: list  # the rows it may give, in order ({folder_owner} and the like: settings)
    run: object  # the generator of rows
    wants_timeout: bool = True
    store: str | None = None  # only with this store setting (None: always)
    when: str | None = None  # only when this setting is true (None: always)


CHECKS = [
    Check(["version.txt"], check_version, False),
    Check(["git"], check_git),
    Check(["Docker engine"], check_docker),
    Check(["registry", "insecure registry"], check_registry),
    Check(["SSH", "sudo", "client.hcl", "user {folder_owner}"], check_ssh),
    Check(["Docker on {host}", "pull on {host}"], check_client_docker),
    Check(["Nomad agent", "Nomad leader", "Nomad ACL token", "datacenter {datacenter}", "client architecture",
           "image architecture", "service provider", "Consul on the client"], check_nomad),
    Check(["DNS server", "DNS {domain}"], check_dns),
    Check(["service URL"], check_service),
    Check(["metrics"], check_metrics),
    Check(["last backup", "last restore drill"], check_backups),
    Check(["nightly backup"], check_nightly_backup),
    Check(["auth"], check_auth),
    Check(["certificate"], check_certificate, when="https"),
    Check(["database", "database schema"], check_database, store="postgres"),
    Check(["database variable"], check_database_variable, store="postgres"),
    Check(["shared artifacts"], check_artifacts, store="postgres"),
    Check(["pg_dump"], check_pg_dump, store="postgres"),
    Check(["gc"], check_gc),
]


def _checks(settings) -> list[Check]:
    """CHECKS that apply to the store setting (and whose `when` setting, if any, is true: https)."""
    store = str(settings.store).strip().lower()
    gc_on = bool(str(settings.gc_older_than or "").strip())  # the gc row only when gc is on
    return [c for c in CHECKS if c.store in (None, store) and (c.when is None or settings[c.when])
            and (gc_on or c.run is not check_gc)]


# --- running them -----------------------------------------------------------------------------
def _run_one(settings, names, check, wants_timeout, timeout) -> list[Row]:
    rows: list[Row] = []
    failure: list[BaseException] = []

    def work():
        try:
            for row in (check(settings, timeout) if wants_timeout else check(settings)):
                rows.append(row)
        except BaseException as exc:  # noqa: BLE001 - reported as the row in progress
            failure.append(exc)

    thread = threading.Thread(target=work, daemon=True, name=f"doctor-{names[0]}")
    thread.start()
    thread.join(timeout)
    got = list(rows)
    done_names = {row.name for row in got}
    pending = [n for n in names if n not in done_names]
    if thread.is_alive():
        if pending:
            got.append(_fail(pending[0], f"no answer within {timeout:.0f}s",
                             "the service hangs or a firewall drops the packets; check it is up and reachable"))
            got += [_fail(n, f"{NOT_CHECKED}: {pending[0]} failed", "") for n in pending[1:]]
    else:
        if failure:
            exc = failure[0]
            message = exc.message if isinstance(exc, UserError) else first_line(exc)
            hint = exc.hint if isinstance(exc, UserError) else "run `inv --debug doctor` and report it"
            got.append(_fail(pending[0] if pending else names[-1], message, hint or ""))
        failed = next((row.name for row in got if not row.ok), None)
        got += [_fail(n, f"{NOT_CHECKED}: {failed} failed", "") for n in names if n not in {r.name for r in got}]
    return got


def run_checks(settings, timeout: float | None = None) -> list[Row]:
    """All rows, in the order of CHECKS; every check has its own deadline, all run side by side."""
    timeout = float(timeout or settings.doctor_timeout)
    checks = _checks(settings)
    names = [[n.format(**{k: settings[k] for k in ("folder_owner", "datacenter", "domain", "host")}) for n in names]
             for names, *_ in checks]
    results: list[list[Row]] = [[] for _ in checks]

    def one(i):
        _, check, wants_timeout, *_ = checks[i]
        results[i] = _run_one(settings, names[i], check, wants_timeout, timeout)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(checks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    return [row for rows in results for row in rows]


def doctor(settings, as_json: bool = False, timeout: float | None = None) -> list[Row]:
    """`inv doctor`: the table (or JSON); raises UserError (exit 1) when any row failed."""
    from ..core import console

    if as_json:
        rows = run_checks(settings, timeout)
        console.json({"ok": all(r.ok for r in rows), "checks": [asdict(r) for r in rows]})
    else:
        with console.err.status("checking…"):
            rows = run_checks(settings, timeout)
        _table(rows)
    failed = [r.name for r in rows if not r.ok and not r.found.startswith(NOT_CHECKED)]
    unchecked = sum(1 for r in rows if r.found.startswith(NOT_CHECKED))
    if failed or unchecked:
        raise UserError(f"{len(failed)} of {len(rows)} checks failed: {', '.join(failed)}"
                        + (f" ({unchecked} more not checked)" if unchecked else ""),
                        hint="the fix column says what to do")
    if not as_json:
        console.done(f"all {len(rows)} checks pass")
    return rows


def _table(rows: list[Row]) -> None:
    from rich.table import Table
    from rich.text import Text

    from ..core import console

    table = Table(title="inv doctor", title_justify="left")
    for column in ("", "check", "found", "fix"):
        table.add_column(column, overflow="fold")
    for row in rows:
        mark = Text("✓", style="green") if row.ok else Text("✗", style="bold red")
        table.add_row(mark, Text(row.name), Text(row.found), Text(row.fix, style="yellow"))
    console.out.print(table)


def _inner(timeout) -> float:
    """A library's own timeout: under the check's deadline, so the check can say why it failed."""
    return max(0.5, float(timeout) * 0.75)
