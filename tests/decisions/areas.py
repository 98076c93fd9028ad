"""Adapters from a case file's JSON to each area's pure ``make_plan``: facts in, plan out."""
from __future__ import annotations

from mlflow_self_host.core.plan import Plan


def _bytes(value):
    return None if value is None else value.encode()


def plan_host(settings, facts: dict, args: dict) -> Plan:
    from mlflow_self_host.steps.host.configure import HostFacts, make_plan

    host_facts = HostFacts(
        client_config=_bytes(facts.get("client_config")),
        folders={path: (tuple(stat) if stat else None) for path, stat in facts.get("folders", {}).items()},
        job_file=_bytes(facts.get("job_file")),
        job_file_stat=tuple(facts["job_file_stat"]) if facts.get("job_file_stat") else None,
        missing_users=facts.get("missing_users", []),
        missing_groups=facts.get("missing_groups", []),
    )
    return make_plan(settings, host_facts, args.get("job_content", "").encode(), host=args.get("host", ""))


class _SSHHost:
    """Where a remote backup's commands would run, named as ``ssh.Remote`` names it (nothing connects)."""

    def __init__(self, label: str):
        self.label = label


def _backup_target(settings, args: dict):
    """backup's Target: this machine with ``"local": true`` (paths from args), else the SSH host of the settings."""
    from pathlib import PurePosixPath

    from mlflow_self_host.steps.backup.take import Target
    from mlflow_self_host.adapters.local_shell import LocalShell

    if args.get("local"):
        return Target(LocalShell(), args["db"], args["backups"], args.get("where", "local data"))
    return Target(_SSHHost(f"{settings.ssh_user}@{settings.host}"), str(PurePosixPath(settings.backend_path) / "mlflow.db"),
                  settings.backups_path, f"host {settings.host}")


def plan_backup(settings, facts: dict, args: dict) -> Plan:
    import datetime as dt

    from mlflow_self_host.steps.backup.names import backup_base_name
    from mlflow_self_host.steps.backup.take import BackupFacts, make_plan

    now = dt.datetime.fromisoformat(args.get("now", "2026-11-30T12:00:00")).replace(tzinfo=dt.timezone.utc)
    backup_facts = BackupFacts(tool=facts.get("tool"), database=facts.get("database", True),
                               folder=facts.get("folder", True), names=tuple(facts.get("names", [])))
    return make_plan(settings, _backup_target(settings, args), backup_facts,
                     backup_base_name(args.get("version", "0.99"), now), download=args.get("download", False))


def plan_restore(settings, facts: dict, args: dict) -> Plan:
    from mlflow_self_host.steps.backup.restore import RestoreFacts, make_plan

    target = _backup_target(settings, args)
    restore_facts = RestoreFacts(
        tool=facts.get("tool"), path=facts["path"], upload=facts.get("upload"), integrity=facts.get("integrity"),
        database=facts.get("database", True), folder=facts.get("folder", True),
        job_stopped=facts.get("job_stopped", False), running=facts.get("running"))
    return make_plan(settings, target, restore_facts, args.get("aside", f"{target.db}.before-restore-20261130T120000Z"))


def _pg_database(facts: dict):
    """store: postgres: the database and the pg_dump found here, as ``postgres.read_database`` reads them."""
    from pathlib import Path

    from mlflow_self_host.adapters.postgres import Client
    from mlflow_self_host.steps.backup.postgres import Database

    client = facts.get("client")
    return Database(facts.get("url", "postgresql://mlflow:secret@db.lan:5432/mlflow"),
                    Client(Path(client["path"]), client["version"], client["major"]) if client else None,
                    "the PATH, /usr/lib/postgresql/*/bin, Homebrew's libpq", facts.get("server", "17.2"),
                    facts.get("server_major", 17), facts.get("tables", {}))


