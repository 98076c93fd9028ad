"""`inv doctor`'s rows for the PostgreSQL store (setting store: postgres): reachable, schema revision, the
Nomad Variable the job reads the URL from, and the artifacts folder on shared storage.

Asked through ``worker.py target`` with the MLflow environment's python (psycopg2 and SQLAlchemy are
the image's, not this package's). That environment is made once by `inv migrate-store` (or `inv up`
without Docker); doctor does not make it (a minute, past any check's deadline) but says how.
"""
from __future__ import annotations

from ...core import database


def rows(settings, timeout: float):
    """Yield doctor ``Row``s: "database", then "database schema"."""
    from .. import local
    from ...core.doctor_row import Row
    from ...core.errors import UserError
    from ..migrate import schema
    from . import migrate_store as migrate

    try:
        url = database.url(settings)
    except UserError as exc:
        yield Row("database", False, exc.message, exc.hint or "")
        return
    shown = database.shown_url(url)
    try:
        venv = local.venv_dir(settings)
    except UserError as exc:
        yield Row("database", False, f"{shown}: not checked: {exc.message}", exc.hint or "")
        return
    if not (venv / local.VENV_MARKER).exists():
        yield Row("database", False, f"{shown}: not checked: the MLflow environment that talks to it is not made yet",
                  "run `inv migrate-store --to postgres --dry-run` once (it makes it, about a minute)")
        return
    target = migrate.read_target(venv / "bin" / "python", url, timeout=max(1.0, float(timeout) * 0.75))
    if not target.reachable:
        host, port, name = database.endpoint(url)
        yield Row("database", False, f"{shown}: {target.reason}",
                  f"is PostgreSQL up on {host}:{port} and reachable from here (listen_addresses, pg_hba.conf)? "
                  f"does database {name} exist, with the user and password of MSH_DATABASE_URL?")
        return
    yield Row("database", True, f"{shown} (PostgreSQL {target.server})")
    chain = schema.chain()
    if target.revision is None:
        yield Row("database schema", False, f"no MLflow schema ({len(target.tables)} tables)",
                  "`inv migrate-store --to postgres` copies the SQLite store into it")
    elif target.revision == chain.head:
        yield Row("database schema", True, f"at {target.revision}, the image's head (MLflow {chain.mlflow_version})")
    elif chain.knows(target.revision):
        yield Row("database schema", True, f"at {target.revision}, {chain.behind(target.revision)} migrations behind "
                                           f"the image's head {chain.head}: the image upgrades it when it starts")
    else:
        yield Row("database schema", False, f"at {target.revision}, which MLflow {chain.mlflow_version} does not know "
                                            "(written by a newer MLflow)",
                  "deploy an image with that MLflow, or restore the database from a backup")


# --- the artifacts folder: shared storage when the allocations may run on several clients ---------------------
# Filesystem types (findmnt's FSTYPE, or `stat -f`'s %T) that several machines mount at once and see the same
# files through: network and cluster filesystems. Anything else is this client's own.
SHARED_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb2", "smb3", "smbfs", "ceph", "gfs", "fuse.ceph-fuse", "glusterfs", "fuse.glusterfs", "lustre",
    "gpfs", "beegfs", "ocfs2", "gfs2", "fuse.sshfs", "fuse.juicefs", "fuse.s3fs", "fuse.rclone", "fuse.mfs",
    "fuse.seaweedfs", "fuse.geesefs",
})


def mount_command(path: str) -> str:
    """What runs on the client: ``missing``, or ``FSTYPE SOURCE TARGET`` of the mount holding ``path``."""
    from ...adapters.shell import quote

    p = quote(path)
    return (f"if [ ! -d {p} ]; then echo missing; elif command -v findmnt >/dev/null 2>&1; "
            f"then findmnt -r -n -o FSTYPE,SOURCE,TARGET -T {p}; else stat -f -c %T {p}; fi")


def parse_mount(stdout: str) -> tuple[str, str, str] | None:
    """(fstype, source, mount point) from mount_command's answer; None when the folder is missing. findmnt's
    raw output writes a space in a field as \\x20."""
    import re

    text = stdout.strip()
    if not text or text == "missing":
        return None
    parts = [re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), part)
             for part in text.splitlines()[0].split()]
    return (parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else "")


