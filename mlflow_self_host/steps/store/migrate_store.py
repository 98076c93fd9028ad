"""`inv migrate-store --to postgres`: the SQLite store copied into an empty PostgreSQL database.

1. facts (``Task.read_copy``, no side effect): the target (reachable? any table in its schema? which
   revision?) and a consistent copy of the SQLite store (SQLite's online backup of ``--from PATH`` into a
   temporary folder, or of the backup of the Nomad client's mlflow.db the backup step took): its
   revision, tables and row counts. The store itself is only read;
2. the plan (``make_plan``, pure): refuses a target that is not empty and a store MLflow cannot
   read (before anything changes), else: the copy's schema upgraded to the image's head (on the copy),
   MLflow's schema created in the target at that head, every table copied in foreign-key order with
   the sequences reset, row counts and checksums compared per table, then ``store: postgres`` in
   settings.yaml (the user's file; invoke.yaml keeps the defaults);
3. ``runner.run`` runs three steps, each read, planned and applied in turn: the worker's environment
   (created once), the backup of the Nomad client's store (without --from: `inv backup --download`'s
   code), the copy. ``--dry-run`` shows the three plans (with --from it lists the tables and row counts
   it would copy) and creates nothing, takes no backup; else each is applied change by change. A failure after the schema was created drops what
   this run created (the target was empty), so the target is empty again; settings.yaml is switched
   only when every table checks out.

The copy must not lose writes: a Nomad job that still runs is refused (stop it first: `nomad job stop`),
since a server writing to the SQLite file during the copy would write rows PostgreSQL never gets.

The work on the databases is done by ``worker.py`` with the image's MLflow (its alembic migrations make
the schema), SQLAlchemy and psycopg2: the native server's environment made from the image's lock
(``local.ensure_venv``), so this works on any machine with Python, whatever the image's platform.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ...core.errors import ExitCode, UserError
from ...core.plan import QUIET, Plan
from ...core import database

WORKER = Path(__file__).with_name("worker.py")


@dataclass(frozen=True)
class Op:
    kind: str  # venv, backup (their own steps); upgrade, schema, copy, check, switch


@dataclass
class Source:
    """The SQLite copy the tables are read from (never the store itself)."""

    path: str  # the copy
    origin: str  # what it is a copy of, for the user
    revision: str | None
    counts: dict  # table -> rows
    parents: dict  # table -> tables it refers to
    unread: bool = False  # a dry run on the Nomad client's store: the backup it would be read from is not taken


@dataclass
class Target:
    url: str
    reachable: bool
    reason: str = ""
    tables: list = field(default_factory=list)
    revision: str | None = None
    server: str = ""
    unread: bool = False  # a dry run before the worker environment exists: not read


@dataclass
class Facts:
    source: Source
    target: Target
    revisions: tuple  # the image's MLflow's schema revisions, oldest first (steps/migrate/schema.py)
    mlflow_version: str
    store: str  # the store setting now
    store_source: str  # where it came from (invoke.yaml, settings.yaml, env MSH_STORE)
    settings_file: Path

    @property
    def head(self) -> str:
        return self.revisions[-1]


# --- facts ---------------------------------------------------------------------------------------
def snapshot(path: Path, folder: Path) -> Path:
    """A consistent copy of the SQLite file ``path`` in ``folder`` (SQLite's online backup, then
    ``PRAGMA integrity_check``); ``path`` is opened read-only."""
    if not path.is_file():
        raise UserError(f"no SQLite store at {path}", hint="--from takes the path of an mlflow.db on this machine "
                        "(e.g. a backup downloaded with `inv backup --download`)")
    copy = folder / "mlflow.db"
    try:
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
            rows = [r[0] for r in target.execute("PRAGMA integrity_check")]
        finally:
            target.close()
            source.close()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path} cannot be read as an SQLite database: {exc}", code=ExitCode.STORE_REFUSED) from None
    if rows != ["ok"]:
        raise UserError(f"{path} fails PRAGMA integrity_check: {'; '.join(map(str, rows[:3]))}",
                        hint="nothing was changed; copy from a good backup (`inv backup` lists them)",
                        code=ExitCode.STORE_REFUSED)
    return copy


def read_source(copy: Path, origin: str) -> Source:
    """Tables, row counts and foreign keys of the SQLite copy (stdlib, read-only)."""
    con = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        names = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        counts = {n: con.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
        parents = {n: sorted({r[2] for r in con.execute(f'PRAGMA foreign_key_list("{n}")')} - {n}) for n in names}
        revision = None
        if "alembic_version" in names:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
    finally:
        con.close()
    return Source(str(copy), origin, revision, counts, parents)


def run_worker(python: Path, url: str, op: str, *args: str, timeout: float = 1800) -> dict:
    """Run one worker operation with the URL in its environment; its JSON answer (``error`` on failure),
    every trace of the password taken out."""
    env = dict(os.environ, MSH_DATABASE_URL=database.sqlalchemy_url(url), PYTHONUNBUFFERED="1")
    try:
        done = subprocess.run([str(python), str(WORKER), op, *args], capture_output=True, text=True,
                              env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": op, "reason": f"no answer after {timeout:.0f}s"}
    for line in reversed(done.stdout.strip().splitlines()):
        try:
            data = json.loads(database.hide(line, url))
            break
        except ValueError:
            continue
    else:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        data = {"error": op, "reason": database.hide(lines[-1] if lines else f"exit {done.returncode}", url)}
    if done.returncode != 0 and "error" not in data:
        data = {"error": op, "reason": f"exit {done.returncode}"}
    return data


def read_target(python: Path, url: str, timeout: float = 60) -> Target:
    data = run_worker(python, url, "target", timeout=timeout)
    if "error" in data:
        return Target(url, False, data.get("reason", ""))
    return Target(url, True, tables=data["tables"], revision=data.get("revision"), server=data.get("server", ""))


def settings_file(settings) -> Path:
    from ...core.settings import USER_FILE

    return Path(settings.root) / USER_FILE


# --- the plan (pure) -----------------------------------------------------------------------------
def copy_order(parents: dict) -> list[str]:
    """Tables parents first (alphabetical among equals); alembic_version is made by the schema step."""
    order, done = [], set()
    todo = sorted(t for t in parents if t != "alembic_version")
    while todo:
        ready = [t for t in todo if all(p in done or p not in parents for p in parents[t])] or todo[:1]  # a cycle
        for t in ready:
            order.append(t)
            done.add(t)
        todo = [t for t in todo if t not in done]
    return order


_TARGET_UNREAD = ("the target is read (reachable, empty) once the worker environment exists: "
                  "this dry run did not create it")


def refuse_target(target: Target) -> None:
    """An unreachable target (exit 1) or one that is not empty (exit 15), before anything changes."""
    if target.unread:
        return
    shown = database.shown_url(target.url)
    if not target.reachable:
        host, port, name = database.endpoint(target.url)
        raise UserError(f"cannot reach the PostgreSQL database {shown}: {target.reason}",
                        hint=f"check that PostgreSQL runs on {host} and listens on port {port} (listen_addresses, "
                             f"pg_hba.conf for this machine), that database {name} exists, and the user and "
                             "password in MSH_DATABASE_URL; nothing was changed")
    if target.tables:
        listed = ", ".join(target.tables[:5]) + (", …" if len(target.tables) > 5 else "")
        raise UserError(f"the target database {shown} is not empty: {len(target.tables)} table"
                        f"{'s' if len(target.tables) != 1 else ''} ({listed}); nothing was changed",
                        hint="migrate-store copies only into an empty database: create a new one "
                             "(`createdb -O USER DATABASE`) or drop its tables",
                        code=ExitCode.STORE_REFUSED)


def make_plan(facts: Facts) -> Plan:
    """Refuse (UserError) what cannot be migrated, before any change; else the changes, in order."""
    shown = database.shown_url(facts.target.url)
    refuse_target(facts.target)
    source = facts.source
    if source.unread:
        result = Plan(f"migrate-store sqlite → postgres {shown}")
        result.add("create", shown, f"MLflow {facts.mlflow_version}'s schema at revision {facts.head}", op=Op("schema"))
        result.add("copy", shown, "every table of that backup, in foreign-key order; sequences reset", op=Op("copy"))
        result.add("check", shown, "row count and checksum of every table on both sides", op=Op("check"))
        result.add("update", str(facts.settings_file), f"store: {facts.store} → postgres (when every table checks out)",
                   op=Op("switch"))
        result.notes.append("the tables and row counts are read from the backup: `inv backup --download`, then "
                            "`inv migrate-store --to postgres --from backups/NAME --dry-run` lists them")
        if facts.target.unread:
            result.notes.append(_TARGET_UNREAD)
        return result
    if source.revision is None:
        raise UserError(f"{source.origin} is not an MLflow store (no alembic_version revision); nothing was changed",
                        code=ExitCode.STORE_REFUSED)
    if source.revision not in facts.revisions:
        raise UserError(f"{source.origin} is at schema revision {source.revision}, which MLflow "
                        f"{facts.mlflow_version} does not know (written by a newer MLflow); nothing was changed",
                        hint="upgrade the image's MLflow (docker/requirements*.txt, `inv deps`) first",
                        code=ExitCode.STORE_REFUSED)
    tables = copy_order(source.parents)
    rows = sum(source.counts[t] for t in tables)
    result = Plan(f"migrate-store sqlite → postgres {shown}")
    if source.revision != facts.head:
        result.add("upgrade", Path(source.path).name,
                   f"the copy's schema {source.revision} → {facts.head} "
                   f"({len(facts.revisions) - 1 - facts.revisions.index(source.revision)} migrations; "
                   f"{source.origin} is not touched)", op=Op("upgrade"))
    result.add("create", shown, f"MLflow {facts.mlflow_version}'s schema at revision {facts.head}", op=Op("schema"))
    result.add("copy", shown, f"{len(tables)} tables, {rows} rows, in foreign-key order; sequences reset",
               op=Op("copy"))
    result.add("check", shown, "row count and checksum of every table on both sides", op=Op("check"))
    if facts.store != "postgres":
        result.add("update", str(facts.settings_file), f"store: {facts.store} → postgres (when every table checks out)",
                   op=Op("switch"))
    else:
        result.notes.append(f"store is postgres already ({facts.store_source})")
    if facts.target.unread:
        result.notes.append(_TARGET_UNREAD)
    return result


# --- applying it ---------------------------------------------------------------------------------
class Apply:
    """One migration's state while it is applied: what was created, so that a failure can undo it."""

    def __init__(self, settings, facts: Facts, python: Path):
        self.settings, self.facts, self.python = settings, facts, python
        self.schema_created = False
        self.checked: list = []

    def worker(self, op: str, *args: str) -> dict:
        data = run_worker(self.python, self.facts.target.url, op, *args)
        if "error" in data:
            where = f" (table {data['table']})" if data.get("table") else ""
            raise UserError(f"{op} failed{where}: {data.get('reason', '')}")
        return data

    def apply_one(self, change) -> object:
        op, source = change.op, self.facts.source
        if op.kind == "upgrade":
            self.worker("upgrade", source.path)
        elif op.kind == "schema":
            self.schema_created = True  # even a half-made schema is this run's to drop
            self.worker("schema")
        elif op.kind == "copy":
            data = self.worker("copy", source.path)
            total = sum(data["copied"].values())
            return f"copied {len(data['copied'])} tables, {total} rows; {data['sequences']} sequences reset"
        elif op.kind == "check":
            self.checked = self.worker("check", source.path)["tables"]
            show_check(self.checked)
            bad = [row["table"] for row in self.checked if not _same(row)]
            if bad:
                raise UserError(f"{len(bad)} table{'s' if len(bad) != 1 else ''} differ after the copy: "
                                f"{', '.join(bad[:5])}")
            return f"every table checks out ({len(self.checked)} tables: row counts and checksums equal)"
        elif op.kind == "switch":
            switch_store(self.facts.settings_file)
            return f"store: postgres in {self.facts.settings_file.name}"
        return None

    def undo(self) -> None:
        from ...core import console

        if not self.schema_created:
            return
        data = run_worker(self.python, self.facts.target.url, "drop")
        if "error" in data:
            console.warn(f"could not drop what this run created in the target: {data.get('reason')}; "
                         "drop its tables before the next try")
        else:
            console.info(f"dropped the {len(data['dropped'])} tables this run created: the target is empty again")


