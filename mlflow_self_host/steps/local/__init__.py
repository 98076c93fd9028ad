"""Local mode: ``inv up`` / ``inv down``, a MLflow on this machine with its data in ./data.

With a Docker engine: the image (built if needed) runs with host networking on ``local_port``, with
``./data/backend`` and ``./data/artifacts`` mounted (container.py). Without one: the same entrypoint
runs natively from a virtual environment with the same pinned MLflow, created once under ~/.cache, in
the background with a pid file (native.py). Both use the same folders, so data moves freely between
the two.

As every area that changes something: facts (facts.read_facts: the engine, our container and its
image, the native server's pid, the folders, the port), a pure plan (facts.make_up_plan / make_down_plan, an
empty one says why: "already running in container mlflow-local"), then ``runner.run`` with
``Apply.apply_one``. A dry run is the plan shown.
"""
from __future__ import annotations

from ...core import console
from ...core import plan as plans
from .native import VENV_MARKER, cache_dir, ensure_venv, mlflow_pin, requirements_file, venv_dir
from .server import HEALTH_TIMEOUT, LOG_FILE, PID_FILE, SERVER_UID, Folders, healthy, server_env, url
from .facts import LocalFacts, Op, make_down_plan, make_up_plan, read_facts

__all__ = ["up", "down", "Apply", "read_facts", "make_up_plan", "make_down_plan", "LocalFacts", "Op", "Folders", "url",
           "healthy", "server_env", "ensure_venv", "venv_dir", "mlflow_pin", "requirements_file", "cache_dir",
           "VENV_MARKER", "HEALTH_TIMEOUT", "LOG_FILE", "PID_FILE", "SERVER_UID"]


def up(settings, version, require_docker: bool = False, dry_run: bool = False, auth: bool = False) -> str:
    """Start the local MLflow (container, or natively without an engine); returns its URL. ``auth``: with
    MLflow's logins (the admin's password checked first); without, open on 127.0.0.1."""
    from ...adapters import engine as engine_mod
    from ...core import auth as auth_mod

    from .. import runner

    if auth:
        settings = settings.with_overrides({"local_auth": True})
        auth_mod.admin_password(settings)  # refused before anything starts
    engine = engine_mod.client(required=False)

    def plan(facts) -> plans.Plan:
        made = make_up_plan(settings, facts, version.text, require_docker)
        if not facts.engine and not facts.native_pid:
            console.warn(f"no Docker engine at {facts.engine_at} ({facts.engine_failure}): "
                         "running MLflow natively instead (`inv up --docker` requires the engine)")
        return made

    runner.run([runner.Step("up", read=lambda: read_facts(settings, engine, version), plan=plan,
                            apply_one=Apply(settings, version, engine).apply_one)], dry_run=dry_run)
    if not dry_run:
        console.result(url(settings))
    return url(settings)


def down(settings, dry_run: bool = False) -> None:
    """Stop the local MLflow (container and/or native server); ./data is kept."""
    from ...adapters import engine as engine_mod

    from .. import runner

    engine = engine_mod.client(required=False)
    runner.run([runner.Step("down", read=lambda: read_facts(settings, engine),
                            plan=lambda facts: make_down_plan(settings, facts),
                            apply_one=Apply(settings, None, engine).apply_one)], dry_run=dry_run)


class Apply:
    """Makes one change of a local plan (its ``Op``) with ``version``'s image on ``engine`` (None: none
    answers); the start and stop changes say what they did."""

    def __init__(self, settings, version, engine):
        self.settings, self.version, self.engine = settings, version, engine

    def apply_one(self, change):
        from pathlib import Path

        from . import container, native
        from .server import check_port_free

        settings, version, engine, op = self.settings, self.version, self.engine, change.op
        folders = Folders.of(settings)
        if op.kind == "build":
            from ..image import build as image_build
            from ..image.platform import Platform

            console.info(f"{op.target} is not built yet: building it")
            image_build.build_image(settings, version, Platform.parse(op.platform),
                                    "the engine's own: `inv up` runs it here")
            return plans.QUIET  # build_image says what it built
        if op.kind == "remove-container":
            container.remove(engine, op.target)
        elif op.kind == "venv":
            native.ensure_venv(settings)
            return plans.QUIET  # it says what it created
        elif op.kind == "folder":
            container.prepare_folder(Path(op.target), op.chown)
        elif op.kind == "run-container":
            check_port_free(settings)  # a container replaced just now held it, or another program took it since
            return container.run(engine, settings, folders, op.target, op.user)
        elif op.kind == "start-native":
            check_port_free(settings)
            return native.start(settings, folders)
        elif op.kind == "stop-container":
            container.remove(engine, op.target, stop=True)
            return f"stopped container {op.target}; data kept in {folders.data}"
        elif op.kind == "stop-native":
            native.stop(op.pid)
            folders.pid_file.unlink(missing_ok=True)
            return f"stopped native server (pid {op.pid}); data kept in {folders.data}"
        elif op.kind == "forget-pid":
            Path(op.target).unlink(missing_ok=True)
        else:
            raise ValueError(f"unknown local op {op.kind!r}")
        return None
