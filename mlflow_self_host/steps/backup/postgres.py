"""Backups and restores of the PostgreSQL store (setting ``store: postgres``): facts, a pure plan, apply.

Where the work runs: on this machine, where `inv` runs and already reaches the database (migrate-store,
doctor read it with ``MSH_DATABASE_URL``). Its pg_dump must be of the server's major version or newer
(a pg_dump dumps servers up to its own major): ``adapters/postgres.py`` finds the newest one, and the plan
refuses an older one with what to install. Only the finished, checked dump goes to the Nomad client, into
``backups_path`` beside SQLite's backups, so that the two stores' backups are kept, listed and pruned alike.

- backup: ``pg_dump -Fc`` (one snapshot: consistent while MLflow writes), checked with ``pg_restore --list``
  (every table has its data entry), uploaded over SSH as ``mlflow-{UTC}-v{version}.dump`` (a new name, never
  over another), then retention (the newest ``backup_keep`` dumps) and, with --download, a copy in ./backups;
- restore: the dump (downloaded from the host, or a file here) read with ``pg_restore --list`` and its rows
  counted; the job stopped; ``pg_restore --clean --if-exists --no-owner --no-privileges`` writes the SQL
  that psql runs with ``--single-transaction`` and ``ON_ERROR_STOP``, after dropping what is in the database
  but not in the dump (a table a later migration made): all or nothing, so a failed restore leaves the
  database as it was; the job started again.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ...adapters import postgres
from ...core import database
from ...core import plan as plans
from ...core.errors import UserError
from ...core.plan import Plan
from . import commands
from .names import EXTENSIONS, LOCAL_DOWNLOADS, human_size, store_of
from .target import BackupResult, NoDatabase, Target, Taking, backup_plan, job_state, must, run

EXT = EXTENSIONS["postgres"]
RESTORE_FLAGS = ("--clean", "--if-exists", "--no-owner", "--no-privileges")


# --- the database and the client that dumps it ------------------------------------------------------------------
@dataclass(frozen=True)
class Database:
    url: str
    client: postgres.Client | None  # None: no pg_dump found
    looked: str  # where pg_dump was looked for
    server: str = ""  # "17.2"
    server_major: int = 0
    tables: dict = field(default_factory=dict)  # table -> rows now

    @property
    def shown(self) -> str:
        return database.shown_url(self.url)


def read_database(settings, timeout: float | None = 30) -> Database:
    """The URL, the newest pg_dump here, the server's version and the tables with their row counts."""
    url = database.url(settings)
    pg_bin_dir = str(getattr(settings, "pg_bin_dir", "") or "")
    client = postgres.find_client(pg_bin_dir)
    looked = postgres.where_looked(pg_bin_dir)
    if client is None:
        return Database(url, None, looked)
    try:
        server, major = postgres.server_version(client, url, timeout)
        tables = postgres.table_counts(client, url, timeout)
    except UserError as exc:
        host, port, name = database.endpoint(url)
        raise UserError(f"cannot read the database {database.shown_url(url)}: {exc.message}",
                        hint=f"is PostgreSQL up on {host}:{port} and reachable from here? does database {name} exist, "
                             "with the user and password of MSH_DATABASE_URL?") from None
    return Database(url, client, looked, server, major, tables)


def check_client(db: Database) -> None:
    """Refuse a missing pg_dump, or one older than the server (pure)."""
    major = db.server_major or "N"
    if db.client is None:
        raise UserError(f"pg_dump not found ({db.looked}): the PostgreSQL store's backups run it on this machine",
                        hint=postgres.INSTALL_HINT.format(major=major) + " (N: the server's major version)")
    if db.client.major < db.server_major:
        raise UserError(f"{db.client} cannot dump the server's PostgreSQL {db.server}: a pg_dump dumps servers up to "
                        "its own major version", hint=postgres.INSTALL_HINT.format(major=major))


