"""`inv restore BACKUP`: facts, a plan (pure), then ``runner.run`` (under the deploy lock on the host).

1. ``read_facts``: the host's SQLite tool; where the backup is (a name in backups_path, a path on the
   host, or a file on this machine, uploaded first) and its ``PRAGMA integrity_check``; whether the
   database is there; the registered job (is it stopped? which version runs?);
2. ``make_plan`` (no I/O): refuse a missing backup or one failing the check; else upload (a local
   file), stop the job (or local MLflow), keep the database aside (``mlflow.db.before-restore-{UTC}``),
   put the backup in its place with the original's owner and mode, start the job again (not when it
   was stopped before: it is left stopped) and wait until it is healthy;
3. ``runner.run`` with ``Apply.apply_one``, which reports nothing itself: the plan is shown
   before, "restored ..." after (stop, start and the wait say their own progress).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ...core import plan as plans
from ...core.errors import UserError
from ...core.plan import Plan
from . import commands
from .names import store_of, utc_stamp, version_of
from .target import Target, job_state, must, no_tool, run

_REFUSED_HINT = "refusing to restore it; pick another backup"


# --- facts ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RestoreFacts:
    tool: str | None  # python3, sqlite3 or None
    path: str  # the backup on the target (where an uploaded one goes)
    upload: str | None = None  # the file on this machine to upload there first
    integrity: str | None = None  # "ok", what the check found, or None: no such backup
    database: bool = True  # the database file is there (to keep aside)
    folder: bool = True  # the backups folder is there (for an upload)
    job_stopped: bool = False  # the job is registered but stopped (it is left so)
    running: str | None = None  # the version that runs now (version.txt's in local mode)


def read_facts(settings, target: Target, backup_arg: str) -> RestoreFacts:
    values, _ = commands.parse_facts(run(target, commands.restore_facts(target.db, target.backups)).stdout)
    tool = values.get("tool") if values.get("tool") in commands.TOOLS else None
    path, upload = _resolve(target, backup_arg)
    integrity = None
    if tool and upload:
        integrity = check_local_file(upload)
    elif tool:
        integrity = _check_on_target(target, commands.SQLite(tool), path)
    job_stopped, running = False, None
    if target.local:
        from ...core.version import read_version

        running = str(read_version(settings.root))
    else:
        job_stopped, running = job_state(settings)
    return RestoreFacts(tool, path, str(upload) if upload else None, integrity, values.get("db") == "yes",
                        values.get("folder") == "yes", job_stopped, running)


def _resolve(target: Target, backup_arg: str) -> tuple[str, Path | None]:
    """The backup's path on the target, and the local file to upload first (if it is one).

    A bare name is looked up in the backups folder, a path on the host; when the host has no such
    file but this machine does (``./backups/...`` from --download), that file is uploaded."""
    if target.local:
        path = Path(backup_arg).expanduser()
        if not path.is_absolute() and not path.exists():
            path = Path(target.backups) / backup_arg
        return str(path.resolve() if path.exists() else path), None
    on_host = backup_arg if "/" in backup_arg else f"{target.backups}/{backup_arg}"
    if run(target, commands.is_file(on_host)).ok:
        return on_host, None
    local = Path(backup_arg).expanduser()
    if local.is_file():  # a downloaded backup: uploaded into backups_path first
        return f"{target.backups}/{local.name}", local
    return on_host, None


def _check_on_target(target: Target, sqlite: commands.SQLite, path: str) -> str | None:
    result = run(target, sqlite.check(path))
    data = commands.parse_json(result.stdout)
    if data.get("error") == "missing":
        return None
    if not result.ok or "integrity" not in data:
        raise UserError(f"could not check {path} on {target.label}: {(result.stderr or result.stdout).strip()[-300:]}")
    return data["integrity"]


def check_local_file(path) -> str:
    """``PRAGMA integrity_check`` of a file on this machine: "ok" or what it found."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        rows = [r[0] for r in con.execute("PRAGMA integrity_check")]
        con.close()
    except sqlite3.DatabaseError as exc:
        rows = [str(exc)]
    return "ok" if rows == ["ok"] else "; ".join(str(r) for r in rows[:5])


# --- the plan -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    local: str
    path: str
    make_folder: str | None  # the backups folder to create first
    kind: str = "upload"


@dataclass(frozen=True)
class Stop:
    local: bool  # local MLflow (`inv down`), else the Nomad job
    kind: str = "stop"


@dataclass(frozen=True)
class KeepAside:
    db: str
    aside: str
    kind: str = "keep aside"


@dataclass(frozen=True)
class PutInPlace:
    backup: str
    db: str
    aside: str
    kind: str = "put in place"


@dataclass(frozen=True)
class Start:
    local: bool
    kind: str = "start"


