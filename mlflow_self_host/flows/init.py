"""`inv init`: ask for (or take as flags) the values that differ per homelab, check each, write settings.yaml.

The questions are the few settings every homelab sets (``QUESTIONS``); each is shown with its current
value (invoke.yaml's default, or settings.yaml's) as the answer Enter keeps, so a second run shows what
the first wrote. Without a terminal, a value not given as a flag keeps its current value.

Each answer is checked as it comes: its format by the setting's own check (core/settings.py ``CHECKS``,
through ``Settings.with_overrides``), then the service it names (``GROUPS``): the registry's ``/v2/``, the
Nomad leader, SSH to the host (an unknown host key is shown for acceptance: ``--yes`` accepts it without a
terminal), the DNS server, the proxy's name on it. On a terminal a failed check asks again; with flags
every failure is one red line per value and the run stops before writing: exit 2 for a bad format, else
the failing service's code (7: the registry).

Then settings.yaml gets the values that differ from invoke.yaml's defaults (the other keys the file
already had are kept), through the runner: its plan is the file's diff, ``--dry-run`` shows it only, and
the same answers again are "settings.yaml: no change". Last, doctor's table, as `inv doctor` shows it.
"""
from __future__ import annotations

import difflib
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..core.errors import ExitCode, UserError
from ..core.plan import Plan
from ..core.settings import USER_FILE, Settings, read_defaults, read_user, user_file_text

ANSWER = "your answer"  # the source named in a refusal of a typed answer

# (setting, flag, question) in the order they are asked.
QUESTIONS = (
    ("registry", "--registry", "Docker registry the image is pushed to (host:port)"),
    ("nomad_addr", "--nomad-addr", "Nomad HTTP API address"),
    ("host", "--host", "Nomad client that runs MLflow (SSH host)"),
    ("ssh_user", "--ssh-user", "SSH user on it (with sudo)"),
    ("dns_backend", "--dns-backend", "DNS backend: pihole or dnsmasq"),
    ("dns_server", "--dns-server", "DNS server that answers for your names ('-': the system's resolver)"),
    ("pihole_url", "--pihole-url", "Pi-hole's web address (https://IP or name)"),
    ("domain", "--domain", "the service's name (http://NAME/)"),
    ("dns_target", "--dns-target", "the proxy's name (Traefik), the name's CNAME target"),
    ("store", "--store", "tracking store: sqlite or postgres"),
)
FLAGS = {key: flag for key, flag, _ in QUESTIONS}
QUESTION = {key: question for key, _, question in QUESTIONS}


@dataclass
class Failure:
    keys: tuple[str, ...]  # the answers to ask again
    error: UserError


@dataclass
class Session:
    """How answers come: a terminal to ask on (``ask``), or none (flags and current values only)."""

    interactive: bool
    accept_key: bool  # --yes: accept an unknown SSH host key without asking
    ask: Callable[[str, str], str] = field(default=lambda question, current: current)
    confirm: Callable[[str], bool] = field(default=lambda question: False)
    dry_run: bool = False  # --dry-run: an accepted host key is not recorded either


# --- the checks of what an answer names (each returns what it found, or raises UserError) ----------
def _resolves(name: str, key: str, code: int = ExitCode.FAILED) -> None:
    host = name.strip("[]")
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        raise UserError(f"{key} {name}: the name does not resolve (unknown host name)",
                        hint=f"check the name, or use its IP address ({FLAGS.get(key, key)})", code=code) from None


def check_registry(settings: Settings, session: Session) -> str:
    from urllib.parse import urlsplit

    from ..adapters import registry

    _resolves(urlsplit(f"//{settings.registry}").hostname or settings.registry, "registry",
              ExitCode.REGISTRY_UNREACHABLE)
    return registry.ping(settings)