def plan_pg_backup(settings, facts: dict, args: dict) -> Plan:
    import datetime as dt

    from mlflow_self_host.steps.backup.names import backup_base_name
    from mlflow_self_host.steps.backup.postgres import DumpFacts, make_plan

    now = dt.datetime.fromisoformat(args.get("now", "2026-11-30T12:00:00")).replace(tzinfo=dt.timezone.utc)
    dump_facts = DumpFacts(_pg_database(facts), facts.get("folder", True), tuple(facts.get("names", [])))
    return make_plan(settings, _backup_target(settings, args), dump_facts,
                     backup_base_name(args.get("version", "0.99"), now), download=args.get("download", False))


def plan_pg_restore(settings, facts: dict, args: dict) -> Plan:
    from mlflow_self_host.steps.backup.postgres import Contents, RestoreFacts, make_restore_plan

    dump = facts.get("dump")
    contents = None
    if dump is not None:
        contents = Contents(len(dump["tables"]) * 2, frozenset(("TABLE", t) for t in dump["tables"]),
                            tuple(dump.get("data", dump["tables"])), dump.get("counts"))
    restore_facts = RestoreFacts(_pg_database(facts), facts["path"], facts.get("local"), contents,
                                 facts.get("job_stopped", False), facts.get("running"))
    return make_restore_plan(settings, restore_facts, stop_start=args.get("stop_start", True))


def plan_dns(settings, facts: dict, args: dict) -> Plan:
    """The record the settings ask for, against Pi-hole's entries (``"entries"``) or a dnsmasq file's
    text (``"file"``, null: none); ``"remove"`` in args. An ``Edit`` op is compared as ``{"steps": [[...]]}``."""
    import dataclasses

    from mlflow_self_host.adapters.dns.dnsmasq import Dnsmasq
    from mlflow_self_host.adapters.dns.record import Edit, make_record_plan, wanted_cname

    wanted, remove = wanted_cname(settings), args.get("remove", False)
    if "file" in facts:
        plan = Dnsmasq(settings).make_plan(facts["file"], wanted, remove=remove)
    else:
        plan = make_record_plan(facts.get("entries", []), wanted, remove=remove, title="Pi-hole dns.cnameRecords")
    plan.changes = [dataclasses.replace(c, op={"steps": [list(s) for s in c.op.steps]}) if isinstance(c.op, Edit)
                    else c for c in plan.changes]
    return plan


def plan_deploy(settings, facts: dict, args: dict) -> Plan:
    """facts: the flags and what deploy reads before any change; ``job``: Nomad's plan and the registered
    job, read after the host and image steps (absent: not read yet); ``placement``: Nomad's message."""
    from mlflow_self_host.core.errors import ExitCode, UserError
    from mlflow_self_host.flows.deploy_plan import DeployFacts, JobFacts, make_plan

    version = facts.get("version", "0.100")
    job = facts.get("job")
    if job is not None:
        placement = job.get("placement")
        job = JobFacts(job_version=job.get("job_version"), running_version=job.get("running_version"),
                       stopped_version=job.get("stopped_version"),
                       changed=job.get("changed", True), diff=job.get("diff", ""),
                       modify_index=job.get("modify_index", 0), latest=job.get("latest"),
                       placement=UserError(placement, code=ExitCode.PLACEMENT) if placement else None,
                       database=_database_variable(settings, job.get("database")), tls=job.get("tls"))
        # the revision the parsed job reads: the one deploy passes it, unless the case says otherwise
        job.reads_revision = facts["job"].get("reads_revision", job.database.job_revision if job.database else None)
    return make_plan(settings, DeployFacts(
        version, settings.image_ref(version), skip_host=facts.get("skip_host", False),
        skip_build=facts.get("skip_build", False), backup=facts.get("backup", True),
        dry_run=facts.get("dry_run", False), migrate=facts.get("migrate", False),
        takeover=facts.get("takeover", 0), takeover_copy=facts.get("takeover_copy", False),
        registry_has_tag=facts.get("registry_has_tag"), job=job, schema=_schema(facts.get("schema"))))