def _same(row: dict) -> bool:
    return bool(row["columns"]) and row["source"] is not None and row["source"] == row["target"]


def show_check(rows: list) -> None:
    """The check per table (tables empty on both sides in one line): row counts, checksum, ✓ or ✗."""
    from ...core import console

    shown, empty = [], 0
    for row in rows:
        source, target = row["source"], row["target"]
        if _same(row) and source[0] == 0:
            empty += 1
            continue
        counts = "-" if source is None else str(source[0])
        counts += " / " + ("-" if target is None else str(target[0]))
        if _same(row):
            checksum = source[1][:16]
        else:
            checksum = (f"{source[1][:8] if source else '-'} ≠ {target[1][:8] if target else '-'}"
                        + ("" if row["columns"] else " (columns differ)"))
        shown.append((row["table"], counts, checksum, "✓" if _same(row) else "✗"))
    if empty:
        shown.append((f"{empty} more tables", "0 / 0", "empty on both sides", "✓"))
    console.table("copy checked: rows sqlite / postgres, checksum", ("table", "rows", "checksum", ""), shown)


def switch_store(path: Path) -> None:
    """``store: postgres`` in the user's settings.yaml at ``path`` (its other values kept; made when missing)."""
    from ...core.settings import write_user_values

    write_user_values(path.parent, {"store": "postgres"})