def dump_argv(client: postgres.Client, url: str, path) -> list[str]:
    """pg_dump's command line: the URL without its password (the passfile has it)."""
    return [str(client.pg_dump), "-Fc", "--no-password", "-f", str(path), "-d", postgres.libpq_url(url)]


# --- what a dump holds ---------------------------------------------------------------------------------------------
_TOC = re.compile(r"^\d+;\s+\d+\s+\d+\s+(TABLE DATA|TABLE|SEQUENCE|TYPE|DOMAIN|VIEW|MATERIALIZED VIEW)"
                  r"\s+(\S+)\s+(\S+)(?:\s+(\S+))?$")


@dataclass(frozen=True)
class Contents:
    entries: int  # the archive's table of contents
    objects: frozenset  # (kind, name): tables, sequences, types, domains, views
    data: tuple  # the tables with a TABLE DATA entry
    counts: dict | None = None  # table -> rows in the dump (None: not counted)

    @property
    def tables(self) -> list[str]:
        return sorted(name for kind, name in self.objects if kind == "TABLE")


def parse_list(out: str) -> Contents:
    """``pg_restore --list``'s answer: its entries, the objects and the tables with data."""
    entries, objects, data = 0, set(), []
    for line in out.splitlines():
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        entries += 1
        match = _TOC.match(line.strip())
        if not match:
            continue
        kind, name = match[1], match[3]
        if kind == "TABLE DATA":
            data.append(name)
        else:
            objects.add((kind, name))
    return Contents(entries, frozenset(objects), tuple(sorted(data)))


def count_rows(sql: str) -> dict:
    """Rows per table in ``pg_restore --data-only``'s SQL: the lines of each COPY block (one per row)."""
    counts, table = {}, None
    for line in sql.splitlines():
        if table is None:
            match = re.match(r"^COPY\s+(\S+)\s", line)
            if match:
                table = match[1].split(".")[-1].strip('"')
                counts[table] = 0
        elif line == "\\.":
            table = None
        else:
            counts[table] += 1
    return counts


def read_dump(client: postgres.Client, path, shown: str, counted: bool = True) -> Contents:
    """What the dump at ``path`` (on this machine) holds; one red line when it is not a pg_dump archive."""
    try:
        listed = postgres.run([client.tool("pg_restore"), "--list", str(path)], "", f"pg_restore --list {shown}")
    except UserError as exc:
        raise UserError(f"{shown} is not a readable pg_dump archive: {exc.message}",
                        hint="refusing to restore it; pick another backup (`inv backup --list`)") from None
    contents = parse_list(listed.stdout)
    if not counted:
        return contents
    try:
        data = postgres.run([client.tool("pg_restore"), "--data-only", "-f", "-", str(path)], "",
                            f"pg_restore --data-only {shown}")
    except UserError:
        return contents  # the counts are a courtesy: "N tables" then
    return Contents(contents.entries, contents.objects, contents.data, count_rows(data.stdout))


def check_dump(contents: Contents, shown: str) -> None:
    """A dump to keep (or restore) has tables, each with its data entry."""
    missing = sorted(set(contents.tables) - set(contents.data))
    if not contents.tables or missing:
        raise UserError(f"{shown} fails its check (pg_restore --list): "
                        + (f"no data for {', '.join(missing[:5])}" if missing else "no table in it"),
                        hint="refusing it; pick another backup")


# --- backup: facts, plan, apply ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DumpFacts:
    db: Database
    folder: bool  # backups_path is there on the host
    names: tuple = ()  # its entries


def read_facts(settings, target: Target) -> DumpFacts:
    db = read_database(settings)
    out = run(target, commands.folder_facts(target.backups)).stdout.splitlines()
    folder = bool(out) and out[0].strip() == "folder=yes"
    return DumpFacts(db, folder, tuple(line for line in out[1:] if line.strip()))


@dataclass(frozen=True)
class Dump:
    folder: str
    base: str  # the name without .dump (the host adds -N when it is taken)
    kind: str = "dump"


@dataclass(frozen=True)
class Download:
    folder: str  # ./backups
    kind: str = "download"