def check_nomad(settings: Settings, session: Session) -> str:
    from urllib.parse import urlsplit

    from ..adapters import nomad_api

    _resolves(urlsplit(settings.nomad_addr).hostname or "", "nomad_addr")
    try:
        leader = nomad_api.client(settings, timeout=10).status.leader.get_leader()
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - python-nomad's and requests' errors alike
        raise nomad_api.to_user_error(exc, settings, "reading the leader") from None
    if not leader:
        raise UserError(f"Nomad at {settings.nomad_addr} answers but has no leader",
                        hint="the servers have no quorum: `nomad server members`")
    return f"{settings.nomad_addr} answers (leader {leader})"


def check_ssh(settings: Settings, session: Session) -> str:
    from ..adapters import ssh

    _resolves(settings.host, "host")
    try:
        remote = ssh.connect(settings)
    except ssh.UnknownHostKeyError as exc:
        if not (session.accept_key or (session.interactive and session.confirm(
                f"{exc.message}: is that the host's fingerprint? Accept and record it in known_hosts"))):
            raise UserError(exc.message, hint="if that fingerprint is the host's, run again with --yes (or "
                            "answer y on a terminal)") from None
        if session.dry_run:  # recording the key is a change: a dry run only says it would
            return f"{exc.message}: would be accepted and recorded in known_hosts (dry run: not connected further)"
        remote = ssh.connect(settings.with_overrides({"accept_host_key": True}))
    try:
        remote.run("true", check=True)
    finally:
        remote.close()
    return f"SSH {settings.ssh_user}@{settings.host}:{settings.ssh_port} works"


def _server(settings: Settings) -> str:
    return f"{settings.dns_server}:{settings.dns_port}" if settings.dns_server else "the system resolver"


def check_dns_server(settings: Settings, session: Session) -> str:
    from ..adapters.dns import check

    if settings.dns_server:
        _resolves(settings.dns_server, "dns_server")
    check.resolve(settings, settings.dns_target)  # any answer (even "no such name") is an answer
    return f"{_server(settings)} answers"


def check_pihole(settings: Settings, session: Session) -> str:
    """Pi-hole's API answers at pihole_url, asked as `inv dns` asks it (the same TLS verification and
    certificate name: adapters/dns/pihole.py); any HTTP answer will do (the password is `inv dns`'s to check)."""
    if settings.dns_backend != "pihole":
        return "dnsmasq: edited over SSH on the host"
    import requests

    from ..adapters.dns import pihole
    from ..core.errors import connection_reason

    client = pihole.PiHole(settings)
    url = client.base
    try:
        client.http.get(f"{url}/info/login", timeout=10, verify=client.verify)
    except requests.exceptions.SSLError as exc:
        raise UserError(f"dns_backend pihole: {url} answers, but its TLS certificate is not trusted: "
                        f"{connection_reason(exc)}",
                        hint="set pihole_cafile to your Pi-hole's CA (/etc/pihole/tls_ca.crt on it), or "
                             "pihole_tls_server_name to the name its certificate has (settings.yaml)") from None
    except requests.exceptions.RequestException as exc:
        raise UserError(f"dns_backend pihole: the Pi-hole API at {url} does not answer: {connection_reason(exc)}",
                        hint="give your Pi-hole's address (--pihole-url https://192.168.1.2), or use "
                             "--dns-backend dnsmasq") from None
    return f"Pi-hole API answers at {url}"


def check_dns_target(settings: Settings, session: Session) -> str:
    from ..adapters.dns import check

    answer = check.resolve(settings, settings.dns_target)
    if answer.status != "ok" or not answer.addresses:
        raise UserError(f"dns_target {settings.dns_target}: {answer.describe()} on {_server(settings)}",
                        hint="give the proxy's name as your DNS server knows it (--dns-target), or add it there")
    return answer.describe()


def check_store(settings: Settings, session: Session) -> str:
    from ..core import console

    if settings.store == "postgres" and not settings.database_url:
        console.warn("store postgres: export MSH_DATABASE_URL (postgresql://user:password@host:5432/mlflow) "
                      "before `inv deploy`")
    return settings.store