def show_tables(source: Source) -> None:
    """The tables the copy reads, in its order (the empty ones counted in one line)."""
    from ...core import console

    order = copy_order(source.parents)
    rows = [(t, source.counts[t]) for t in order if source.counts[t]]
    empty = len(order) - len(rows)
    if empty:
        rows.append((f"{empty} more tables, empty", 0))
    console.table(f"tables to copy, parents first ({source.origin})", ("table", "rows"), rows)


# --- the task ------------------------------------------------------------------------------------
def run(settings, to: str, from_path: str | None = None, dry_run: bool = False) -> Plan:
    """Three steps through the runner: the worker's environment (created once), the backup of the Nomad
    client's store (without --from), the copy. Reading has no side effect: a dry run creates no
    environment and takes no backup, it shows them as changes."""
    from ...core import console
    from .. import runner

    if str(to or "").strip().lower() != "postgres":
        raise UserError(f"--to must be postgres, not {to!r}" if to else "--to is required: --to postgres",
                        hint="the only migration there is: `inv migrate-store --to postgres`",
                        code=ExitCode.BAD_ARGUMENT)
    url = database.url(settings)
    task = Task(settings, url, from_path)
    with tempfile.TemporaryDirectory(prefix="msh-migrate-store-") as folder:
        task.folder = Path(folder)
        try:
            outcome = runner.run(task.steps(), dry_run=dry_run)
        except UserError as exc:
            if task.applying is None:  # refused, or failed before the copy's first change
                raise
            task.applying.undo()
            raise UserError(exc.message, hint=(exc.hint + "; " if exc.hint else "") +
                            f"{task.origin()} is untouched and settings.yaml unchanged", code=exc.code) from None
        except BaseException:  # Ctrl-C, a bug: the target is emptied all the same
            if task.applying is not None:
                task.applying.undo()
            raise
    plan = outcome.plans.get("copy", Plan("migrate-store"))
    if dry_run:
        return plan
    console.done(f"MLflow's store is in PostgreSQL now ({database.shown_url(url)}); {task.origin()} is kept as it was")
    if task.facts.store_source.startswith("env"):
        console.warn(f"store comes from {task.facts.store_source.split(' ', 1)[1]} here, which still wins over "
                     "settings.yaml: set it to postgres (or unset it)")
    return plan