def _schema(facts: dict | None):
    """``schema``: the database's revision against the image's chain: ``db_revision``, ``chain`` (the image's
    revisions, oldest first; absent: an image without labels), ``image_mlflow``; ``unreadable``: why the
    database was not read. The kind is compare's (steps/migrate/schema.py)."""
    from mlflow_self_host.steps.migrate import schema

    if facts is None:
        return None
    chain = schema.Chain(facts.get("image_mlflow", "3.17.2"), tuple(facts["chain"])) if facts.get("chain") else None
    return schema.facts(facts.get("db_revision"), chain, facts.get("unreadable", ""))


def _database_variable(settings, facts: dict | None):
    """store postgres: ``database``: ``wanted`` (the URL), ``current`` (the Variable's, null: none),
    ``exists``, ``modify_index``, ``revision`` (its item now), ``new_revision`` (a write's); the path is the
    job's (nomad/jobs/{job_name})."""
    from mlflow_self_host.steps.job.database_variable import VariableFacts
    from mlflow_self_host.steps.job.jobfile import database_variable

    if facts is None:
        return None
    return VariableFacts(database_variable(settings), facts["wanted"], facts.get("current"),
                         facts.get("exists", facts.get("current") is not None), facts.get("items", {}),
                         facts.get("modify_index", 0), facts.get("revision", ""), facts.get("new_revision", ""))


def plan_rollback(settings, facts: dict, args: dict) -> Plan:
    """facts: ``current`` (the job, or null), ``versions`` (Version, Stable, Stop, the image, and with store
    postgres the ``revision`` whose URL item its template reads), ``same_specification``: the versions Nomad's
    plan finds equal to the current one, and ``variable_items``: the names of the database Variable's items;
    ``schema``: the database against the target's image (as deploy's), ``backups``: {backup name: its recorded
    schema revision}, ``"restore"`` in args: --restore. The version to go back to is chosen from them and ``"to"`` in args as read_facts chooses it (``choose``:
    its refusals)."""
    from mlflow_self_host.flows.rollback import RollbackFacts, choose, make_plan

    def job(v: dict) -> dict:
        image, revision = v.pop("image", None), v.pop("revision", None)
        if image:
            task = {"Config": {"image": image}}
            if revision:
                task["Templates"] = [{"EmbeddedTmpl": f"{{{{ with nomadVar \"nomad/jobs/{settings.job_name}\" }}}}"
                                                      f"MLFLOW_BACKEND_STORE_URI={{{{ .database_url_{revision} }}}}"
                                                      "{{ end }}\n"}]
            v["TaskGroups"] = [{"Tasks": [task]}]
        return {"ID": settings.job_name, **v}

    current = job(dict(facts["current"])) if facts.get("current") else None
    versions = [job(dict(v)) for v in facts.get("versions", [])]
    target = choose(current, versions, args.get("to")) if current else None
    return make_plan(settings, RollbackFacts(current, versions, set(facts.get("same_specification", [])), target,
                                             frozenset(facts.get("variable_items", [])),
                                             schema=_schema(facts.get("schema")), restore=args.get("restore", False),
                                             backups=facts.get("backups", {})))


def plan_local(settings, facts: dict, args: dict) -> Plan:
    """`inv up` (``"task": "up"``, the default; ``"version"``, ``"require_docker"``) or `inv down` from
    local mode's facts (LocalFacts' fields; ``"container"`` as ContainerFacts', ``"ids"`` [euid, uid, gid])."""
    from mlflow_self_host.steps.local.facts import ContainerFacts, LocalFacts, make_down_plan, make_up_plan

    container = facts.get("container")
    local_facts = LocalFacts(**{**facts, "container": ContainerFacts(**container) if container else None,
                                "ids": tuple(facts.get("ids", (1000, 1000, 1000)))})
    if args.get("task") == "down":
        return make_down_plan(settings, local_facts)
    return make_up_plan(settings, local_facts, args.get("version", "0.99"), args.get("require_docker", False))


