"""`inv migrate`, and the first step of `inv deploy` when it finds a setup the original recipe left.

Facts (read-only, before anything changes): the store on the host (store.py), the registered job, and
the schema revisions the image's MLflow knows (schema.py). A database that fails its integrity check,
that a newer MLflow wrote, or that is not MLflow's is refused there with nothing changed (exit 15).

The plan, in the order it is applied (after configure-host, the build and the push):
1. stop the running job: the old server must not write while the file is copied and rewritten;
2. a byte-for-byte copy of the database into backups_path, kept (retention never removes it);
   `inv restore NAME` puts it back;
3. the owner of every entry of the two volume folders to the image's user (files included);
4. artifact locations of experiments, runs and model versions under the old server-local root
   (legacy_artifact_root) rewritten to ``mlflow-artifacts:/...``: the same files, now downloaded and
   uploaded through the server instead of written to each client's own disk;
5. the schema upgrade: the image runs `mlflow db upgrade` when the new job starts (its entrypoint),
   and the takeover checks afterwards that the database is at the image's head revision.
Then deploy plans and registers our job (the diff shows the replacement). A second run finds nothing.

`inv deploy` takes a setup over when the database has locations under the old root, entries the image's
user does not own, or an older schema under a job that is not ours (an image without a v{version} tag);
an older schema under our own job is an ordinary upgrade (deploy's own backup, then the entrypoint).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import ExitCode, UserError
from ..core.plan import QUIET, Plan
from ..steps.migrate import host_store as store, schema

BACKUP_PREFIX = store.BACKUP_PREFIX


@dataclass(frozen=True)
class Op:
    """What one change of the takeover does, as data (``Apply.apply_one`` dispatches on ``kind``)."""

    kind: str  # stop, backup, keep, chown, rewrite, upgrade
    job: str = ""  # stop: the job's ID
    path: str = ""  # backup: the database copied; keep: the earlier copy; chown: the folder; rewrite: the database
    folder: str = ""  # backup: where the copy goes
    name: str = ""  # backup: the copy's file name
    root: str = ""  # rewrite: the old server-local artifact root


@dataclass
class Takeover:
    facts: store.StoreFacts
    job: dict | None
    chain: schema.Chain
    plan: Plan
    reason: str = ""  # why the plan is empty
    backup_name: str = ""
    stop: bool = False
    chown: list = field(default_factory=list)  # folders
    rewrite: bool = False
    upgrade: bool = False
    backup_path: str = ""  # once taken
    others: list = field(default_factory=list)  # other running jobs that mount the MLflow volumes

    @property
    def needed(self) -> bool:
        return not self.plan.empty


def _job_is_ours(job: dict | None) -> bool:
    from ..steps.job import jobfile

    return bool(job) and jobfile.version_of(jobfile.image_of(job)) is not None


def refuse_bad_store(settings, facts: store.StoreFacts, chain: schema.Chain, require: bool,
                     job_is_ours: bool = False) -> None:
    """Refusals from the facts alone, before anything changes. A deploy over a job that is not ours and a
    backend folder with other databases but not ours is refused too: it would start an empty MLflow."""
    db = facts.db
    nothing = "nothing was changed"
    if db is None:
        if not require and not (facts.other_files and not job_is_ours):
            return
        if facts.backend is None:
            raise UserError(f"no folder {settings.backend_path} on {facts.where}: nothing to migrate",
                            hint="set backend_path to the host folder the original job mounts at "
                                 f"/mnt/backend_store; {nothing}", code=ExitCode.STORE_REFUSED)
        found = f" (it holds {', '.join(facts.other_files)})" if facts.other_files else ""
        raise UserError(f"no MLflow database at {facts.db_path} on {facts.where}{found}",
                        hint=f"the image's store is {store_name()}: rename the original's file to it, or "
                             f"set backend_path to the folder that has it; {nothing}", code=ExitCode.STORE_REFUSED)
    if db.integrity not in ("ok", "not checked"):  # a deploy's quick look does not check
        raise UserError(f"{db.path} fails SQLite's PRAGMA integrity_check: {db.integrity}",
                        hint=f"repair it (`sqlite3 mlflow.db .recover`) or put a good backup in its place; {nothing}",
                        code=ExitCode.STORE_REFUSED)
    if db.revision == "":
        raise UserError(f"{db.path} has an empty alembic_version table: its schema revision is unknown",
                        hint=f"a schema upgrade was interrupted? put a good backup in its place; {nothing}",
                        code=ExitCode.STORE_REFUSED)
    if db.revision is None:
        raise UserError(f"{db.path} is not an MLflow database (no alembic_version table)",
                        hint=f"set backend_path to the folder of MLflow's database; {nothing}", code=ExitCode.STORE_REFUSED)
    if not chain.knows(db.revision):
        raise UserError(f"{db.path} is at schema revision {db.revision}, which MLflow {chain.mlflow_version} (the "
                        "image's) does not know: a newer MLflow wrote it",
                        hint="use that MLflow or a newer one in both pins (docker/requirements.txt then `inv deps`, "
                             "and mlflow-skinny in pyproject.toml, which this check reads), or put an older backup "
                             f"in place; {nothing}", code=ExitCode.STORE_REFUSED)


def store_name() -> str:
    from ..steps.backup.names import DB_NAME

    return DB_NAME


def read(settings, host, n, require: bool = False) -> Takeover:
    """The facts and the plan (pure once read); refuses a store that cannot be taken over.

    `inv migrate` (``require``) reads everything; a deploy first takes a quick look (owners of the
    folders and the file, revision, rows under the old root: no walk, no integrity check, which would
    hold a read lock against the running server) and reads everything only when that finds work."""
    from ..steps.backup.names import utc_stamp
    from ..steps.job import jobfile

    chain = schema.chain()
    job = jobfile.current(settings, n)
    name = f"{BACKUP_PREFIX}{utc_stamp()}.db"
    facts = store.inspect(settings, host, full=require)
    if not require:
        refuse_bad_store(settings, facts, chain, require, _job_is_ours(job))
        quick = make_plan(settings, facts, job, chain, name)
        if not quick.needed:
            return quick
        facts = store.inspect(settings, host, full=True)
    refuse_bad_store(settings, facts, chain, require, _job_is_ours(job))
    return make_plan(settings, facts, job, chain, name, other_writers(settings, n))


def other_writers(settings, n) -> list[dict]:
    """Running jobs besides ``job_name`` whose groups mount the MLflow host volumes: the recipe's job
    under another name would go on writing the file while it is copied and rewritten."""
    from ..steps.job import cluster
    from ..adapters import nomad_api

    out = []
    for stub in nomad_api.call(settings, "listing jobs", n.jobs.get_jobs) or []:
        if stub.get("ID") == settings.job_name or stub.get("Stop") or stub.get("Status") == "dead":
            continue
        job = nomad_api.call(settings, f"reading job {stub['ID']}", n.job.get_job, stub["ID"])
        sources = {v.get("Source") for g in job.get("TaskGroups") or [] for v in (g.get("Volumes") or {}).values()
                   if v.get("Type") == "host"}
        if sources & set(cluster.HOST_VOLUMES):
            out.append(job)
    return out


def make_plan(settings, facts: store.StoreFacts, job: dict | None, chain: schema.Chain, backup_name: str,
              others: list | None = None) -> Takeover:
    """What taking the store over would change (no I/O)."""
    uid, gid = settings.image_user_ids()
    out = Takeover(facts, job, chain, Plan(f"take over the MLflow store on {settings.host}"), backup_name=backup_name,
                   others=list(others or []))
    db = facts.db
    out.chown = [(folder, owners) for folder, owners in ((settings.backend_path, facts.backend),
                                                         (settings.artifacts_path, facts.artifacts))
                 if owners is not None and owners.wrong]
    out.rewrite = bool(db and db.legacy_rows)
    behind = bool(db and db.revision and chain.knows(db.revision) and db.revision != chain.head)
    out.upgrade = behind and not _job_is_ours(job)
    if not (out.chown or out.rewrite or out.upgrade):
        if db is None:
            out.reason = f"no database at {facts.db_path} yet"
        else:
            rev = "current" if db.revision == chain.head else f"{db.revision}, upgraded by the image on start"
            out.reason = (f"{facts.db_path}: owners {uid}:{gid}, artifact locations served by the server, "
                          f"schema {rev}")
        out.plan.reason = out.reason
        return out
    p = out.plan
    running = job and not job.get("Stop")
    if running:
        out.stop = True
        p.add("stop", f"job {settings.job_name}", f"{jobfile_image(job)}: the old server must not write meanwhile",
              op=Op("stop", job=settings.job_name))
    for other in out.others:
        p.add("stop", f"job {other['ID']}", f"{jobfile_image(other)}: it mounts the MLflow volumes too",
              op=Op("stop", job=other["ID"]))
    backups = settings.backups_path.rstrip('/')
    if db and facts.backups and not _job_is_ours(job):
        # an earlier run copied the original and stopped before our job ran: the file may be half taken over
        out.backup_path = f"{backups}/{facts.backups[0]}"
        out.backup_name = ""
        p.add("keep", out.backup_path, f"the original database, copied by an earlier run (`inv restore "
                                       f"{facts.backups[0]}` puts it back): no new copy", op=Op("keep", path=out.backup_path))
    elif db:
        p.add("create", f"{backups}/{backup_name}",
              f"byte-for-byte copy of {db.path} ({db.size} bytes), kept; `inv restore {backup_name}` puts it back",
              op=Op("backup", path=db.path, folder=settings.backups_path, name=backup_name))
    for folder, owners in out.chown:
        example = f"; e.g. {owners.sample[0]}" if owners.sample else ""
        p.add("chown", folder, f"{owners.wrong} of {owners.total} entries to {uid}:{gid}, the image's user{example}",
              op=Op("chown", path=folder))
    if out.rewrite:
        counts = ", ".join(f"{n} {table.replace('_', ' ')}" for table, n in db.legacy.items() if n)
        root = store.legacy_root(settings)
        p.add("update", db.path, f"artifact locations of {counts}: {root}/… → mlflow-artifacts:/… (the same files, "
                                 "through the server)", op=Op("rewrite", path=db.path, root=root))
    if behind:
        p.add("upgrade", db.path, f"schema {db.revision} → {chain.head} ({chain.behind(db.revision)} migrations of "
                                  f"MLflow {chain.mlflow_version}): `mlflow db upgrade` by the image when the job starts",
              op=Op("upgrade", path=db.path))
    return out


def jobfile_image(job: dict) -> str:
    from ..steps.job import jobfile

    return jobfile.image_of(job) or "no image"


class Apply:
    """Applies the takeover's changes, one ``Op`` each, in the plan's order (nothing decided here).
    Before the first change to the database or the folders, once, the store is read again now that the
    jobs are stopped: a hot journal means something still writes it. A failure after the stops says that
    the service is down and how to go on or back (exit 1)."""

    def __init__(self, settings, host, n, takeover: Takeover):
        self.settings, self.host, self.n, self.takeover = settings, host, n, takeover
        self.settled = False

    def apply_one(self, change) -> object:
        op = change.op
        if op.kind == "stop":
            return self._stop(op)
        try:
            if op.kind in ("backup", "chown", "rewrite"):
                self._settle()
            if op.kind == "backup":
                copy = store.backup(self.host, op.path, op.folder, op.name)
                self.takeover.backup_path = copy["path"]
                return f"backup {copy['path']} (byte-for-byte, sha256 {copy['sha256'][:12]}…), kept"
            if op.kind == "keep":  # the earlier run's copy is the original: nothing to make
                return QUIET
            if op.kind == "chown":
                uid, gid = self.settings.image_user_ids()
                changed = store.chown(self.host, uid, gid, [op.path])
                return f"owner {uid}:{gid} given to {changed} entries of {op.path}"
            if op.kind == "rewrite":
                changed = store.rewrite(self.host, op.path, op.root)
                return ("artifact locations rewritten to mlflow-artifacts:/ ("
                        + ", ".join(f"{n} {t.replace('_', ' ')}" for t, n in changed.items() if n) + ")")
            if op.kind == "upgrade":  # the image's entrypoint, when the new job starts; verify() checks it
                return QUIET
        except UserError as exc:
            raise UserError(exc.message, hint=stopped_hint(self.settings, self.takeover),
                            code=ExitCode.FAILED) from None
        raise ValueError(f"unknown takeover op {op.kind!r}")

    def _stop(self, op: Op) -> object:
        from ..core import console
        from ..steps.job.lifecycle import stop as stop_job

        job = self.takeover.job if op.job == self.settings.job_name else \
            next((o for o in self.takeover.others if o.get("ID") == op.job), None)
        why = "" if op.job == self.settings.job_name else ": it mounts the MLflow volumes too"
        console.step(f"stopping job {op.job} ({jobfile_image(job or {})}){why}")
        settings = self.settings if op.job == self.settings.job_name else \
            self.settings.with_overrides({"job_name": op.job})
        stop_job(settings, self.n)
        return QUIET

    def _settle(self) -> None:
        if self.settled:
            return
        self.settled = True
        db = store.inspect(self.settings, self.host).db  # again, now that nothing writes
        if db and db.journals:
            raise UserError(f"{db.path} has a hot journal ({', '.join(db.journals)}) after the job stopped: "
                            "something else still writes it, or a writer crashed")


def apply(settings, host, n, takeover: Takeover) -> Takeover:
    """The plan's changes in order (the caller showed the plan, and registers the job, which upgrades the
    schema)."""
    from ..core import console

    applying = Apply(settings, host, n, takeover)
    for change in takeover.plan:
        said = applying.apply_one(change)
        if said is not QUIET:
            console.done(said if isinstance(said, str) else change.describe())
    return takeover


def stopped_hint(settings, takeover: Takeover) -> str:
    """What to do when the takeover stopped half-way: the service is down."""
    down = f"job {settings.job_name} is stopped (MLflow is down): fix the cause and run `inv migrate` again, " \
           "which goes on from where it stopped"
    if not takeover.backup_path:
        return down + "; the database was not changed"
    return f"{down}; or go back: {restore_hint(takeover)}"


def restore_hint(takeover: Takeover) -> str:
    if not takeover.backup_path:
        return "the database was not changed"
    name = takeover.backup_path.rsplit("/", 1)[-1]
    return (f"the original database is kept as {takeover.backup_path}: stop the job (`nomad job stop`), "
            f"`inv restore {name}` puts it back, then `nomad job run` the original job file")


def verify(settings, host, takeover: Takeover) -> None:
    """After the new job is healthy: the schema is the image's head."""
    from ..core import console

    if not takeover.needed or takeover.facts.db is None:
        return
    db = store.inspect(settings, host).db
    if db and db.revision == takeover.chain.head:
        console.done(f"schema {db.revision} (MLflow {takeover.chain.mlflow_version}); original kept as "
                     f"{takeover.backup_path}")
        return

    raise UserError(f"the new job runs, but the database is at schema {db.revision if db else '?'}, not "
                    f"{takeover.chain.head}", hint=f"`inv logs --stderr` shows why; {restore_hint(takeover)}",
                    code=ExitCode.DEPLOY_FAILED)