def make_plan(settings, target: Target, facts: DumpFacts, base: str, download: bool = False) -> Plan:
    """The changes of one dump named ``base`` (no I/O)."""
    db = facts.db
    check_client(db)
    if not db.tables:
        raise NoDatabase(f"no table in the database {db.shown}: nothing to back up",
                         hint="has MLflow run on it yet? check MSH_DATABASE_URL")
    return backup_plan(settings, target, f"backup of {db.shown} (PostgreSQL {db.server}) to {target.where}",
                       facts.folder, facts.names, base, EXT,
                       f"{db.client} -Fc on this machine ({len(db.tables)} tables), checked with pg_restore --list, "
                       "uploaded over SSH", Dump(target.backups, base), Download(LOCAL_DOWNLOADS) if download else None)


@dataclass
class Apply(Taking):
    """One dump's changes; the dump is made in a temporary folder here, removed by ``close``."""

    db: Database | None = None
    tables: int = 0
    local: Path | None = None

    def apply_one(self, change):
        op = change.op
        if op.kind in ("folder", "prune"):
            return self.shared(op)
        if op.kind == "dump":
            self._dump(op)
            return (f"backup {self.path} ({human_size(self.size)}, {self.tables} tables checked with pg_restore "
                    f"--list, {self.target.where})")
        if op.kind == "download":
            folder = self.settings.root / op.folder
            folder.mkdir(parents=True, exist_ok=True)
            dest = folder / PurePosixPath(self.path).name
            shutil.copyfile(self.local, dest)
            self.downloaded = str(dest)
            return f"downloaded to {self.downloaded}"
        raise ValueError(f"unknown backup op {op.kind!r}")

    def _dump(self, op: Dump) -> None:
        db = self.db
        folder = Path(tempfile.mkdtemp(prefix="msh-dump-"))
        self.local = folder / f"{op.base}{EXT}"
        postgres.run(dump_argv(db.client, db.url, self.local), db.url, f"pg_dump of {db.shown}")
        contents = read_dump(db.client, self.local, self.local.name, counted=False)
        check_dump(contents, f"the dump of {db.shown}")
        self.tables, self.size = len(contents.tables), self.local.stat().st_size
        partial = f"{op.folder}/.{op.base}{EXT}.partial"
        self.target.shell.put(str(self.local), partial, mode="0640", sudo=True)
        self.path = must(self.target, commands.publish(partial, op.folder, op.base, EXT),
                         "naming the backup").strip().splitlines()[-1]

    def close(self) -> None:
        if self.local is not None:
            shutil.rmtree(self.local.parent, ignore_errors=True)

    def result(self, version: str) -> BackupResult:
        return BackupResult(path=self.path, size=self.size, version=str(version), where=self.target.where,
                            removed=self.removed, downloaded=self.downloaded, store="postgres")


def take(settings, target: Target, version: str, download: bool = False, dry_run: bool = False):
    """One checked dump of the PostgreSQL store into ``target``'s backups folder (through the runner); the
    ``BackupResult``, or on a dry run the plan shown."""
    from .. import runner
    from .names import backup_base_name

    applying = Apply(settings, target)

    def read():
        facts = read_facts(settings, target)
        applying.db = facts.db
        return facts

    step = runner.Step("backup", read=read,
                       plan=lambda facts: make_plan(settings, target, facts, backup_base_name(version), download),
                       apply_one=applying.apply_one)
    try:
        outcome = runner.run([step], dry_run=dry_run)
    finally:
        applying.close()
    return outcome.plans["backup"] if dry_run else applying.result(version)


# --- restore: facts, plan, apply ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RestoreFacts:
    db: Database
    path: str  # the backup as the user named it (on the host, or a file here)
    local: str | None  # the dump on this machine (downloaded, or the file given); None: no such backup
    contents: Contents | None = None
    job_stopped: bool = False
    running: str | None = None