def plan_image(settings, facts: dict, args: dict) -> Plan:
    """`inv push` / `inv pushlatest` (``"task"``, ``"dry_run"``) or deploy's image (``"task": "deploy"``,
    ``"platform"`` wanted) from steps/image/publish.py's facts (``"built"``: the engine's platform, null: not
    built; ``"registry_error"``: {"message", "code"})."""
    from mlflow_self_host.steps.image import publish
    from mlflow_self_host.steps.image.platform import Choice, Platform
    from mlflow_self_host.core.version import Version

    version = Version(args.get("version", "0.99"))
    image_facts = _image_facts(settings, facts, version)
    task, dry_run = args.get("task", "push"), args.get("dry_run", False)
    if task == "deploy":
        choice = Choice([Platform.parse(args.get("platform", "linux/amd64"))], "the platform setting")
        return publish.make_release_plan(settings, image_facts, version, choice, dry_run=dry_run)
    tag = "latest" if task == "pushlatest" else version.tag
    return publish.make_push_plan(settings, image_facts, version, tag, dry_run=dry_run)


def _image_facts(settings, facts: dict, version):
    """steps/image/publish.py's ImageFacts: ``built`` (the engine's platform, null: not built), ``local_digests``,
    ``remote_digest``, ``engine_failure``, ``registry_error`` ({"message", "code"})."""
    from mlflow_self_host.core.errors import UserError
    from mlflow_self_host.steps.image import publish
    from mlflow_self_host.steps.image.platform import Platform

    error = facts.get("registry_error")
    return publish.ImageFacts(
        settings.image_ref(version.text), engine_at="the local socket (/var/run/docker.sock)",
        engine_failure=facts.get("engine_failure"),
        built=Platform.parse(facts["built"]) if facts.get("built") else None,
        local_digests=tuple(facts.get("local_digests", ())), remote_digest=facts.get("remote_digest"),
        registry_error=UserError(error["message"], code=error.get("code", 1)) if error else None)


def _choice(args: dict):
    from mlflow_self_host.steps.image.platform import Choice, Platform

    return Choice([Platform.parse(args.get("platform", "linux/amd64"))], "the platform setting")


def plan_build(settings, facts: dict, args: dict) -> Plan:
    """The release's image (release.image_plan): built unless the engine has v{version} for the platform
    wanted (``"platform"`` in args), pushed unless the registry's tag is this image; facts as plan_image's."""
    from mlflow_self_host.flows import release
    from mlflow_self_host.core.version import Version

    version = Version(args.get("version", "0.100"))
    return release.image_plan(settings, _image_facts(settings, facts, version), version, _choice(args),
                              dry_run=args.get("dry_run", False))


def plan_release(settings, facts: dict, args: dict) -> Plan:
    """`inv release` from what it reads before any change: git's (``repository``, ``identity``, ``dirty``
    porcelain lines, ``git_tag``: v{new} exists) and v{new}'s image as plan_image reads it (``image``).
    args: ``current``, ``new``, ``deploy``, ``skip_host``, ``allow_dirty``, ``platform``, ``dry_run``."""
    from mlflow_self_host.flows import release
    from mlflow_self_host.core.version import Version

    new = Version(args.get("new", "0.100"))
    rel = release.Release(settings, Version(args.get("current", "0.99")),
                          new, args.get("deploy", True), args.get("skip_host", False), args.get("allow_dirty", False))
    release_facts = release.ReleaseFacts(facts.get("repository", True), facts.get("identity", True),
                                         facts.get("dirty", []), facts.get("git_tag", False),
                                         _image_facts(settings, facts.get("image", {}), new), _choice(args))
    return release.make_plan(rel, release_facts, dry_run=args.get("dry_run", False))