def artifacts_row(path: str, host: str, mount: tuple[str, str, str] | None, allocations: int):
    """The "shared artifacts" row, from what the client said (pure)."""
    from ...core.doctor_row import Row

    name = "shared artifacts"
    where = f"{path} on {host}"
    if mount is None:
        return Row(name, False, f"{where} does not exist",
                   f"mount the shared folder (NFS, as the original setup has it) at {path} on every Nomad client; "
                   "`inv configure-host` then sets its owner and mode")
    fstype, source, target = mount
    origin = f"{fstype}" + (f" from {source}" if source and source not in ("-", fstype) else "") + \
        (f", mounted at {target}" if target and target != path else "")
    plural = f"{allocations} allocations"
    if fstype == "fuseblk" and not source:  # `stat -f` names every FUSE filesystem so, shared or not
        return Row(name, False, f"{where} is on a FUSE filesystem, which `stat -f` cannot name (no findmnt there)",
                   "install findmnt (util-linux) on the client, so that doctor can tell whether it is shared")
    if fstype in SHARED_FILESYSTEMS:
        return Row(name, True, f"{where}: {origin} (shared storage: the {plural} see the same artifacts)"
                   if allocations > 1 else f"{where}: {origin} (shared storage)")
    if allocations <= 1:
        return Row(name, True, f"{where}: {origin}, this client's own disk (one allocation: fine; a second one "
                               "needs shared storage)")
    return Row(name, False, f"{where} is on {origin}, this client's own disk: with {plural} on several clients, "
                            "an artifact logged through one is missing from the others",
               f"mount one shared folder (NFS, CIFS, CephFS...) at {path} on every Nomad client, or set "
               "artifacts_path to where it is mounted; or set count to 1")


def artifacts_rows(settings, timeout: float):
    """Yield the "shared artifacts" row: artifacts_path on the host doctor reaches over SSH."""
    from ...core.doctor_row import Row
    from ...core.errors import UserError
    from ...adapters import ssh
    from ..job import jobfile

    try:
        allocations = jobfile.allocations(settings, "postgres")
    except UserError as exc:
        yield Row("shared artifacts", False, exc.message, exc.hint or "")
        return
    remote = ssh.connect(settings)
    try:
        answer = remote.run(mount_command(settings.artifacts_path), sudo=True, check=True)
    finally:
        remote.close()
    yield artifacts_row(settings.artifacts_path, settings.host, parse_mount(answer.stdout), allocations)


# --- the Nomad Variable the job's template reads the URL from (steps/job/database_variable.py) ----------------------
def variable_rows(settings, timeout: float):
    """Yield the "database variable" row: the Variable holds MSH_DATABASE_URL (compared, never shown), and the
    registered job names its revision (else the write has not been rolled out)."""
    from ...core.doctor_row import Row
    from ...core.errors import UserError
    from ..job import database_variable, jobfile
    from ...adapters import nomad_api

    name = "database variable"
    try:
        n = nomad_api.client(settings)
        facts = database_variable.read(settings, n)
        job = jobfile.current(settings, n)
    except UserError as exc:
        yield Row(name, False, exc.message, exc.hint or "")
        return
    deploy = "`inv deploy` writes it from MSH_DATABASE_URL"
    if not facts.exists:
        yield Row(name, False, f"{facts.path} does not exist: the job's tasks wait for it", deploy)
    elif facts.current is None:
        yield Row(name, False, f"{facts.path} has no item {database_variable.ITEM}: the job's tasks stop at start "
                               "(exit 78)", deploy)
    elif not facts.holds_wanted:
        yield Row(name, False, f"{facts.path} holds another URL than MSH_DATABASE_URL",
                  "`inv deploy` writes MSH_DATABASE_URL there and replaces the allocations one at a time")
    elif facts.differs:
        yield Row(name, False, f"{facts.path} holds MSH_DATABASE_URL, without a revision of deploy's making",
                  "`inv deploy` writes one and rolls it out")
    elif job is not None and not job.get("Stop") and (read := database_variable.registered_revision(job)) \
            not in (None, facts.revision):
        item = database_variable.item_for(read)
        if item not in facts.items:
            yield Row(name, False, f"job {settings.job_name} reads the item {item}, which {facts.path} lacks: its "
                                   "tasks stop at start (exit 78)", "`inv deploy` rolls out the URL there now")
        else:
            yield Row(name, False, f"{facts.path} holds MSH_DATABASE_URL at revision {facts.revision}, but job "
                                   f"{settings.job_name} reads revision {read}: written, not rolled out (a deploy "
                                   "stopped after the write, or Nomad reverted it)",
                      "`inv deploy` rolls it out, one allocation at a time")
    else:
        yield Row(name, True, f"{facts.path} holds MSH_DATABASE_URL (revision {facts.revision})")
