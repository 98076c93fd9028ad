"""Local mode's facts (``read_facts``: the engine, our container, the native server, ./data, the cache)
and its plans (``make_up_plan``, ``make_down_plan``: pure, each change with its ``Op``)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ...core.errors import UserError
from ...core.plan import Plan
from .server import SERVER_UID, Folders, port_in_use, port_taken, url


@dataclass(frozen=True)
class ContainerFacts:
    name: str
    status: str  # running, exited, created, ...
    image_id: str  # the image it runs
    port: str | None  # MLFLOW_PORT in its environment


@dataclass
class LocalFacts:
    engine_at: str = ""  # where the engine is expected (DOCKER_HOST)
    engine_failure: str | None = None  # no engine answers: why (None: one does)
    engine_platform: str = ""  # the engine's own platform: what `inv up` builds for
    image_id: str | None = None  # v{version} on the engine; None: not built
    container: ContainerFacts | None = None  # ours (local_container), whatever its state
    native_pid: int | None = None  # the native server, when its pid file names a live MLflow
    native_port: str | None = None  # the port it was started on (None: unknown)
    stale_pid_file: bool = False  # a pid file whose server is gone
    port_taken: bool = False  # something answers on local_port
    folders: dict = field(default_factory=dict)  # ./data's backend, artifacts -> None (missing) or how
    #                                               many paths in it uid 1000 does not own (root only, else 0)
    ids: tuple = (SERVER_UID, SERVER_UID, SERVER_UID)  # this process's (euid, uid, gid)
    venv: str = ""  # native: the virtual environment's folder
    venv_ready: bool = False
    mlflow_pin: str = ""  # native: mlflow==X as docker/requirements.lock pins it

    @property
    def engine(self) -> bool:
        return self.engine_failure is None

    @property
    def root(self) -> bool:
        return self.ids[0] == 0


@dataclass(frozen=True)
class Op:
    """``build`` (``target``: the ref, for ``platform``), ``remove-container`` / ``stop-container``
    (``target``: its name), ``venv``, ``folder`` (``target``: the path; ``chown`` to uid 1000),
    ``run-container`` (``target``: the ref, as ``user``), ``start-native``, ``stop-native`` (``pid``),
    ``forget-pid`` (``target``: the pid file)."""

    kind: str
    target: str = ""
    platform: str = ""
    user: str | None = None
    chown: bool = False
    pid: int = 0


# --- facts ---------------------------------------------------------------------------------------
def read_facts(settings, engine, version=None) -> LocalFacts:
    """What is there (nothing is changed). ``engine``: a client, or None when none answers;
    ``version``: `inv up`'s (the image it runs, the native server's virtual environment), None for down."""
    from ...adapters import engine as engine_mod
    from . import container, native

    folders = Folders.of(settings)
    pid = native.native_pid(folders)
    facts = LocalFacts(engine_at=engine_mod.describe(), native_pid=pid, native_port=native.native_port(pid),
                       stale_pid_file=pid is None and folders.pid_file.exists(),
                       ids=(os.geteuid(), os.getuid(), os.getgid()))
    if engine is None:
        facts.engine_failure = engine_mod.last_failure or "no answer"
    else:
        found = container.get(engine, settings.local_container)
        if found is not None:
            env = dict(item.split("=", 1) for item in found.attrs["Config"].get("Env") or [] if "=" in item)
            facts.container = ContainerFacts(found.name, found.status, found.attrs.get("Image", ""),
                                             env.get("MLFLOW_PORT"))
    if version is None:
        return facts
    facts.port_taken = port_taken(settings)
    for folder in (folders.backend, folders.artifacts):
        chown_counted = engine is not None and facts.root and folder.is_dir()
        facts.folders[str(folder)] = (None if not folder.is_dir() else
                                      container.not_owned(folder) if chown_counted else 0)
    if engine is not None:
        ref = settings.image_ref(version.text)
        if engine_mod.has_image(engine, ref):
            facts.image_id = engine.images.get(ref).id
        else:
            facts.engine_platform = str(engine_mod.engine_platform(engine))
    else:
        venv = native.venv_dir(settings)
        facts.venv, facts.venv_ready, facts.mlflow_pin = str(venv), native.venv_ready(venv), native.mlflow_pin(settings)
    return facts


# --- plans (pure) --------------------------------------------------------------------------------
def make_up_plan(settings, facts: LocalFacts, version_text: str, require_docker: bool = False) -> Plan:
    """`inv up`: nothing when our server runs (the container with this image on this port, or the
    native one); else the container (the image built first when missing; ours replaced when it runs
    another image or is stopped), or without an engine the native server (its virtual environment
    created once), with ./data's folders made first. Refusals before any change: --docker without an
    engine (exit 4), --docker while the native server runs, the port taken by another program."""
    from ...adapters import engine as engine_mod
    from .container import user_for

    plan = Plan(f"local MLflow ({url(settings)})")
    folders = Folders.of(settings)
    if not facts.engine and require_docker:
        raise engine_mod.no_engine(facts.engine_at, facts.engine_failure)
    moved = facts.native_pid and facts.native_port not in (None, str(settings.local_port))
    if facts.native_pid:
        if facts.engine and require_docker:
            raise UserError(f"a native MLflow (pid {facts.native_pid}) already serves {folders.data}",
                            hint="stop it with `inv down`, then `inv up --docker`")
        if not moved:
            plan.reason = f"already running natively (pid {facts.native_pid}), no change"
            return plan
        if facts.port_taken:  # another program holds the new port: the running server is left as it is
            raise port_in_use(settings)
        plan.add("stop", f"native server (pid {facts.native_pid})",
                 f"it serves port {facts.native_port}, not {settings.local_port}; ./data is kept",
                 op=Op("stop-native", str(folders.pid_file), pid=facts.native_pid))
    ours = facts.container if facts.engine else None
    running = ours is not None and ours.status == "running"
    ref = settings.image_ref(version_text)
    if running and facts.image_id and ours.image_id == facts.image_id and ours.port == str(settings.local_port):
        plan.reason = f"already running in container {ours.name}, no change"
        return plan
    if facts.port_taken and not running:  # a running container of ours may hold it: replaced first
        raise port_in_use(settings)

    if facts.engine:
        if facts.image_id is None:
            plan.add("build", ref, f"from {settings.base_image}, for {facts.engine_platform} (the engine's own)",
                     op=Op("build", ref, platform=facts.engine_platform))
        if ours is not None:
            why = "it runs another image" if running and ours.image_id != facts.image_id else \
                "it serves another port" if running else f"it is {ours.status}"
            plan.add("replace", f"container {ours.name}", why, op=Op("remove-container", ours.name))
    elif not facts.venv_ready:
        plan.add("create", facts.venv, f"virtual environment with {facts.mlflow_pin}", op=Op("venv", facts.venv))

    chown = facts.engine and facts.root  # root gives ./data to the image's user
    for path, not_owned in facts.folders.items():
        if not_owned is None:
            plan.add("create", path, f"owned by uid {SERVER_UID}" if chown else "", op=Op("folder", path, chown=chown))
        elif chown and not_owned:
            plan.add("update", path, f"owner → uid {SERVER_UID} ({not_owned} paths)", op=Op("folder", path, chown=True))

    if facts.engine:
        user = user_for(*facts.ids)
        plan.add("run", f"container {settings.local_container}",
                 f"{ref}, host network, port {settings.local_port}, memory {settings.memory} MB"
                 + (f", as {user}" if user else ""), op=Op("run-container", ref, user=user))
    else:
        plan.add("start", "native MLflow server", f"port {settings.local_port}, pid in {folders.pid_file}",
                 op=Op("start-native"))
    return plan


def make_down_plan(settings, facts: LocalFacts) -> Plan:
    """`inv down`: stop and remove our container, stop the native server; ./data is kept."""
    folders = Folders.of(settings)
    plan = Plan("local MLflow")
    if facts.container is not None:
        plan.add("stop", f"container {facts.container.name}", "and remove it; ./data is kept",
                 op=Op("stop-container", facts.container.name))
    if facts.native_pid:
        plan.add("stop", f"native server (pid {facts.native_pid})", "./data is kept",
                 op=Op("stop-native", str(folders.pid_file), pid=facts.native_pid))
    elif facts.stale_pid_file:
        plan.add("delete", str(folders.pid_file), "its server is gone", op=Op("forget-pid", str(folders.pid_file)))
    if plan.empty:
        plan.reason = "not running, no change"
    return plan