def fetch_dump(target: Target, backup_arg: str, folder: Path, user: str) -> tuple[str, str | None]:
    """(the backup's name as shown, the dump on this machine or None): a name in backups_path or a path on the
    host, downloaded into ``folder``; else a file on this machine (a --download copy) as it is."""
    on_host = backup_arg if "/" in backup_arg else f"{target.backups}/{backup_arg}"
    if run(target, commands.is_file(on_host)).ok:
        dest = folder / PurePosixPath(on_host).name
        if target.local:
            target.shell.get(on_host, str(dest))
        else:
            tmp = f"/tmp/.msh-download-{os.getpid()}-{PurePosixPath(on_host).name}"
            must(target, commands.copy_for_download(on_host, tmp, user), "preparing the download")
            try:
                target.shell.get(tmp, str(dest))
            finally:
                run(target, commands.remove([tmp]))
        return on_host, str(dest)
    here = Path(backup_arg).expanduser()
    if here.is_file():
        return str(here), str(here.resolve())
    return on_host, None


def read_restore_facts(settings, target: Target, backup_arg: str, folder: Path, job=None) -> RestoreFacts:
    """``job``: (stopped, running version), read from Nomad when not given."""
    if store_of(PurePosixPath(backup_arg).name) == "sqlite":
        raise UserError(f"{backup_arg} is a backup of the SQLite store, and the store is postgres",
                        hint="pick a .dump (`inv backup --list`); `inv migrate-store --from FILE` copies a SQLite "
                             "store into an empty PostgreSQL database")
    db = read_database(settings)
    shown, local = fetch_dump(target, backup_arg, folder, settings.ssh_user)
    contents = None
    if local and db.client is not None:
        contents = read_dump(db.client, local, PurePosixPath(shown).name)
    if job is None:
        job = (False, None) if target.local else job_state(settings)
    return RestoreFacts(db, shown, local, contents, *job)


@dataclass(frozen=True)
class Stop:
    kind: str = "stop"


@dataclass(frozen=True)
class Replace:
    dump: str  # on this machine
    name: str
    kind: str = "replace"


@dataclass(frozen=True)
class Start:
    kind: str = "start"


def _rows(n) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def table_lines(now: dict, dump: Contents) -> str:
    """What the restore replaces, one line per table: rows now and in the backup (``-``: dropped, ``+``: made)."""
    counts = dump.counts or {}
    lines = []
    for table in sorted(set(now) | set(dump.tables)):
        rows_now, rows_then = now.get(table), counts.get(table)
        then = f"{_rows(rows_then)} in the backup" if rows_then is not None else "in the backup"
        if table not in dump.tables:
            lines.append(f"- {table}: {_rows(rows_now)} now, not in the backup: dropped")
        elif rows_now is None:
            lines.append(f"+ {table}: not there now, {then}")
        else:
            lines.append(f"  {table}: {_rows(rows_now)} now, {then}")
    return "\n".join(lines)


def make_restore_plan(settings, facts: RestoreFacts, stop_start: bool = True) -> Plan:
    """Stop the job, replace the database's contents with the dump's in one transaction, start it (no I/O)."""
    db = facts.db
    check_client(db)
    if facts.local is None:
        raise UserError(f"no backup at {facts.path}",
                        hint="`inv backup --list` lists them; give a name in backups_path, a path on the host, "
                             "or a local file")
    name = PurePosixPath(facts.path).name
    check_dump(facts.contents, name)
    plan = Plan(f"restore {name} into {db.shown} (PostgreSQL {db.server})")
    running = stop_start and not facts.job_stopped
    if running:
        plan.add("stop", f"job {settings.job_name}", "and wait until its allocations stopped", op=Stop())
    tables = len(facts.contents.tables)
    counted = "" if facts.contents.counts is not None else " (row counts not read)"
    plan.add("replace", db.shown, f"{len(db.tables)} tables now; the backup's {tables}{counted}, in one transaction: "
             f"pg_restore {' '.join(RESTORE_FLAGS)}, psql --single-transaction",
             diff=table_lines(db.tables, facts.contents), op=Replace(facts.local, name))
    if running:
        plan.add("start", f"job {settings.job_name}", "and wait until healthy", op=Start())
    return plan


