"""`inv restore --verify [BACKUP]`: the restore drill. A backup (the newest of the store's, by default) is put
into a scratch database beside the live one, never over it, checked, counted against the live store, and the
scratch removed; the result is kept on the host (``{backups_path}/.last-drill.json``) for doctor.

- SQLite: on the host (python3), the backup copied into a scratch folder beside backups_path
  (``{backups_path}-drill-{UTC}``), ``PRAGMA integrity_check`` of the copy, its rows counted, the live database's
  counted read-only (``mode=ro``), the scratch folder removed, whatever failed (one program: copy, check, remove);
- PostgreSQL: the dump downloaded here, a scratch database ``{db}_verify`` created with the live URL's role
  (it needs CREATEDB: refused with the SQL that grants it), ``pg_restore --exit-on-error`` into it (its success
  and the dump's listing are the check), its rows counted with psql, the scratch database dropped.

Counted: experiments, runs, metrics (rows of ``metrics`` and of ``latest_metrics``), params, and the artifacts
(files under artifacts_path on the host, over SSH) of the runs each store has. A live store ahead of its backup
is normal (work since); fewer live rows than the backup holds fails the drill, as a failed check does.

No deploy lock: the drill changes nothing of the live store or the job, so a deploy may run beside it. A
restore may not (it replaces the database being counted): the drill refuses to start while the deploy lock is
held for a restore (exit 14).
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ...adapters.shell import quote
from ...core import plan as plans
from ...core.errors import ExitCode, UserError
from ...core.plan import Plan
from . import commands
from .names import EXTENSIONS, backup_sort_key, is_backup_name, store_of, utc_stamp
from .target import Target, must, run

RECORD = ".last-drill.json"  # in backups_path on the host
TABLES = ("experiments", "runs", "metrics", "latest_metrics", "params")
COUNTED = TABLES + ("artifacts",)
MLFLOW_ARTIFACTS = "mlflow-artifacts:"

# Run on the host with python3 (stdlib only): copy the backup into a scratch folder, check and count the copy,
# count the live database read-only, remove the scratch folder whatever happened. One JSON line.
PROGRAM = commands.INTEGRITY_CHECK + r'''
import json, os, shutil, sqlite3, sys
TABLES = %(tables)r
def counts(path, read_only):
    con = sqlite3.connect("file:" + path + ("?mode=ro" if read_only else ""), uri=True, timeout=30)
    try:
        found = {}
        for table in TABLES:
            try:
                found[table] = con.execute('SELECT count(*) FROM "%%s"' %% table).fetchone()[0]
            except sqlite3.Error:
                found[table] = None
        try:
            uris = [r[0] for r in con.execute("SELECT artifact_uri FROM runs")]
        except sqlite3.Error:
            uris = []
        return found, uris
    finally:
        con.close()
backup, scratch, live = sys.argv[1:4]
out = {}
if not os.path.isfile(backup):
    print(json.dumps({"error": "missing", "path": backup})); sys.exit(3)
os.makedirs(scratch, mode=0o700)
try:
    copy = os.path.join(scratch, os.path.basename(backup))
    shutil.copyfile(backup, copy)
    out["integrity"] = integrity(copy, read_only=False, rows=5)
    if out["integrity"] == "ok":
        out["backup"], out["backup_uris"] = counts(copy, read_only=False)
finally:
    shutil.rmtree(scratch, ignore_errors=True)
out["removed"] = not os.path.exists(scratch)
if os.path.isfile(live):
    out["live"], out["live_uris"] = counts(live, read_only=True)
print(json.dumps(out))
''' % {"tables": TABLES}


# --- what is compared (pure) ------------------------------------------------------------------------------------
def artifact_dir(uri: str, legacy_root: str = "") -> str | None:
    """A run's artifact folder relative to artifacts_path (``1/abc/artifacts``), from its artifact_uri:
    ``mlflow-artifacts:/1/abc/artifacts`` or a path under the legacy root; None for one stored elsewhere."""
    uri = str(uri or "")
    if uri.startswith(MLFLOW_ARTIFACTS):
        rest = uri[len(MLFLOW_ARTIFACTS):].lstrip("/")
        return rest.strip("/") or None
    legacy = str(legacy_root or "").rstrip("/")
    if legacy and uri.startswith(legacy + "/"):
        return uri[len(legacy) + 1:].strip("/") or None
    return None


def artifact_files(uris, per_dir: dict, legacy_root: str = "") -> int:
    """The files under artifacts_path of the runs whose artifact URIs are ``uris`` (``per_dir``: files per
    ``exp/run/artifacts`` folder, as ``commands``' listing on the host gave them)."""
    total = 0
    for uri in set(uris):
        rel = artifact_dir(uri, legacy_root)
        if rel is None:
            continue
        parts = rel.split("/")
        key = "/".join(parts[:3])
        total += sum(n for d, n in per_dir.items() if d == key or (len(parts) < 3 and d.startswith(rel + "/")))
    return total


def artifact_listing(root: str) -> str:
    """Files per ``exp/run/artifacts`` folder under ``root`` (POSIX sh): ``COUNT DIR`` lines, none when missing."""
    return (f"if [ -d {quote(root)} ]; then cd {quote(root)} && find . -type f | "
            "awk -F/ 'NF>=5 {print $2\"/\"$3\"/\"$4}' | sort | uniq -c; fi")


def parse_artifact_listing(out: str) -> dict:
    found = {}
    for line in out.splitlines():
        count, _, folder = line.strip().partition(" ")
        if count.isdigit() and folder.strip():
            found[folder.strip()] = int(count)
    return found


@dataclass(frozen=True)
class Line:
    what: str
    backup: int | None
    live: int | None

    @property
    def difference(self) -> int | None:
        return None if self.backup is None or self.live is None else self.live - self.backup

    @property
    def ok(self) -> bool:
        return self.difference is None or self.difference >= 0


def compare(backup: dict, live: dict) -> list[Line]:
    """One line per thing counted: the backup's count, the live store's, live minus backup."""
    return [Line(what, backup.get(what), live.get(what)) for what in COUNTED]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    why: str  # "" when ok


def judge(check: str, lines: list[Line]) -> Verdict:
    """A failed check, or a live store with fewer rows than its backup, fails the drill."""
    if check != "ok":
        return Verdict(False, check)
    behind = [f"{line.what} {line.live} live < {line.backup} in the backup" for line in lines if not line.ok]
    if behind:
        return Verdict(False, "the live store has fewer rows than the backup: " + "; ".join(behind))
    return Verdict(True, "")


def table(lines: list[Line]) -> list[str]:
    """The report's lines: what, backup, live, difference (``+3``: work since the backup)."""
    def show(n):
        return "-" if n is None else str(n)

    out = [f"{'':<15} {'backup':>10} {'live':>10} {'difference':>11}"]
    for line in lines:
        diff = line.difference
        shown = "-" if diff is None else (f"+{diff}" if diff > 0 else str(diff))
        out.append(f"{line.what:<15} {show(line.backup):>10} {show(line.live):>10} {shown:>11}"
                   + ("" if line.ok else "  fewer live"))
    return out


def record(when: _dt.datetime, backup: str, verdict: Verdict, store: str) -> dict:
    return {"when": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "backup": backup, "ok": verdict.ok,
            "result": "ok" if verdict.ok else "failed", "why": verdict.why, "store": store}


def choose(names, store: str, wanted: str | None) -> str | None:
    """The backup to drill: ``wanted`` (a name or a path on the host), else the newest of the store's."""
    if wanted:
        return wanted
    ext = EXTENSIONS[store].lstrip(".")
    ours = [n for n in names if is_backup_name(n) and n.endswith("." + ext)]
    return max(ours, key=backup_sort_key) if ours else None


# --- facts --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DrillFacts:
    store: str  # sqlite or postgres
    backup: str | None  # the backup's path on the host (None: there is none)
    names: tuple = ()  # backups_path's entries
    tool: str | None = None  # sqlite: python3 on the host
    db: object = None  # postgres: backup.postgres.Database (live)
    scratch_exists: bool = False  # postgres: {db}_verify is there (left by a drill that was killed)
    can_create: bool = True  # postgres: the role may CREATE DATABASE
    role: str = ""


def _lock_check(settings) -> None:
    """Refuse while a restore holds the deploy lock (exit 14); a Nomad that does not answer: a warning."""
    from ...adapters import lock as locks
    from ...core import console

    try:
        holder = locks.read(settings)
    except UserError as exc:
        console.warn(f"cannot read the deploy lock (is a restore running?): {exc.message}")
        return
    if holder is not None and "restore" in holder.what:
        raise UserError(f"a restore runs: the deploy lock is held by {holder.describe()}; the drill counts the "
                        "live store it replaces", hint="run the drill after it ends (`inv lock` shows the lock)",
                        code=ExitCode.LOCKED)


def read_facts(settings, target: Target, store: str, wanted: str | None) -> DrillFacts:
    out = run(target, commands.folder_facts(target.backups)).stdout.splitlines()
    names = tuple(line.strip() for line in out[1:] if line.strip())
    name = choose(names, store, wanted)
    path = None if name is None else (name if "/" in name else f"{target.backups}/{name}")
    if path is not None and not run(target, commands.is_file(path)).ok:
        if wanted and Path(wanted).expanduser().is_file() and store == "postgres":
            path = str(Path(wanted).expanduser().resolve())  # a --download copy here
        else:
            raise UserError(f"no backup at {path} on {target.label}",
                            hint="`inv backup --list` lists them; give a name in backups_path or a path on the host")
    if store == "sqlite":
        values, _ = commands.parse_facts(run(target, commands.restore_facts(target.db, target.backups)).stdout)
        return DrillFacts(store, path, names, tool=values.get("tool") or None)
    from . import postgres as pg_backup
    from ...adapters import postgres

    db = pg_backup.read_database(settings)
    if db.client is None:
        return DrillFacts(store, path, names, db=db)
    name_ = scratch_name(db.url)
    found = postgres.psql(db.client, db.url, "SELECT (SELECT count(*) FROM pg_database WHERE datname = "
                          f"{_literal(name_)}) || '|' || (SELECT (rolcreatedb OR rolsuper)::text FROM pg_roles "
                          "WHERE rolname = current_user) || '|' || current_user", timeout=30)
    exists, can, role = (found.split("|") + ["", "", ""])[:3]
    return DrillFacts(store, path, names, db=db, scratch_exists=exists.strip() == "1",
                      can_create=can.strip() == "true", role=role.strip())


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def scratch_name(url: str) -> str:
    from ...core import database

    return f"{database.endpoint(url)[2]}_verify"


def scratch_url(url: str) -> str:
    """The live URL with the scratch database's name in place of the live one's."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + scratch_name(url)))


# --- the plan (pure) ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Op:
    kind: str  # scratch, check, remove, record (sqlite); fetch, create db, pg_restore, count, drop db (postgres)
    path: str = ""


def make_plan(settings, target: Target, facts: DrillFacts, stamp: str) -> Plan:
    """The drill's changes: all of them to scratch copies and the drill's record, none to the live store."""
    if facts.backup is None:
        raise UserError(f"no {facts.store} backup in {target.backups} on {target.label} to verify",
                        hint="`inv backup` takes one")
    name = PurePosixPath(facts.backup).name
    kind = store_of(name)
    if kind and kind != facts.store:
        raise UserError(f"{name} is a backup of the {kind} store, and the store is {facts.store}",
                        hint="pick one of the store's (`inv backup --list`)")
    plan = Plan(f"restore drill of {name} ({target.where}): the live store is only read")
    record_path = f"{target.backups}/{RECORD}"
    if facts.store == "sqlite":
        if facts.tool != "python3":
            raise UserError(f"{target.label} has no python3: the drill of a SQLite backup runs it there",
                            hint="install python3 on the host (`sudo apt-get install python3`)")
        scratch = scratch_folder(target.backups, stamp)
        plan.add("create", f"{scratch}/{name}", "a copy of the backup in a scratch folder", op=Op("scratch", scratch))
        plan.add("run", f"{scratch}/{name}", "PRAGMA integrity_check; experiments, runs, metrics, params counted, "
                 f"and the runs' artifacts under {settings.artifacts_path}; {target.db} counted read-only",
                 op=Op("check"))
        plan.add("delete", scratch, "the scratch folder", op=Op("remove", scratch))
    else:
        from . import postgres as pg_backup

        db = facts.db
        pg_backup.check_client(db)
        scratch = scratch_name(db.url)
        if not facts.can_create:
            raise UserError(f"the role {facts.role} of MSH_DATABASE_URL cannot CREATE DATABASE: the drill restores "
                            f"into a scratch database {scratch} beside {db.shown}",
                            hint=f"as a superuser: ALTER ROLE {_ident(facts.role)} CREATEDB;")
        plan.add("create", f"./{name}", "downloaded to a temporary folder here", op=Op("fetch"))
        if facts.scratch_exists:
            plan.add("delete", f"database {scratch}", "left by an earlier drill", op=Op("drop db", scratch))
        plan.add("create", f"database {scratch}", f"owned by {facts.role or 'the URL role'}, beside the live one",
                 op=Op("create db", scratch))
        plan.add("run", f"pg_restore into {scratch}", "--exit-on-error --no-owner --no-privileges; the dump's "
                 f"listing checked; rows counted in both; the runs' artifacts under {settings.artifacts_path}",
                 op=Op("pg_restore", scratch))
        plan.add("delete", f"database {scratch}", "the scratch database", op=Op("drop db", scratch))
    plan.add("create", record_path, "the drill's result, for doctor's `last restore drill`", op=Op("record", record_path))
    return plan


def scratch_folder(backups: str, stamp: str) -> str:
    return f"{backups.rstrip('/')}-drill-{stamp}"


# --- applying it ------------------------------------------------------------------------------------------------
@dataclass
class Apply:
    settings: object
    target: Target
    facts: DrillFacts
    check: str = "not run"
    backup_counts: dict = field(default_factory=dict)
    live_counts: dict = field(default_factory=dict)
    local: str | None = None  # postgres: the downloaded dump
    folder: Path | None = None

    def apply_one(self, change):
        op = change.op
        if op.kind == "scratch":
            self._sqlite(op.path)
            return plans.QUIET
        if op.kind == "check":
            return f"checked the copy: {self.check}"
        if op.kind == "remove":
            return f"removed {op.path}"
        if op.kind == "fetch":
            self._fetch()
            return plans.QUIET
        if op.kind == "create db":
            self._psql(f"CREATE DATABASE {_ident(op.path)}", f"creating the database {op.path}")
            return None
        if op.kind == "pg_restore":
            self._pg_restore(op.path)
            return f"restored into {op.path}: {self.check}"
        if op.kind == "drop db":
            self._psql(f"DROP DATABASE IF EXISTS {_ident(op.path)}", f"dropping the database {op.path}")
            return None
        if op.kind == "record":
            return plans.QUIET  # written after the run, with the verdict (and after a failure too)
        raise ValueError(f"unknown drill op {op.kind!r}")

    # sqlite
    def _sqlite(self, scratch: str) -> None:
        result = run(self.target, f"python3 -c {quote(PROGRAM)} {quote(self.facts.backup)} {quote(scratch)} "
                                  f"{quote(self.target.db)}")
        data = commands.parse_json(result.stdout)
        if not result.ok or "integrity" not in data:
            raise UserError(f"the drill's copy of {self.facts.backup} failed on {self.target.label}: "
                            f"{(result.stderr or result.stdout).strip()[-300:]}")
        self.check = data["integrity"]
        per_dir = self._artifacts()
        legacy = str(getattr(self.settings, "legacy_artifact_root", "") or "")
        if data.get("backup") is not None:
            self.backup_counts = dict(data["backup"], artifacts=artifact_files(data.get("backup_uris", []), per_dir,
                                                                                legacy))
        if data.get("live") is not None:
            self.live_counts = dict(data["live"], artifacts=artifact_files(data.get("live_uris", []), per_dir, legacy))
        if not data.get("removed", True):
            raise UserError(f"the scratch folder {scratch} could not be removed on {self.target.label}",
                            hint=f"remove it by hand: sudo rm -rf {scratch}")

    def _artifacts(self) -> dict:
        result = run(self.target, artifact_listing(self.settings.artifacts_path))
        return parse_artifact_listing(result.stdout) if result.ok else {}

    # postgres
    def _fetch(self) -> None:
        from . import postgres as pg_backup

        self.folder = Path(tempfile.mkdtemp(prefix="msh-drill-"))
        _, self.local = pg_backup.fetch_dump(self.target, self.facts.backup, self.folder, self.settings.ssh_user)
        if self.local is None:
            raise UserError(f"no backup at {self.facts.backup}")

    def _psql(self, sql: str, what: str) -> None:
        from ...adapters import postgres

        db = self.facts.db
        try:
            postgres.psql(db.client, db.url, sql, timeout=60)
        except UserError as exc:
            raise UserError(f"{what}: {exc.message}", hint=exc.hint) from None

    def _pg_restore(self, scratch: str) -> None:
        from ...adapters import postgres
        from . import postgres as pg_backup

        db = self.facts.db
        name = PurePosixPath(self.facts.backup).name
        try:
            contents = pg_backup.read_dump(db.client, self.local, name, counted=False)
            pg_backup.check_dump(contents, name)
            url = scratch_url(db.url)
            postgres.run([db.client.tool("pg_restore"), "--exit-on-error", "--no-owner", "--no-privileges",
                          "-d", postgres.libpq_url(url), self.local], url, f"pg_restore of {name} into {scratch}")
        except UserError as exc:
            self.check = exc.message
            return
        self.check = "ok"
        self.backup_counts = self._pg_counts(url)
        self.live_counts = self._pg_counts(db.url)

    def _pg_counts(self, url: str) -> dict:
        from ...adapters import postgres

        client = self.facts.db.client
        tables = postgres.table_counts(client, url, timeout=60)
        found = {t: tables.get(t) for t in TABLES}
        uris = postgres.psql(client, url, "SELECT artifact_uri FROM runs", timeout=60).splitlines() \
            if "runs" in tables else []
        if not hasattr(self, "_per_dir"):
            self._per_dir = self._artifacts()
        found["artifacts"] = artifact_files(uris, self._per_dir,
                                            str(getattr(self.settings, "legacy_artifact_root", "") or ""))
        return found

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def verify(settings, backup: str | None = None, dry_run: bool = False) -> Verdict | Plan:
    """`inv restore --verify [BACKUP]`: the drill, its table, its record on the host; a failed drill is one red
    line (exit 1) after the table. ``--dry-run``: the plan."""
    from ...core import console
    from ...core import database
    from .. import runner

    store = database.kind(settings)
    if not dry_run:
        _lock_check(settings)
    stamp = utc_stamp()
    with Target.remote(settings) as target:
        facts = read_facts(settings, target, store, backup)
        applying = Apply(settings, target, facts)
        step = runner.Step("restore drill", read=lambda: facts,
                           plan=lambda f: make_plan(settings, target, f, stamp), apply_one=applying.apply_one)
        failure = None
        try:
            outcome = runner.run([step], dry_run=dry_run)
        except UserError as exc:
            if dry_run or facts.backup is None or applying.check == "not run" and not _started(applying):
                raise
            failure = exc
        finally:
            if store == "postgres" and not dry_run and _started(applying):
                applying._psql(f"DROP DATABASE IF EXISTS {_ident(scratch_name(facts.db.url))}",
                               "dropping the scratch database")
            applying.close()
        if dry_run:
            return outcome.plans["restore drill"]
        name = PurePosixPath(facts.backup).name
        lines = compare(applying.backup_counts, applying.live_counts)
        verdict = judge(applying.check if failure is None else failure.message, lines)
        kept = record(_dt.datetime.now(_dt.timezone.utc), name, verdict, store)
        target.shell.write(f"{target.backups}/{RECORD}", json.dumps(kept) + "\n", mode="0640", sudo=True)
    if applying.backup_counts or applying.live_counts:
        console.info(f"{name} against the live store (live minus backup):")
        for text in table(lines):
            console.result(text)
    if not verdict.ok:
        raise UserError(f"restore drill of {name} failed: {verdict.why}",
                        hint="the live store was not touched; take a new backup (`inv backup`) and drill it")
    console.done(f"restore drill of {name} passed: the backup restores (recorded in {target.backups}/{RECORD})")
    return verdict


def _started(applying: Apply) -> bool:
    return applying.local is not None  # postgres: the download happened, so a scratch database may be there


# --- doctor ------------------------------------------------------------------------------------------------------
def _age(seconds: float) -> str:
    hours = seconds / 3600
    if hours < 48:
        return f"{hours:.0f} h" if hours >= 1 else f"{seconds / 60:.0f} min"
    return f"{hours / 24:.0f} days"


def backup_row(names, store: str, now: _dt.datetime, max_hours: float, database_there: bool):
    """doctor's `last backup` row (pure): the newest backup of the store's, red past ``max_hours``."""
    from ...core.doctor_row import Row
    from .names import taken_at

    newest = choose(names, store, None)
    if newest is None:
        if not database_there:
            return Row("last backup", True, "none yet (no database to back up yet)")
        return Row("last backup", False, f"no {store} backup in backups_path", "`inv backup` takes one")
    when = _dt.datetime.strptime(taken_at(newest), "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=_dt.timezone.utc)
    age = (now - when).total_seconds()
    found = f"{newest}, {_age(age)} old"
    if age > max_hours * 3600:
        return Row("last backup", False, f"{found} (older than backup_max_age_hours {max_hours:g})",
                   "`inv backup` takes one now")
    return Row("last backup", True, found)


def drill_row(kept: dict | None, any_backup: bool, now: _dt.datetime, max_days: float):
    """doctor's `last restore drill` row (pure): its age and result, red past ``max_days`` or when it failed."""
    from ...core.doctor_row import Row

    name = "last restore drill"
    if not kept:
        if not any_backup:
            return Row(name, True, "none yet (no backup to drill)")
        return Row(name, False, "never run: no one knows the backups restore", "`inv restore --verify`")
    try:
        when = _dt.datetime.strptime(kept["when"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
    except (KeyError, ValueError):
        return Row(name, False, f"{RECORD} unreadable", "`inv restore --verify` writes it again")
    age = (now - when).total_seconds()
    found = f"{kept.get('result', '?')} {_age(age)} ago ({kept.get('backup', '?')})"
    if not kept.get("ok"):
        return Row(name, False, f"{found}: {kept.get('why', '')}"[:300], "`inv restore --verify` after fixing it")
    if age > max_days * 86400:
        return Row(name, False, f"{found} (older than drill_max_age_days {max_days:g})", "`inv restore --verify`")
    return Row(name, True, found)


def doctor_rows(settings, timeout: float):
    """Yield `last backup` and `last restore drill`, read over SSH from backups_path."""
    from ...core import database

    store = database.kind(settings)
    with Target.remote(settings) as target:
        out = run(target, commands.folder_facts(target.backups)).stdout.splitlines()
        names = [line.strip() for line in out[1:] if line.strip()]
        db_there = True if store == "postgres" else run(target, commands.is_file(target.db)).ok
        raw = target.shell.read_bytes(f"{target.backups}/{RECORD}", sudo=True) if names else None
    now = _dt.datetime.now(_dt.timezone.utc)
    yield backup_row(names, store, now, float(settings.backup_max_age_hours), db_there)
    try:
        kept = json.loads(raw) if raw else None
    except ValueError:
        kept = {"unreadable": True}
    any_backup = choose(names, store, None) is not None
    yield drill_row(kept, any_backup, now, float(settings.drill_max_age_days))