class Task:
    """migrate-store's steps and what one hands the next (the environment's python, the downloaded backup)."""

    def __init__(self, settings, url: str, from_path: str | None):
        from .. import local

        self.settings, self.url, self.from_path = settings, url, from_path
        self.venv = local.venv_dir(settings)
        self.python = self.venv / "bin" / "python"
        self.folder: Path | None = None
        self.downloaded: Path | None = None  # the backup taken by the backup step
        self.facts: Facts | None = None
        self.applying: Apply | None = None

    def origin(self) -> str:
        if self.from_path:
            return str(Path(os.path.expanduser(self.from_path)).resolve())
        return f"{self.settings.host}:{self.db()}"

    def db(self) -> str:
        return f"{self.settings.backend_path.rstrip('/')}/mlflow.db"

    def steps(self):
        from ..runner import Step

        yield Step("environment", read=self.read_environment, plan=make_environment_plan,
                   apply_one=self.apply_environment)
        if not self.from_path:
            yield Step("backup", read=self.read_backup, plan=make_backup_plan, apply_one=self.apply_backup)
        yield Step("copy", read=self.read_copy, plan=self.plan_copy, apply_one=self.apply_copy)

    # the worker's environment
    def read_environment(self) -> tuple:
        from ..local.native import mlflow_pin, venv_ready

        return str(self.venv), venv_ready(self.venv), mlflow_pin(self.settings)

    def apply_environment(self, change) -> object:
        from .. import local

        local.ensure_venv(self.settings)
        return QUIET  # it says what it created

    # the backup of the Nomad client's store
    def read_backup(self) -> BackupFacts:
        from ...adapters import nomad_api

        nomad = nomad_api.client(self.settings)
        allocations = nomad_api.call(self.settings, f"listing the allocations of job {self.settings.job_name}",
                                     nomad.job.get_allocations, self.settings.job_name) or []
        live = bool([a for a in allocations if a.get("ClientStatus") in ("pending", "running")])  # unknown job: none
        return BackupFacts(self.origin(), self.settings.job_name, live, self._target())

    def apply_backup(self, change) -> object:
        from .. import backup as bk
        from ...core.version import read_version

        version = bk.running_version(self.settings) or str(read_version(self.settings.root))
        with bk.Target.remote(self.settings) as target:
            result = bk.take(self.settings, target, version, download=True)
        self.downloaded = Path(result.downloaded)
        return f"backup of {self.origin()} downloaded to {self.downloaded}"

    # the copy
    def read_copy(self) -> Facts:
        from ...core import console
        from ..migrate import schema

        target = self._target()
        source = Source("", self.origin(), None, {}, {}, unread=True)
        if target.reachable and not target.tables:  # else refused before the store is read
            if self.from_path:
                path = Path(self.origin())
                console.step(f"taking a consistent copy of {path}")
                source = read_source(snapshot(path, self.folder), str(path))
            elif self.downloaded is not None:
                source = read_source(snapshot(self.downloaded, self.folder), self.origin())
        self.facts = Facts(source, target, schema.chain().order, schema.chain().mlflow_version,
                           database.kind(self.settings), self.settings.sources.get("store", "invoke.yaml"),
                           settings_file(self.settings))
        return self.facts

    def plan_copy(self, facts: Facts) -> Plan:
        plan = make_plan(facts)
        if not facts.source.unread:
            show_tables(facts.source)
        return plan

    def apply_copy(self, change) -> object:
        if self.applying is None:
            self.applying = Apply(self.settings, self.facts, self.python)
        return self.applying.apply_one(change)

    def _target(self) -> Target:
        """The target as the worker reads it; not read (``unread``) before the environment exists (a dry run)."""
        from ..local.native import venv_ready

        if not venv_ready(self.venv):
            return Target(self.url, True, unread=True)
        return read_target(self.python, self.url)