_OBJECTS = ("SELECT kind, current_schema(), name FROM ("
            "SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' "
            "ELSE 'TABLE' END AS kind, c.relname AS name FROM pg_class c "
            "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S') "
            "UNION ALL SELECT CASE t.typtype WHEN 'e' THEN 'TYPE' ELSE 'DOMAIN' END, t.typname FROM pg_type t "
            "WHERE t.typnamespace = current_schema()::regnamespace AND t.typtype IN ('e', 'd')) o ORDER BY 1, 3")
_DROP_ORDER = ("VIEW", "MATERIALIZED VIEW", "TABLE", "SEQUENCE", "TYPE", "DOMAIN")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def drop_extras(objects: list[tuple[str, str, str]], contents: Contents) -> str:
    """SQL dropping what the database has and the dump does not (a later migration's tables, types...)."""
    extra = [(kind, schema, name) for kind, schema, name in objects if (kind, name) not in contents.objects]
    extra.sort(key=lambda o: (_DROP_ORDER.index(o[0]), o[2]))
    return "".join(f"DROP {kind} IF EXISTS {_ident(schema)}.{_ident(name)} CASCADE;\n" for kind, schema, name in extra)


def replace_database(db: Database, dump: str, contents: Contents) -> None:
    """The dump's contents in place of the database's, in one transaction (all or nothing)."""
    client = db.client
    rows = postgres.psql(client, db.url, _OBJECTS, timeout=30)
    objects = [tuple(line.split("|", 2)) for line in rows.splitlines() if line.count("|") >= 2]
    folder = Path(tempfile.mkdtemp(prefix="msh-restore-"))
    try:
        drops, script = folder / "drop-extras.sql", folder / "restore.sql"
        drops.write_text(drop_extras(objects, contents))
        postgres.run([client.tool("pg_restore"), *RESTORE_FLAGS, "-f", str(script), dump], "",
                     "pg_restore (writing the restore's SQL)")
        postgres.run([client.tool("psql"), "-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1",
                      "-d", postgres.libpq_url(db.url), "-f", str(drops), "-f", str(script)], db.url,
                     f"the restore into {db.shown}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class RestoreApply:
    settings: object
    facts: RestoreFacts
    job: dict | None = None  # the job as it was before the stop
    nomad: object = None
    paused: object = None  # steps/job/periodic.Paused: the nightly backup and gc never run during a restore

    def apply_one(self, change):
        op, settings = change.op, self.settings
        if self.paused is not None:
            self.paused.now()
        if op.kind == "stop":
            from ..job import lifecycle
            from ...adapters import nomad_api

            self.nomad = nomad_api.client(settings)
            self.job = lifecycle.stop(settings, self.nomad)
            return plans.QUIET
        if op.kind == "replace":
            try:
                replace_database(self.facts.db, op.dump, self.facts.contents)
            except UserError as exc:
                started = ""
                if self.job is not None:
                    self._start()
                    started = f"; job {settings.job_name} started again"
                raise UserError(f"{exc.message}: the database is as it was (the restore is one transaction, rolled "
                                f"back){started}", hint=f"nothing of {op.name} was applied; fix what PostgreSQL "
                                                         "says (the URL's role must own MLflow's tables) and run "
                                                         "it again", code=exc.code) from None
            return f"restored {op.name} into {self.facts.db.shown}"
        if op.kind == "start":
            self._start()
            return plans.QUIET
        raise ValueError(f"unknown restore op {op.kind!r}")

    def _start(self) -> None:
        from ..job import follow, lifecycle

        response = lifecycle.start(self.settings, self.nomad, self.job)
        outcome = follow.after_submit(self.settings, self.nomad, response, f"job {self.settings.job_name}")
        if outcome.status != "successful":
            lifecycle.wait_running(self.settings, self.nomad, outcome.job_version)


def restore(settings, backup_arg: str, dry_run: bool = False):
    """`inv restore NAME` with store: postgres, through the runner under the deploy lock."""
    import dataclasses

    from ...core import console
    from .. import runner

    folder = Path(tempfile.mkdtemp(prefix="msh-restore-"))
    try:
        with Target.remote(settings) as target:
            facts = read_restore_facts(settings, target, backup_arg, folder)
        make_restore_plan(settings, facts)  # the refusals (no backup, a bad one, an old pg_dump) before the lock
        read: list[RestoreFacts] = []

        def under_the_lock() -> RestoreFacts:
            now = facts
            if not dry_run:
                now = dataclasses.replace(facts, db=read_database(settings))
                now = dataclasses.replace(now, job_stopped=job_state(settings)[0])
            read.append(now)
            return now

        from ..job import periodic

        applying = RestoreApply(settings, facts, paused=periodic.Paused(settings))

        def plan(now: RestoreFacts) -> Plan:
            applying.facts = now
            return make_restore_plan(settings, now)

        step = runner.Step("restore", read=under_the_lock, plan=plan, apply_one=applying.apply_one)
        outcome = runner.run([step], dry_run=dry_run, inside=applying.paused,
                             lock=runner.Lock(settings, f"restore {PurePosixPath(facts.path).name}"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if dry_run:
        return outcome.plans["restore"]
    if read[0].job_stopped:
        console.warn(f"job {settings.job_name} was stopped before the restore: left stopped")
    return None


def restore_now(settings, name: str, remote=None) -> str:
    """The database replaced by the dump ``name`` now, without the runner or the lock (the caller holds it) and
    without touching the job (the caller stopped it); the backup's path. A failure changes nothing."""
    folder = Path(tempfile.mkdtemp(prefix="msh-restore-"))
    target = Target.remote(settings, remote)
    try:
        facts = read_restore_facts(settings, target, name, folder, job=(True, None))
        plan = make_restore_plan(settings, facts, stop_start=False)
        (change,) = plan.changes
        replace_database(facts.db, change.op.dump, facts.contents)
        return facts.path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if remote is None:  # our own connection; the caller's stays open
            target.shell.close()


def check_now(settings, name: str, remote=None) -> None:
    """What ``restore_now`` refuses, refused now (before the caller stops the job): the dump fetched and read
    with ``pg_restore --list``; a missing or failing one is a UserError. Changes nothing."""
    folder = Path(tempfile.mkdtemp(prefix="msh-restore-"))
    target = Target.remote(settings, remote)
    try:
        facts = read_restore_facts(settings, target, name, folder, job=(True, None))
        make_restore_plan(settings, facts, stop_start=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if remote is None:  # our own connection; the caller's stays open
            target.shell.close()


# --- doctor ------------------------------------------------------------------------------------------------------
def doctor_rows(settings, timeout: float):
    """Yield the "pg_dump" row (store: postgres): the pg_dump backups run, its version against the server's."""
    from ...core.doctor_row import Row

    name = "pg_dump"
    pg_bin_dir = str(getattr(settings, "pg_bin_dir", "") or "")
    client = postgres.find_client(pg_bin_dir)
    if client is None:
        yield Row(name, False, f"not found ({postgres.where_looked(pg_bin_dir)}): `inv backup` and deploy's backup "
                               "run it here", postgres.INSTALL_HINT.format(major="N") + " (N: the server's major)")
        return
    try:
        url = database.url(settings)
        server, major = postgres.server_version(client, url, timeout)
    except UserError as exc:
        yield Row(name, False, f"{client}; the server's version not read: {exc.message}",
                  "see the database row: pg_dump must be of the server's major version or newer")
        return
    if client.major < major:
        yield Row(name, False, f"{client} is older than the server's PostgreSQL {server}: it cannot dump it",
                  postgres.INSTALL_HINT.format(major=major))
        return
    yield Row(name, True, f"{client}, dumps the server's PostgreSQL {server}")