def make_plan(settings, target: Target, facts: RestoreFacts, aside: str) -> Plan:
    """The changes of restoring ``facts.path`` on ``target``, the current database kept as ``aside``."""
    if facts.tool is None:
        raise no_tool(target.label)
    shown = facts.upload or facts.path
    if store_of(PurePosixPath(shown).name) == "postgres":
        raise UserError(f"{shown} is a backup of the PostgreSQL store (a pg_dump), and the store here is SQLite",
                        hint="pick a .db backup (`inv backup --list`), or set store: postgres to restore it there")
    if facts.integrity is None:
        raise UserError(f"no backup at {facts.path} on {target.label}",
                        hint="`inv backup` lists where backups go; give a file name in backups_path, a path on "
                             "the host, or a local file")
    if facts.integrity != "ok":
        raise UserError(f"{shown} fails the SQLite integrity check: {facts.integrity}", hint=_REFUSED_HINT)
    local = target.local
    plan = Plan(f"restore {facts.path} ({target.where})")
    if facts.upload:
        plan.add("push", facts.path, f"upload {facts.upload}",
                 op=Upload(facts.upload, facts.path, None if facts.folder else target.backups))
    if local:
        plan.add("stop", "local MLflow", "inv down", op=Stop(local=True))
    else:
        plan.add("stop", f"job {settings.job_name}", "and wait until its allocations stopped", op=Stop(local=False))
    # Always: a -wal/-shm/-journal left without its database must not meet the restored file (SQLite
    # would replay an old WAL into it), and a database that appeared meanwhile is kept, not overwritten.
    detail = (f"kept aside as {PurePosixPath(aside).name}" if facts.database
              else f"none there now; any left (or its -wal/-shm/-journal) kept aside as {PurePosixPath(aside).name}")
    plan.add("move", target.db, detail, op=KeepAside(target.db, aside))
    plan.add("create", target.db, f"copy of {PurePosixPath(facts.path).name}, owner and mode as the original",
             op=PutInPlace(facts.path, target.db, aside))
    if local:
        plan.add("start", "local MLflow", "inv up, wait healthy", op=Start(local=True))
    elif not facts.job_stopped:
        plan.add("start", f"job {settings.job_name}", "and wait until healthy", op=Start(local=False))
    return plan


def other_version_warning(path: str, running: str | None) -> str | None:
    """A backup taken under another version: the server migrates it on start (or cannot, if newer)."""
    taken = version_of(PurePosixPath(path).name)
    if taken and running and taken != running:
        return (f"this backup was taken under v{taken}; v{running} will run it "
                "(the image migrates an older schema on start; an older MLflow cannot open a newer one)")
    return None


# --- applying it ----------------------------------------------------------------------------------
@dataclass
class Apply:
    """Makes one restore's changes on ``target``; the job as the stop left it is kept for the start."""

    settings: object
    target: Target
    aside: str
    version: object = None  # local mode: the version `inv up` starts
    job: dict | None = None  # the job as it was before the stop
    nomad: object = None
    paused: object = None  # steps/job/periodic.Paused: the nightly backup and gc never run during a restore

    def apply_one(self, change):
        op, settings = change.op, self.settings
        if op.kind == "upload":
            upload(self.target, op.local, op.path, op.make_folder)
            return plans.QUIET
        if self.paused is not None:
            self.paused.now()
        if op.kind == "stop":
            if op.local:
                from .. import local as local_mode

                local_mode.down(settings)
                return plans.QUIET
            from ..job import lifecycle
            from ...adapters import nomad_api

            self.nomad = nomad_api.client(settings)
            self.job = lifecycle.stop(settings, self.nomad)
            return plans.QUIET
        if op.kind == "keep aside":
            must(self.target, commands.keep_aside(op.db, op.aside), "keeping the database aside")
            return plans.QUIET
        if op.kind == "put in place":
            must(self.target, commands.put_in_place(op.backup, op.db, op.aside), "putting the backup in place")
            # auth: basic: MLflow's users (basic_auth.db) from the backup's copy beside it, when it has one
            must(self.target, commands.with_auth_copy(op.backup, op.db, op.aside), "putting MLflow's users in place")
            return plans.QUIET
        if op.kind == "start":
            self._start(op)
            return plans.QUIET
        raise ValueError(f"unknown restore op {op.kind!r}")

    def _start(self, op: Start) -> None:
        settings = self.settings
        if op.local:
            from .. import local as local_mode
            from ...core.version import read_version

            local_mode.up(settings, self.version or read_version(settings.root))
            return
        from ..job import follow, lifecycle

        response = lifecycle.start(settings, self.nomad, self.job)
        try:
            outcome = follow.after_submit(settings, self.nomad, response, f"job {settings.job_name}")
            if outcome.status != "successful":  # no update block, so no deployment to follow
                lifecycle.wait_running(settings, self.nomad, outcome.job_version)
        except UserError as exc:
            raise UserError(f"after the restore: {exc.message}",
                            hint=f"the previous database is kept as {self.aside}: `inv restore {self.aside}` puts it "
                                 "back; `inv logs --stderr` shows why MLflow failed", code=exc.code) from None


def upload(target: Target, local, path: str, make_folder: str | None = None) -> None:
    """Copy a backup on this machine to ``path`` on the target (mode 0640, root's on the host), creating the
    backups folder first when ``make_folder`` names it."""
    if make_folder:
        must(target, commands.make_folder(make_folder), f"creating {make_folder}")
    target.shell.put(str(local), path, mode="0640", sudo=True)


