"""Backup and restore of MLflow's SQLite database, on the Nomad client over SSH or from ./data.

A backup is SQLite's online backup (never a file copy), so it is consistent while MLflow writes:
python3's ``sqlite3.Connection.backup`` on the host, or the ``sqlite3`` CLI's ``.backup`` when the
host has no python3. The copy is written beside the data (``backups_path``) under a temporary name,
checked with ``PRAGMA integrity_check``, then published as
``mlflow-{UTC YYYYmmddTHHMMSSZ}-v{running version}.db``; only the newest ``backup_keep`` are kept.

Restore stops the job, keeps the current database aside (``mlflow.db.before-restore-{UTC}``), puts
the backup in place with the original's owner and mode, starts the job and waits until it is healthy.

Everything that touches a host is a shell command built here (``_Commands``) and run by a ``Host``
(SSH or this machine), so local mode and the Nomad client share one code path.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import ExitCode, UserError
from .plan import Plan, show

DB_NAME = "mlflow.db"  # the image's store: sqlite:////mnt/backend_store/mlflow.db
LOCAL_DOWNLOADS = "backups"  # ./backups on this machine, for --download
_NAME = re.compile(r"^mlflow-(?P<stamp>\d{8}T\d{6}Z)-v(?P<version>[0-9A-Za-z.]+?)(?:-(?P<n>\d+))?\.db$")

# Run on the host with python3 (stdlib only). Prints one JSON line; exit 0 ok, 3 refused.
_SCRIPT = r'''
import json, os, sqlite3, sys
def check(path):
    try:
        con = sqlite3.connect(path, timeout=30)
        try:
            rows = [r[0] for r in con.execute("PRAGMA integrity_check")]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return "ok" if rows == ["ok"] else "; ".join(str(r) for r in rows[:5])
def done(data, code=0):
    print(json.dumps(data)); sys.exit(code)
op = sys.argv[1]
if op == "check":
    path = sys.argv[2]
    if not os.path.isfile(path):
        done({"error": "missing", "path": path}, 3)
    done({"path": path, "integrity": check(path), "size": os.path.getsize(path)})
if op == "backup":
    src, folder, base = sys.argv[2:5]
    if not os.path.isfile(src):
        done({"error": "missing", "path": src}, 3)
    tmp = os.path.join(folder, "." + base + ".partial")
    if os.path.exists(tmp):
        os.unlink(tmp)
    source = sqlite3.connect("file:" + src + "?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(tmp)
    try:
        source.backup(target)  # one step: one consistent snapshot under a read lock
    finally:
        target.close(); source.close()
    result = check(tmp)
    if result != "ok":
        os.unlink(tmp)
        done({"error": "integrity", "integrity": result}, 3)
    os.chmod(tmp, 0o640)
    n = 0
    while True:
        final = os.path.join(folder, base + ("-%d" % n if n else "") + ".db")
        try:
            os.link(tmp, final)  # never overwrites an existing backup
            break
        except FileExistsError:
            n += 1
    os.unlink(tmp)
    done({"path": final, "integrity": "ok", "size": os.path.getsize(final)})
'''


class NoDatabase(UserError):
    """There is no database to back up (MLflow has not run there yet)."""


def utc_stamp(now: _dt.datetime | None = None) -> str:
    return (now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


def backup_base_name(version: str, now: _dt.datetime | None = None) -> str:
    """``mlflow-20261126T233700Z-v0.99`` (the file adds ``.db``, or ``-N.db`` within one second)."""
    return f"mlflow-{utc_stamp(now)}-v{str(version).lstrip('v')}"


def backup_sort_key(name: str):
    match = _NAME.match(name)
    return (match["stamp"], int(match["n"] or 0)) if match else None


def is_backup_name(name: str) -> bool:
    return _NAME.match(name) is not None


def to_remove(names, keep: int) -> list[str]:
    """The backups retention removes: all but the newest ``keep`` (other files are never touched)."""
    ours = sorted((n for n in names if is_backup_name(n)), key=backup_sort_key, reverse=True)
    return ours[max(int(keep), 0):] if keep > 0 else []


@dataclass
class BackupResult:
    path: str  # on the host (or this machine with --local)
    size: int
    version: str
    where: str  # "host m700" or "local ./data"
    removed: list
    downloaded: str | None = None


# --- where the commands run ----------------------------------------------------------------------
class Host:
    """Runs shell commands; ``sh`` returns (exit code, stdout, stderr)."""

    label = ""
    sudo = False

    def sh(self, command: str) -> tuple[int, str, str]:  # pragma: no cover - interface
        raise NotImplementedError

    def must(self, command: str, what: str) -> str:
        code, out, err = self.sh(command)
        if code != 0:
            raise UserError(f"{what} failed on {self.label}: {(err or out).strip()[-400:] or f'exit {code}'}")
        return out


class LocalHost(Host):
    def __init__(self):
        self.label = "this machine"

    def sh(self, command):
        proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True)
        return proc.returncode, proc.stdout, proc.stderr


class SSHHost(Host):
    sudo = True

    def __init__(self, settings, remote=None):
        if remote is None:
            from .host import ssh

            remote = ssh.connect(settings)
        self.remote = remote
        self.label = f"{settings.ssh_user}@{settings.host}"

    def sh(self, command):
        result = self.remote.run(command, sudo=True, check=False)  # the whole line under sudo
        return result.exited, result.stdout or "", result.stderr or ""


# --- the commands ---------------------------------------------------------------------------------
def _q(value) -> str:
    return shlex.quote(str(value))


class _Commands:
    """Shell commands for one host, given which SQLite tool it has (``python3`` or ``sqlite3``)."""

    def __init__(self, tool: str):
        self.tool = tool

    @staticmethod
    def find_tool() -> str:
        return "command -v python3 >/dev/null && echo python3 || { command -v sqlite3 >/dev/null && echo sqlite3; } || true"

    def backup(self, src: str, folder: str, base: str) -> str:
        if self.tool == "python3":
            return f"python3 -c {_q(_SCRIPT)} backup {_q(src)} {_q(folder)} {_q(base)}"
        tmp = f"{folder}/.{base}.partial"
        final = f"{folder}/{base}.db"
        return (
            f"[ -f {_q(src)} ] || {{ echo '{{\"error\": \"missing\"}}'; exit 3; }}; "
            f"rm -f {_q(tmp)} && sqlite3 {_q(src)} {_q('.backup ' + _sql_str(tmp))} && "
            f"r=$(sqlite3 {_q(tmp)} 'PRAGMA integrity_check' 2>&1 | head -5 | tr '\\n' ' ' | sed 's/ $//'); "
            f"if [ \"$r\" != ok ]; then rm -f {_q(tmp)}; printf '{{\"error\": \"integrity\", \"integrity\": \"%s\"}}\\n' \"$r\"; exit 3; fi; "
            f"chmod 640 {_q(tmp)}; f={_q(final)}; n=1; "
            f"while ! ln {_q(tmp)} \"$f\" 2>/dev/null; do f={_q(folder + '/' + base)}-$n.db; n=$((n+1)); done; "
            f"rm -f {_q(tmp)}; printf '{{\"path\": \"%s\", \"integrity\": \"ok\", \"size\": %s}}\\n' \"$f\" $(stat -c %s \"$f\")"
        )

    def check(self, path: str) -> str:
        if self.tool == "python3":
            return f"python3 -c {_q(_SCRIPT)} check {_q(path)}"
        return (
            f"[ -f {_q(path)} ] || {{ echo '{{\"error\": \"missing\"}}'; exit 3; }}; "
            f"r=$(sqlite3 {_q(path)} 'PRAGMA integrity_check' 2>&1 | head -5 | tr '\\n' ' ' | sed 's/ $//' | tr '\"' \"'\"); "
            f"printf '{{\"integrity\": \"%s\", \"size\": %s}}\\n' \"$r\" $(stat -c %s {_q(path)})"
        )

    @staticmethod
    def make_folder(folder: str) -> str:
        return f"mkdir -p {_q(folder)} && chmod 750 {_q(folder)}"

    @staticmethod
    def is_folder(folder: str) -> str:
        return f"test -d {_q(folder)}"

    @staticmethod
    def is_file(path: str) -> str:
        return f"test -f {_q(path)}"

    @staticmethod
    def list_folder(folder: str) -> str:
        return f"ls -1A {_q(folder)}"

    @staticmethod
    def remove(paths) -> str:
        return "rm -f -- " + " ".join(_q(p) for p in paths)

    @staticmethod
    def put_in_place(backup: str, db: str, aside: str) -> str:
        """Move the current database (and its -wal/-shm/-journal) aside, copy the backup in its place
        with the original's owner and mode (the folder's owner when there was none)."""
        folder = str(PurePosixPath(db).parent)
        tmp = f"{db}.restoring"
        return (
            f"set -e; ref={_q(folder)}; "
            f"if [ -e {_q(db)} ]; then mv {_q(db)} {_q(aside)}; ref={_q(aside)}; fi; "
            f"for x in -wal -shm -journal; do if [ -e {_q(db)}$x ]; then mv {_q(db)}$x {_q(aside)}$x; fi; done; "
            f"cp {_q(backup)} {_q(tmp)}; chown --reference=\"$ref\" {_q(tmp)}; "
            f"if [ \"$ref\" != {_q(folder)} ]; then chmod --reference=\"$ref\" {_q(tmp)}; else chmod 664 {_q(tmp)}; fi; "
            f"mv {_q(tmp)} {_q(db)}"
        )

    @staticmethod
    def copy_for_download(path: str, tmp: str, user: str) -> str:
        return f"install -m 600 -o {_q(user)} {_q(path)} {_q(tmp)}"


def _sql_str(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def _parse(out: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}


def _tool(host: Host) -> _Commands:
    code, out, _ = host.sh(_Commands.find_tool())
    tool = out.strip().splitlines()[-1] if out.strip() else ""
    if tool not in ("python3", "sqlite3"):
        raise UserError(
            f"{host.label} has neither python3 nor the sqlite3 CLI: no way to take an online SQLite backup",
            hint="install one on the host: `sudo apt-get install sqlite3` (or python3)",
        )
    return _Commands(tool)


# --- where the data is ----------------------------------------------------------------------------
@dataclass
class Target:
    """One MLflow store: its database, its backups folder and where commands run."""

    host: Host
    db: str
    backups: str
    where: str

    @classmethod
    def remote(cls, settings, remote=None) -> "Target":
        return cls(SSHHost(settings, remote), str(PurePosixPath(settings.backend_path) / DB_NAME),
                   settings.backups_path, f"host {settings.host}")

    @classmethod
    def local(cls, settings) -> "Target":
        data = settings.path(settings.local_data_dir)
        return cls(LocalHost(), str(data / "backend" / DB_NAME), str(data / "backups"),
                   f"local {settings.local_data_dir}")


def check_backup(host: Host, commands: _Commands, path: str) -> dict:
    """``PRAGMA integrity_check`` of a file on the host; UserError when missing or not "ok"."""
    code, out, err = host.sh(commands.check(path))
    data = _parse(out)
    if data.get("error") == "missing":
        raise UserError(f"no backup at {path} on {host.label}", hint="`inv backup` lists where backups go; "
                        "give a file name in backups_path, a path on the host, or a local file")
    if code != 0 or "integrity" not in data:
        raise UserError(f"could not check {path} on {host.label}: {(err or out).strip()[-300:]}")
    if data["integrity"] != "ok":
        raise UserError(f"{path} fails the SQLite integrity check: {data['integrity']}",
                        hint="refusing to restore it; pick another backup")
    return data


# --- backup ---------------------------------------------------------------------------------------
def backup_plan(settings, target: Target, version: str, download: bool) -> Plan:
    plan = Plan(f"backup of {target.db} ({target.where})")
    code, _, _ = target.host.sh(_Commands.is_folder(target.backups))
    if code != 0:
        plan.add("create", target.backups, "backups folder")
    plan.add("run", f"{target.backups}/{backup_base_name(version)}.db",
             "SQLite online backup, then PRAGMA integrity_check")
    plan.add("delete", f"{target.backups}/mlflow-*.db", f"all but the newest {settings.backup_keep}")
    if download:
        plan.add("create", f"./{LOCAL_DOWNLOADS}/", "a copy on this machine")
    return plan


def take(settings, target: Target, version: str, download: bool = False) -> BackupResult:
    """Take one backup on ``target``, apply retention, optionally download it."""
    host = target.host
    commands = _tool(host)
    if host.sh(_Commands.is_folder(target.backups))[0] != 0:
        host.must(_Commands.make_folder(target.backups), f"creating {target.backups}")
    code, out, err = host.sh(commands.backup(target.db, target.backups, backup_base_name(version)))
    data = _parse(out)
    if data.get("error") == "missing":
        raise NoDatabase(f"no MLflow database at {target.db} ({target.where})",
                        hint="has MLflow run there yet? check backend_path / local_data_dir")
    if data.get("error") == "integrity":
        raise UserError(f"the backup copy fails the SQLite integrity check: {data.get('integrity')}",
                        hint="the copy was removed; check the source with `sqlite3 mlflow.db 'PRAGMA integrity_check'`")
    if code != 0 or "path" not in data:
        raise UserError(f"backup failed on {host.label}: {(err or out).strip()[-400:] or f'exit {code}'}")
    removed = prune(settings, target)
    result = BackupResult(path=data["path"], size=int(data["size"]), version=str(version),
                          where=target.where, removed=removed)
    if download:
        result.downloaded = str(_download(settings, target, data["path"]))
    return result


def prune(settings, target: Target) -> list[str]:
    out = target.host.must(_Commands.list_folder(target.backups), f"listing {target.backups}")
    old = to_remove(out.split(), settings.backup_keep)
    if old:
        paths = [f"{target.backups}/{name}" for name in old]
        target.host.must(_Commands.remove(paths), "removing old backups")
    return old


def _download(settings, target: Target, path: str) -> Path:
    local_dir = settings.root / LOCAL_DOWNLOADS
    local_dir.mkdir(parents=True, exist_ok=True)
    dest = local_dir / PurePosixPath(path).name
    if isinstance(target.host, LocalHost):
        import shutil

        shutil.copyfile(path, dest)
        return dest
    tmp = f"/tmp/.msh-download-{PurePosixPath(path).name}"
    target.host.must(_Commands.copy_for_download(path, tmp, settings.ssh_user), "preparing the download")
    try:
        target.host.remote.get(tmp, str(dest))
    finally:
        target.host.sh(_Commands.remove([tmp]))
    return dest


def running_version(settings) -> str | None:
    """The version of the image the Nomad job runs (``...:v0.99`` -> ``0.99``), None if unknown."""
    from .job import jobfile

    try:
        job = jobfile.current(settings, _nomad(settings))
    except UserError:  # an unknown version is reported by the caller
        return None
    return jobfile.version_of(jobfile.image_of(job)) if job else None


def _print_result(result: BackupResult) -> None:
    from . import console

    console.done(f"backup {result.path} ({_size(result.size)}, integrity ok, {result.where})")
    for name in result.removed:
        console.info(f"removed old backup {name}")
    if result.downloaded:
        console.done(f"downloaded to {result.downloaded}")
    console.result(result.downloaded or result.path)


def backup(settings, download: bool = False, local: bool = False, dry_run: bool = False, version=None):
    """`inv backup`: one integrity-checked backup of the Nomad client's (or ./data's) database."""
    from . import console

    if local:
        target = Target.local(settings)
        if version is None:
            from .version import read_version

            version = str(read_version(settings.root))
    else:
        target = Target.remote(settings)
        if version is None:
            version = running_version(settings)
            if version is None:
                from .version import read_version

                version = str(read_version(settings.root))
                console.warn(f"could not read the running version from Nomad; labelling the backup v{version} "
                             "(version.txt)")
    plan = backup_plan(settings, target, version, download)
    if dry_run:
        show(plan, dry_run=True)
        return plan
    console.step(f"backing up {target.db} ({target.where})")
    result = take(settings, target, version, download=download)
    _print_result(result)
    return result


def before_deploy(settings, running_version, new_version):
    """Called by deploy before an image version change: a remote backup labelled with the running
    version (an MLflow upgrade may migrate the schema). Returns the ``BackupResult``, or None (with a
    warning) when there is no database yet; any other failure is a UserError that stops the deploy."""
    from . import console

    console.step(f"backing up the database before v{running_version} → v{new_version}")
    try:
        result = take(settings, Target.remote(settings), str(running_version))
    except NoDatabase as exc:
        console.warn(f"{exc.message}: nothing to back up")
        return None
    _print_result(result)
    return result


# --- restore --------------------------------------------------------------------------------------
def _resolve_backup(settings, target: Target, backup_arg: str) -> tuple[str, Path | None]:
    """The backup's path on the target, and the local file to upload first (if it is one).

    A bare name is looked up in the backups folder, a path on the host; when the host has no such
    file but this machine does (``./backups/...`` from --download), that file is uploaded."""
    if isinstance(target.host, LocalHost):
        path = Path(backup_arg).expanduser()
        if not path.is_absolute() and not path.exists():
            path = Path(target.backups) / backup_arg
        return str(path.resolve() if path.exists() else path), None
    on_host = backup_arg if "/" in backup_arg else f"{target.backups}/{backup_arg}"
    if target.host.sh(_Commands.is_file(on_host))[0] == 0:
        return on_host, None
    local = Path(backup_arg).expanduser()
    if local.is_file():  # a downloaded backup: uploaded into backups_path first
        return f"{target.backups}/{local.name}", local
    return on_host, None


def restore_plan(settings, target: Target, path: str, upload: Path | None, aside: str, local: bool) -> Plan:
    plan = Plan(f"restore {path} ({target.where})")
    if upload:
        plan.add("push", path, f"upload {upload}")
    if local:
        plan.add("stop", "local MLflow", "inv down")
    else:
        plan.add("stop", f"job {settings.job_name}", "and wait until its allocations stopped")
    plan.add("move", target.db, f"kept aside as {PurePosixPath(aside).name}")
    plan.add("create", target.db, f"copy of {PurePosixPath(path).name}, owner and mode as the original")
    if local:
        plan.add("start", "local MLflow", "inv up, wait healthy")
    else:
        plan.add("start", f"job {settings.job_name}", "and wait until healthy")
    return plan


def restore(settings, backup_arg: str, local: bool = False, dry_run: bool = False, version=None):
    """`inv restore BACKUP`: refuse a backup failing integrity_check; else stop, swap, start, wait."""
    from . import console

    target = Target.local(settings) if local else Target.remote(settings)
    host = target.host
    commands = _tool(host)
    path, upload = _resolve_backup(settings, target, backup_arg)
    if upload and not dry_run:
        _upload(settings, target, upload, path)
    if upload and dry_run:
        _check_local_file(upload)
    else:
        check_backup(host, commands, path)
    _warn_other_version(settings, path, local)
    aside = f"{target.db}.before-restore-{utc_stamp()}"
    plan = restore_plan(settings, target, path, upload if dry_run else None, aside, local)
    if dry_run:
        if not local:
            from .job import lock

            lock.check_free(settings)
        show(plan, dry_run=True)
        return plan
    show(plan)
    if local:
        from . import local as local_mode
        from .version import read_version

        local_mode.down(settings)
        host.must(_Commands.put_in_place(path, target.db, aside), "putting the backup in place")
        local_mode.up(settings, version or read_version(settings.root))
    else:
        from .job import lock

        with lock.hold(settings, f"restore {PurePosixPath(path).name}"):
            _restore_remote(settings, host, path, target, aside)
    console.done(f"restored {path}; the previous database is kept as {aside}")
    return aside


def _restore_remote(settings, host, path: str, target, aside: str) -> None:
    """Stop the job, put the backup in place, start the job and wait (under the deploy lock)."""
    from . import console

    nomad = _nomad(settings)
    job = stop_job(settings, nomad)
    host.must(_Commands.put_in_place(path, target.db, aside), "putting the backup in place")
    if job.get("Stop"):
        console.warn(f"job {settings.job_name} was stopped before the restore: left stopped")
        return
    from .job import follow

    response = start_job(settings, nomad, job)
    try:
        outcome = follow.after_submit(settings, nomad, response, f"job {settings.job_name}")
        if outcome.status != "successful":  # no update block, so no deployment to follow
            wait_running(settings, nomad, outcome.job_version)
    except UserError as exc:
        raise UserError(f"after the restore: {exc.message}",
                        hint=f"the previous database is kept as {aside}: `inv restore {aside}` puts it "
                             "back; `inv logs --stderr` shows why MLflow failed", code=exc.code) from None


def _warn_other_version(settings, path: str, local: bool) -> None:
    """A backup taken under another version: the server migrates it on start (or cannot, if newer)."""
    from . import console

    match = _NAME.match(PurePosixPath(path).name)
    if not match:
        return
    if local:
        from .version import read_version

        now = str(read_version(settings.root))
    else:
        now = running_version(settings)
    if now and match["version"] != now:
        console.warn(f"this backup was taken under v{match['version']}; v{now} will run it "
                     "(the image migrates an older schema on start; an older MLflow cannot open a newer one)")


def _check_local_file(path: Path) -> None:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        rows = [r[0] for r in con.execute("PRAGMA integrity_check")]
        con.close()
    except sqlite3.DatabaseError as exc:
        rows = [str(exc)]
    if rows != ["ok"]:
        raise UserError(f"{path} fails the SQLite integrity check: {'; '.join(rows[:5])}",
                        hint="refusing to restore it; pick another backup")


def _upload(settings, target: Target, local: Path, path: str) -> None:
    _check_local_file(local)
    host = target.host
    if host.sh(_Commands.is_folder(target.backups))[0] != 0:
        host.must(_Commands.make_folder(target.backups), f"creating {target.backups}")
    host.remote.put(str(local), path, mode="0640", sudo=True)


# --- the Nomad job --------------------------------------------------------------------------------
def _nomad(settings):
    from .job import nomad_api

    return nomad_api.client(settings)


def _allocs(settings, nomad) -> list[dict]:
    return nomad.job.get_allocations(settings.job_name) or []


def _nomad_call(settings, what: str, fn, *args, **kwargs):
    from .job import nomad_api

    return nomad_api.call(settings, what, fn, *args, **kwargs)


def stop_job(settings, nomad, timeout: float | None = None) -> dict:
    """Stop the job (like `nomad job stop`, no purge) and wait until no allocation runs."""
    from .job import nomad_api

    job = _nomad_call(settings, f"reading job {settings.job_name}", nomad.job.get_job, settings.job_name)
    _nomad_call(settings, f"stopping job {settings.job_name}", nomad.job.deregister_job, settings.job_name)
    stopped = _nomad_call(settings, f"reading job {settings.job_name}", nomad.job.get_job, settings.job_name)
    if stopped.get("Stop") and stopped.get("Stable"):
        # the stopped copy keeps the Stable flag (fsm.go): Nomad's auto_revert could go back to it
        nomad_api.set_stable(settings, nomad, stopped["Version"], False)
    deadline = time.monotonic() + (timeout or settings.deploy_timeout)
    while True:
        live = [a for a in _nomad_call(settings, "listing allocations", _allocs, settings, nomad)
                if a.get("ClientStatus") in ("pending", "running")]
        if not live:
            return job
        if time.monotonic() > deadline:
            raise UserError(f"job {settings.job_name} still has running allocations after the stop",
                            hint="check `nomad job status`; the database was not touched")
        time.sleep(0.5)


def start_job(settings, nomad, job: dict) -> dict:
    """Start the stopped job again with its last definition (like `nomad job start`); Nomad's answer."""
    job = dict(job)
    job["Stop"] = False
    for key in ("CreateIndex", "ModifyIndex", "JobModifyIndex", "SubmitTime", "Status", "StatusDescription",
                "Version", "Stable"):
        job.pop(key, None)
    return _nomad_call(settings, f"starting job {settings.job_name}", nomad.job.register_job, settings.job_name,
                       {"Job": job})


def wait_running(settings, nomad, job_version, timeout: float | None = None) -> dict:
    """Wait until an allocation of ``job_version`` runs (for a job Nomad makes no deployment for)."""

    deadline = time.monotonic() + (timeout or settings.deploy_timeout)
    while True:
        allocs = [a for a in _nomad_call(settings, "listing allocations", _allocs, settings, nomad)
                  if job_version is None or a.get("JobVersion") == job_version]
        if any(a.get("ClientStatus") == "running" for a in allocs):
            return allocs[-1]
        failed = [a for a in allocs if a.get("ClientStatus") in ("failed", "lost")]
        if failed:
            raise UserError(f"job {settings.job_name}: allocation {failed[-1]['ID'][:8]} {failed[-1]['ClientStatus']}",
                            code=ExitCode.DEPLOY_FAILED)
        if time.monotonic() > deadline:
            raise UserError(f"job {settings.job_name} has no running allocation after {settings.deploy_timeout}s",
                            hint="see `inv status`", code=ExitCode.DEPLOY_FAILED)
        time.sleep(0.5)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