@dataclass
class BackupFacts:
    origin: str  # host:path of the store
    job: str
    running: bool  # the job has a pending or running allocation
    target: Target


def make_environment_plan(facts: tuple) -> Plan:
    """The virtual environment the worker runs in (the native server's: the image's MLflow and psycopg2)."""
    venv, ready, pin = facts
    plan = Plan("worker environment")
    if ready:
        plan.reason = f"{venv} ready ({pin})"
    else:
        plan.add("create", venv, f"a virtual environment with {pin} and the image's locked requirements (once; "
                                 "about a minute)", op=Op("venv"))
    return plan


def make_backup_plan(facts: BackupFacts) -> Plan:
    """The consistent copy of the Nomad client's store: refused while the job runs (its writes would be
    lost) or when the target is refused already."""
    refuse_target(facts.target)
    if facts.running:
        raise UserError(f"job {facts.job} is running: MLflow would go on writing to the SQLite store during "
                        "the copy, and those writes would be lost; nothing was changed",
                        hint=f"stop it first (`nomad job stop {facts.job}`), then run migrate-store again")
    plan = Plan(f"backup of {facts.origin}")
    plan.add("run", facts.origin, "a backup (`inv backup --download`: SQLite's online backup, integrity-checked)",
             op=Op("backup"))
    return plan