def restore(settings, backup_arg: str, local: bool = False, dry_run: bool = False, version=None):
    """`inv restore BACKUP` through the runner, under the deploy lock on the host (a dry run only checks it
    is free): refuse a backup failing integrity_check; else stop, swap, start, wait. With store: postgres
    (not --local), steps/backup/postgres.py's restore: stop, replace in one transaction, start."""
    import dataclasses

    from ...core import console
    from ...core import database
    from .. import runner

    if not local and database.kind(settings) == "postgres":
        from . import postgres

        return postgres.restore(settings, backup_arg, dry_run=dry_run)

    target = Target.on_this_machine(settings) if local else Target.remote(settings)
    with target:
        # The refusals (no backup, a corrupt one, no SQLite tool) come before anything, the lock included.
        facts = read_facts(settings, target, backup_arg)
        aside = f"{target.db}.before-restore-{utc_stamp()}"
        make_plan(settings, target, facts, aside)
        warning = other_version_warning(facts.path, facts.running)
        if warning:
            console.warn(warning)
        read: list[RestoreFacts] = []

        def under_the_lock() -> RestoreFacts:
            """Whether the job is stopped, asked again under the lock: the start depends on it."""
            now = facts
            if not local and not dry_run:
                job_stopped, running = job_state(settings)
                now = dataclasses.replace(facts, job_stopped=job_stopped, running=running)
            read.append(now)
            return now

        from ..job import periodic

        applying = Apply(settings, target, aside, version, paused=None if local else periodic.Paused(settings))
        step = runner.Step("restore", read=under_the_lock, plan=lambda now: make_plan(settings, target, now, aside),
                           apply_one=applying.apply_one)
        lock = None if local else runner.Lock(settings, f"restore {PurePosixPath(facts.path).name}")
        outcome = runner.run([step], dry_run=dry_run, lock=lock, inside=applying.paused)
    if dry_run:
        return outcome.plans["restore"]
    if not local and read[0].job_stopped:
        console.warn(f"job {settings.job_name} was stopped before the restore: left stopped")
    console.done(f"restored {read[0].path}; the previous database is kept as {aside}")
    return aside


def _facts_now(target: Target, name: str) -> RestoreFacts:
    """The backup ``name`` (in backups_path, or a path on the host) and its integrity, with the job stopped."""
    values, _ = commands.parse_facts(run(target, commands.restore_facts(target.db, target.backups)).stdout)
    tool = values.get("tool") if values.get("tool") in commands.TOOLS else None
    path = name if "/" in name else f"{target.backups}/{name}"
    integrity = _check_on_target(target, commands.SQLite(tool), path) if tool else None
    return RestoreFacts(tool, path, integrity=integrity, database=values.get("db") == "yes", job_stopped=True)


def check_now(settings, name: str, remote=None) -> None:
    """What ``restore_now`` refuses, refused before the caller stops the job (as `inv restore` checks before its
    stop): SQLite, the backup's ``PRAGMA integrity_check`` on the host; PostgreSQL, the dump's ``pg_restore
    --list``. A missing or failing backup: a UserError. Changes nothing."""
    from ...core import database

    if database.kind(settings) == "postgres":
        from . import postgres

        postgres.check_now(settings, name, remote=remote)
        return
    target = Target.remote(settings, remote)
    try:
        make_plan(settings, target, _facts_now(target, name), f"{target.db}.before-restore-check")
    finally:
        if remote is None:  # our own connection; the caller's stays open
            target.shell.close()


def restore_now(settings, name: str, remote=None) -> str:
    """Put the backup ``name`` (a name in backups_path, or a path on the host) back as the store's database now:
    the changes of `inv restore` without the runner, the deploy lock (the caller holds it: deploy's apply) or
    the job's stop and start (the caller stopped it and starts what it wants). SQLite: the database kept aside
    (returned: its path) and the backup put in place, over ``remote`` (deploy's SSH connection) when given;
    PostgreSQL: the dump restored in one transaction (a failure leaves the database as it was; returns "").
    A missing or failing backup is a UserError before anything changes; a failure while swapping SQLite's file
    moves the database back when it can, and sets ``database_unchanged`` on the UserError (False: it is not as
    it was)."""
    from ...core import database

    if database.kind(settings) == "postgres":
        from . import postgres

        postgres.restore_now(settings, name, remote=remote)
        return ""
    target = Target.remote(settings, remote)
    try:
        facts = _facts_now(target, name)
        aside = f"{target.db}.before-restore-{utc_stamp()}"
        applying = Apply(settings, target, aside)
        for change in make_plan(settings, target, facts, aside):
            if change.op.kind in ("keep aside", "put in place"):
                try:
                    applying.apply_one(change)
                except UserError as exc:  # the database moved back when it is not in its place; said on exc
                    undone = run(target, commands.undo_keep_aside(target.db, aside))
                    exc.database_unchanged = undone.ok and undone.stdout.strip().endswith("unchanged")
                    raise
        return aside
    finally:
        if remote is None:  # our own connection; the caller's stays open
            target.shell.close()