# (the answers a check needs, the check) in order; a failed check asks its answers again.
GROUPS: tuple[tuple[tuple[str, ...], Callable[[Settings, Session], str]], ...] = (
    (("registry",), check_registry),
    (("nomad_addr",), check_nomad),
    (("host", "ssh_user"), check_ssh),
    (("dns_backend", "pihole_url"), check_pihole),
    (("dns_server",), check_dns_server),
    (("domain",), lambda settings, session: settings.domain),
    (("dns_target",), check_dns_target),
    (("store",), check_store),
)


# --- the file ---------------------------------------------------------------------------------------
def make_plan(path: str, current: str | None, wanted: str, same_values: bool) -> Plan:
    """Pure: write ``wanted`` at ``path`` unless the file's values are already those (its text aside)."""
    plan = Plan(USER_FILE)
    if current is not None and same_values:
        plan.reason = "no change"
        return plan
    diff = "".join(difflib.unified_diff((current or "").splitlines(keepends=True), wanted.splitlines(keepends=True),
                                        fromfile=f"{USER_FILE} (now)" if current is not None else "/dev/null",
                                        tofile=USER_FILE, n=2))
    plan.add("update" if current is not None else "create", path,
             "only the values that differ from invoke.yaml's defaults", diff=diff, op=wanted)
    return plan


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.msh-tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- asking ------------------------------------------------------------------------------------------
def _shown(key: str, value) -> str:
    return "-" if key == "dns_server" and not value else str(value)


def _typed(key: str, text: str) -> str:
    return "" if key == "dns_server" and text.strip() == "-" else text.strip()


def terminal_session(accept_key: bool) -> Session:
    from ..core import console

    def line() -> str:
        try:
            return input().strip()
        except (EOFError, OSError):  # end of input, or the terminal hung up
            raise UserError(f"the input ended before every value was answered: {USER_FILE} was not written",
                            hint="run `inv init` again, or give the values as flags (`inv --help init`)") from None

    def ask(question: str, current: str) -> str:
        console.err.print(f"[bold]{console.escape(question)}[/] [dim]\\[{console.escape(current)}][/]: ", end="")
        return line() or current

    def confirm(question: str) -> bool:
        console.err.print(f"[bold yellow]{console.escape(question)}?[/] [dim]\\[y/N][/]: ", end="")
        return line().lower() in ("y", "yes")

    return Session(True, accept_key, ask, confirm)