def plan_store(settings, facts: dict, args: dict) -> Plan:
    """migrate-store: ``target`` (url, reachable, reason, tables, unread), ``source`` (revision, counts, parents,
    origin, unread) and optionally ``revisions`` (default: the pinned MLflow's chain). ``"step"`` in args:
    ``copy`` (default), ``backup`` (facts ``running``: the job has a live allocation) or ``environment``
    (facts ``venv_ready``)."""
    from pathlib import Path

    from mlflow_self_host.steps.migrate import schema
    from mlflow_self_host.core import database
    from mlflow_self_host.steps.store.migrate_store import (BackupFacts, Facts, Source, Target, make_backup_plan,
                                                      make_environment_plan, make_plan)

    t, s = facts.get("target", {}), facts.get("source", {})
    target = Target(t.get("url", "postgresql://mlflow:secret@db.lan:5432/mlflow"), t.get("reachable", True),
                    t.get("reason", ""), t.get("tables", []), unread=t.get("unread", False))
    step = args.get("step", "copy")
    if step == "environment":
        return make_environment_plan(("/home/u/.cache/mlflow-self-host/mlflow-server-0123456789ab",
                                      facts.get("venv_ready", False), "mlflow==3.17.2"))
    if step == "backup":
        return make_backup_plan(BackupFacts(s.get("origin", "m700:/opt/nomad/data/mlflow/backend/mlflow.db"),
                                            settings.job_name, facts.get("running", False), target))
    source = Source(s.get("path", "/tmp/copy/mlflow.db"), s.get("origin", "/data/mlflow.db"), s.get("revision"),
                    s.get("counts", {}), s.get("parents", {}), s.get("unread", False))
    revisions = tuple(facts.get("revisions") or schema.chain().order)
    return make_plan(Facts(source, target, revisions, args.get("mlflow_version", "3.17.2"), database.kind(settings),
                           settings.sources["store"], Path(args.get("settings_file", "invoke.yaml"))))


def plan_takeover(settings, facts: dict, args: dict) -> Plan:
    """takeover (``inv migrate``, deploy's first step): ``job`` (its ``image``, ``stopped``; null: none),
    ``others`` (IDs of other running jobs mounting the volumes), ``db`` (``revision``, ``legacy``, ``size``,
    ``integrity``; null: no database), ``backend``/``artifacts`` (``[total, wrong]``; null: no folder),
    ``backups`` and ``other_files``; ``revisions``: the image's chain, oldest first. ``require`` in args is
    `inv migrate` (refusals as read() makes them, then the plan)."""
    from mlflow_self_host.steps.migrate import host_store as store, schema
    from mlflow_self_host.flows import takeover

    def job(image, stopped=False, name=None):
        return {"ID": name or settings.job_name, "Stop": stopped,
                "TaskGroups": [{"Tasks": [{"Config": {"image": image}}]}]}

    def owners(pair):
        return None if pair is None else store.Owners(pair[0], pair[1], [f"{settings.backend_path}/x"] if pair[1] else [])

    db_path = f"{settings.backend_path.rstrip('/')}/mlflow.db"
    db = facts.get("db", {})
    database = None if db is None else store.Database(
        db_path, db.get("size", 4096), db.get("integrity", "ok"), db.get("revision", "r1"),
        db.get("legacy", {"experiments": 0, "runs": 0}), db.get("journals", []))
    found = store.StoreFacts(f"host {settings.host}", db_path, owners(facts.get("backend", [3, 0])),
                             owners(facts.get("artifacts", [5, 0])), database, facts.get("other_files", []),
                             facts.get("backups", []))
    current = facts.get("job", {"image": "registry.lan:5000/mlflow:latest"})
    current = None if current is None else job(current["image"], current.get("stopped", False))
    others = [job("registry.lan:5000/mlflow:latest", name=name) for name in facts.get("others", [])]
    chain = schema.Chain("3.17.2", tuple(facts.get("revisions", ["r1", "r2", "r3"])))
    takeover.refuse_bad_store(settings, found, chain, args.get("require", False), takeover._job_is_ours(current))
    return takeover.make_plan(settings, found, current, chain, args.get("backup_name", "copy.db"), others).plan


AREAS = {"host": plan_host, "backup": plan_backup, "restore": plan_restore, "pg_backup": plan_pg_backup,
         "pg_restore": plan_pg_restore, "dns": plan_dns,
         "deploy": plan_deploy, "rollback": plan_rollback,
         "local": plan_local, "image": plan_image, "store": plan_store, "takeover": plan_takeover,
         "build": plan_build, "release": plan_release}