def init(root: Path, flags: dict, *, yes: bool = False, dry_run: bool = False, interactive: bool | None = None,
         session: Session | None = None) -> None:
    """`inv init`. ``flags``: {setting: value or None (not given)}."""
    from ..core import console
    from ..steps.runner import Step, run

    root, flags = Path(root), dict(flags)
    if interactive is None:
        interactive = sys.stdin.isatty()
    session = session or (terminal_session(yes) if interactive else Session(False, yes))
    session.dry_run = dry_run
    env_settings = Settings.load(root)  # what the tasks use now: the files, the environment
    current = Settings.load(root, env={})  # the files alone: invoke.yaml < settings.yaml
    answers: dict[str, str] = {key: _typed(key, value) for key, value in flags.items() if value is not None}

    def typed(keys) -> Settings:
        """The settings with the answers for ``keys`` (format-checked: exit 2 names the answer's source)."""
        given = {k: answers[k] for k in keys if k in answers}
        from_flags = {k: v for k, v in given.items() if flags.get(k) is not None}
        settings = env_settings.with_overrides(from_flags, FLAGS_NAMES) if from_flags else env_settings
        asked = {k: v for k, v in given.items() if flags.get(k) is None}
        return settings.with_overrides(asked, source=ANSWER) if asked else settings

    if session.interactive:
        console.info(f"inv init: the values of this homelab, written to {USER_FILE} (Enter keeps the value in "
                     "brackets)")

    def answer(key: str) -> None:
        """``answers[key]``: the flag, the typed answer or the current value, once its format passes."""
        question = QUESTION[key]
        pihole_unused = key == "pihole_url" and answers.get("dns_backend", current["dns_backend"]) != "pihole"
        while True:
            if session.interactive and flags.get(key) is None and not pihole_unused:
                answers[key] = _typed(key, session.ask(question, _shown(key, answers.get(key, current[key]))))
            answers.setdefault(key, current[key])
            try:
                typed([key])
                break
            except UserError as exc:
                if not session.interactive:
                    _refuse_all(exc, list(QUESTION), typed)
                console.error(exc.message, exc.hint)
                flags[key] = None  # a refused flag is asked again, with the current value as the default
                answers.pop(key)
        if env_settings.sources.get(key, "").startswith("env"):
            console.warn(f"{key}: {env_settings.sources[key]} ({env_settings[key]}) wins over {USER_FILE} "
                         "while it is set")

    # 1. without a terminal, every value's format first (exit 2 before any service is asked)
    if not session.interactive:
        for key in QUESTION:
            answer(key)
    # 2. each group's answers (on a terminal, asked now), then what they name answers
    failures: list[Failure] = []
    for keys, check in GROUPS:
        if session.interactive:
            for key in keys:
                answer(key)
        if check is check_dns_target and any("dns_server" in f.keys for f in failures):
            continue  # the DNS server did not answer: it cannot tell the proxy's name either
        while True:
            try:
                console.done(f"{', '.join(keys)}: {check(typed(list(answers)), session)}")
                break
            except UserError as exc:
                if not session.interactive:
                    failures.append(Failure(keys, exc))
                    break
                console.error(exc.message, exc.hint)
                for key in keys:  # asked again, the answer that failed as the default
                    flags[key] = None
                    answer(key)
    settings = typed(list(QUESTION))
    if failures:
        for failure in failures:
            console.error(failure.error.message, failure.error.hint)
        first = failures[0].error
        raise UserError(f"{len(failures)} of the values failed their check: {USER_FILE} was not written",
                        hint="fix them (the lines above say how) and run `inv init` again", code=first.code)

    # 3. the file: the answers that differ from the defaults, with the other keys the file had
    _, sections = read_defaults(root)
    defaults = Settings.load(root, env={}, user={})
    kept = read_user(root, sections)
    for key, _, _ in QUESTIONS:
        kept.pop(key, None)
        if settings[key] != defaults[key]:
            kept[key] = settings[key]
    path = root / USER_FILE
    existing = path.read_text() if path.exists() else None
    same = Settings.load(root, env={}, user=kept)._values == current._values
    wanted = user_file_text(kept, root)
    run([Step(USER_FILE, read=lambda: existing, plan=lambda text: make_plan(str(path), text, wanted, same),
              apply_one=lambda change: _write(path, change.op))], dry_run=dry_run)
    if dry_run:
        return
    if existing is None or not same:
        console.info(f"commit it: git add {USER_FILE} && git commit -m 'my settings'")

    # 4. doctor's table, on the settings the tasks now read
    from . import doctor

    try:
        doctor.doctor(Settings.load(root))
    except UserError as exc:
        console.warn(f"{exc.message}: the fix column says what is left to do")


# Flags whose name is not --{key}: none today (tasks.py names each flag after its setting).
FLAGS_NAMES = {key: flag for key, flag in FLAGS.items() if flag != f"--{key.replace('_', '-')}"}


def _refuse_all(first: UserError, keys: list[str], typed) -> None:
    """Without a terminal: one red line per answer of a bad format, then exit 2 (nothing written)."""
    from ..core import console

    bad = []
    for key in keys:
        try:
            typed([key])
        except UserError as exc:
            bad.append(exc)
    for exc in bad[:-1]:
        console.error(exc.message, exc.hint)
    last = bad[-1] if bad else first
    raise UserError(last.message, hint=f"{last.hint}; {USER_FILE} was not written" if last.hint else
                    f"{USER_FILE} was not written", code=ExitCode.BAD_ARGUMENT)
