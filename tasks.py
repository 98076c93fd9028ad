"""mlflow-self-host: build, push and run MLflow on your own Nomad cluster.

This file is the menu: each task parses its flags, reads settings and calls the package
``mlflow_self_host``. Nothing heavy is imported here; task bodies import what they need.
Settings: invoke.yaml (the defaults), then settings.yaml (yours: `inv init` writes it), overridden by
the standard NOMAD_* variables and MSH_<KEY> (`inv config`).
"""
from pathlib import Path

from invoke import Task
from invoke import task as _invoke_task

from mlflow_self_host.core.taskrun import bad_flags_exit_2, guarded, optional_positionals

# One short flag per meaning, the same in every task (`-d` is --dry-run wherever it exists); a flag not
# named here has no short form. invoke would give each flag the first free letter of its name, task by task.
SHORT_FLAGS = {
    "accept_host_key": "a", "allow_dirty": "A", "base_image": "b", "bump": "B", "check": "c", "no_cache": "C",
    "dry_run": "d", "docker": "D", "stderr": "e", "backend": "E", "follow": "f", "from_": "F", "host": "h",
    "host_header": "H", "insecure": "i", "json": "j", "skip_build": "k", "skip_host": "K", "lines": "l",
    "list": "L", "message": "m", "no_deploy": "n", "no_backup": "N", "local": "o", "port": "p", "platform": "P",
    "remove": "r", "release": "R", "ask_sudo_pass": "s", "set": "S", "to": "t", "take": "T", "user": "u",
    "upgrade": "U", "url": "w", "download": "x", "restore": "O",
}


class _Task(Task):
    """A task whose short flags are SHORT_FLAGS' (never invoke's automatic ones)."""

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        if name in SHORT_FLAGS:
            opts["names"].append(SHORT_FLAGS[name])
        return opts


def _task_names() -> set[str]:
    return {value.name for value in globals().values() if isinstance(value, Task)}


def task(*args, **kwargs):
    """``@task`` whose body fails with one red line and an exit code (traceback with --debug)."""
    bare = len(args) == 1 and callable(args[0]) and not kwargs
    kwargs.update(klass=_Task, auto_shortflags=False)

    if bare:  # @task without arguments
        return _invoke_task(guarded(args[0], _task_names), **kwargs)

    def decorate(body):
        return _invoke_task(*args, **kwargs)(guarded(body, _task_names))

    return decorate


bad_flags_exit_2()  # an unknown flag or a missing value: exit 2, as a bad value
optional_positionals()  # `inv restore --verify` without a BACKUP


# Flags whose name is not the setting's (`inv up --port` sets local_port): named so in errors and `inv config`.
FLAG_NAMES = {"local_port": "--port", "ssh_user": "--user", "dns_backend": "--backend",
              "pihole_insecure": "--insecure", "pihole_tls_server_name": "--tls-server-name"}


def _settings(**overrides):
    from mlflow_self_host.core.settings import Settings

    # The project is the folder of this tasks.py (`inv -r DIR` works on another checkout).
    return Settings.load(root=Path(__file__).resolve().parent, overrides=overrides, flag_names=FLAG_NAMES)


def _ssh_flags(accept_host_key=False, ask_sudo_pass=False) -> dict:
    """--accept-host-key and --ask-sudo-pass turn the settings on for this run (never off)."""
    return {"accept_host_key": accept_host_key or None, "ask_sudo_pass": ask_sudo_pass or None}


def _version(settings):
    from mlflow_self_host.core.version import read_version

    return read_version(settings.root)


DRY_RUN = "print what would change, change nothing"
ACCEPT_HOST_KEY = "accept and record an unknown SSH host key, never a changed one (setting accept_host_key)"
ASK_SUDO_PASS = "prompt for the sudo password on the host (setting ask_sudo_pass; MSH_SUDO_PASSWORD wins)"


# --- foundation ----------------------------------------------------------------------------------
@task
def version(c):
    """Print the version in version.txt."""
    from mlflow_self_host.core import console

    console.result(str(_version(_settings())))


@task(help={"json": "print JSON (value and source of each setting) for scripts"})
def config(c, json=False):
    """Show the effective settings and where each came from (secrets masked)."""
    from mlflow_self_host.flows import config_view

    config_view.show(_settings(), as_json=json)


@task(help={
    "registry": "Docker registry host:port the image is pushed to (setting registry)",
    "host": "the Nomad client that runs MLflow, reached over SSH (setting host)",
    "ssh_user": "the SSH user on it, with sudo (setting ssh_user)",
    "nomad_addr": "Nomad's HTTP API, e.g. http://m700:4646 (setting nomad_addr)",
    "domain": "the service's name: MLflow is http://DOMAIN/ (setting domain)",
    "dns_target": "the proxy's (Traefik's) name, the CNAME target of DOMAIN (setting dns_target)",
    "dns_backend": "pihole (v6 API) or dnsmasq (file over SSH) (setting dns_backend)",
    "dns_server": "the DNS server that answers for your names; - or empty: the system's (setting dns_server)",
    "pihole_url": "Pi-hole's web address, e.g. https://192.168.1.2 (dns_backend pihole; setting pihole_url)",
    "store": "MLflow's tracking store: sqlite or postgres (setting store)",
    "yes": "accept an unknown SSH host key (its fingerprint shown) without asking",
    "dry_run": "show what settings.yaml would be, write nothing",
})
def init(c, registry=None, host=None, ssh_user=None, nomad_addr=None, domain=None, dns_target=None,
         dns_backend=None, dns_server=None, pihole_url=None, store=None, yes=False, dry_run=False):
    """Ask for this homelab's values (or take them as flags), check each, write settings.yaml, run doctor.

    On a terminal each question shows the current value (Enter keeps it); without one, a value not given
    as a flag keeps its current value. Each answer is checked as it comes: its format, then what it names
    (the registry's /v2/, Nomad's leader, SSH to the host with its host key shown, the DNS server, the proxy's
    name on it). settings.yaml gets only what differs from invoke.yaml's defaults: commit it.
    Exit codes: 0 written (or no change; doctor's table follows, its failures as a warning); 2 a value of a
    bad format; 7 the registry does not answer; 1 another check failed. Nothing is written on a failure.
    """
    from mlflow_self_host.flows import init as init_flow

    init_flow.init(Path(__file__).resolve().parent,
                   dict(registry=registry, host=host, ssh_user=ssh_user, nomad_addr=nomad_addr, domain=domain,
                        dns_target=dns_target, dns_backend=dns_backend, dns_server=dns_server, pihole_url=pihole_url,
                        store=store),
                   yes=yes, dry_run=dry_run)


# --- image ---------------------------------------------------------------------------------------
@task(help={
    "base_image": "base image for the build (default: setting base_image, python:3.12-slim-bookworm)",
    "platform": "build for this platform, e.g. linux/arm64 (default: setting platform; empty: the Nomad "
                "clients' cpu.arch, else this machine's; `inv config` shows which)",
    "no_cache": "build without the engine's layer cache",
    "dry_run": DRY_RUN,
})
def build(c, base_image=None, platform=None, no_cache=False, dry_run=False):
    """Build the MLflow image {registry}/{image}:v{version} with the docker SDK, for the cluster's platform.

    Another platform than the engine's needs QEMU emulation (binfmt) on the engine's host for RUN steps.
    Exit codes: 0 built; 4 no Docker engine; 5 a build step failed (the step and its error shown, "exec
    format error" with what to install).
    """
    from mlflow_self_host.steps.image import build as image_build

    settings = _settings(base_image=base_image, platform=platform)
    image_build.build(settings, _version(settings), no_cache=no_cache, dry_run=dry_run)


@task(help={"dry_run": DRY_RUN})
def push(c, dry_run=False):
    """Push {registry}/{image}:v{version} with per-layer progress.

    Exit codes: 0 pushed (or already there); 4 no Docker engine; 6 image not built yet; 7 registry
    unreachable; 8 the engine refuses a plain-HTTP registry; 9 unauthorized.
    """
    from mlflow_self_host.steps.image import push as image_push

    settings = _settings()
    image_push.push(settings, _version(settings), dry_run=dry_run)


@task(help={"dry_run": DRY_RUN})
def pushlatest(c, dry_run=False):
    """Tag the current version's image as latest and push it (the same image, no rebuild).

    Builds v{version} first only if the engine lacks it. Exit codes as for push.
    """
    from mlflow_self_host.steps.image import push as image_push

    settings = _settings()
    image_push.push_latest(settings, _version(settings), dry_run=dry_run)


# --- local mode ----------------------------------------------------------------------------------
@task(help={
    "docker": "require the Docker engine (fail instead of falling back to a native server)",
    "port": "local port (default: setting local_port, 5000)",
    "base_image": "base image if the image must be built first",
    "dry_run": DRY_RUN,
    "auth": "require logins (MLflow's auth app; admin password from MSH_MLFLOW_ADMIN_PASSWORD); default: open on "
            "127.0.0.1",
})
def up(c, docker=False, port=None, base_image=None, dry_run=False, auth=False):
    """Run MLflow locally with ./data mounted, wait until healthy, print the URL.

    In a container on the Docker engine (built first if needed); with no engine reachable, natively
    from a virtual environment created once under ~/.cache/mlflow-self-host (same MLflow, same ./data).
    Exit codes: 0 up (or already running); 4 --docker and no engine; 16 not healthy (10 until December 2026).
    """
    from mlflow_self_host.steps.local import up as local_up

    settings = _settings(local_port=port, base_image=base_image)
    local_up(settings, _version(settings), require_docker=docker, dry_run=dry_run, auth=auth)


@task(help={"dry_run": DRY_RUN})
def down(c, dry_run=False):
    """Stop the local MLflow; ./data is kept."""
    from mlflow_self_host.steps.local import down as local_down

    local_down(_settings(), dry_run=dry_run)


@task(help={
    "url": "MLflow URL (default: the local server, http://127.0.0.1:{local_port}/)",
    "host_header": "Host header for the API check (default: setting domain, mlflow.lan)",
})
def smoke(c, url=None, host_header=None):
    """Log a param, a metric and an artifact, read them back, and check the Host header.

    Exit codes: 0 passed; 17 failed (no server, 403 Invalid Host header, a value not read back); 18 the
    https URL's certificate is not trusted (setting ca_file) or not for its name.
    """
    from mlflow_self_host.steps.smoke import smoke as run_smoke

    run_smoke(_settings(), url=url, host_header=host_header)


# --- host ----------------------------------------------------------------------------------------
@task(name="configure-host", help={
    "dry_run": "show the diff of client.hcl and the other changes, change nothing",
    "ansible": "run the kept Ansible playbook (ansible/) instead",
    "accept_host_key": "accept and record an unknown SSH host key (never a changed one)",
    "ask_sudo_pass": "prompt for the sudo password on the host",
    "host": "Nomad client host (default: setting host)",
    "user": "SSH user (default: setting ssh_user)",
})
def configure_host(c, dry_run=False, ansible=False, accept_host_key=False, ask_sudo_pass=False,
                   host=None, user=None):
    """Prepare the Nomad client over SSH: folders, host volumes, job file; restart Nomad if needed.

    The two volume folders are given to image_user (the uid:gid the image runs as, 1000:1000), job_dir
    to folder_owner:folder_group. A second run with nothing to change says so and restarts nothing.
    """
    from mlflow_self_host.steps.host import configure

    settings = _settings(host=host, ssh_user=user, **_ssh_flags(accept_host_key, ask_sudo_pass))
    configure.run(settings, dry_run=dry_run, use_ansible=ansible)


@task(help={"upgrade": "take the newest versions the ranges allow (default: keep the locked ones)",
            "dry_run": "show what would change, write nothing",
            "check": "fail (exit 1) when the lock is not what the requirements give now (for CI)"})
def deps(c, upgrade=False, dry_run=False, check=False):
    """Lock the image's dependencies: docker/requirements.lock from docker/requirements*.txt (uv, hashes).

    Shows what changed (+ added, - removed, ~ version); the image installs the lock with
    --require-hashes, so the same commit builds the same server.
    """
    from mlflow_self_host.steps.image import deps as image_deps

    image_deps.run(_settings(), upgrade=upgrade, dry_run=dry_run, check=check)


# --- Nomad ---------------------------------------------------------------------------------------
@task(help={
    "dry_run": "read-only: show the plan diff; no host change, no build, no push, no register",
    "skip_host": "do not run configure-host first",
    "skip_build": "do not build and push first (the registry must already have the tag)",
    "no_backup": "do not back up the database before a version change",
    "accept_host_key": "accept and record an unknown SSH host key",
})
def deploy(c, dry_run=False, skip_host=False, skip_build=False, no_backup=False, accept_host_key=False):
    """Configure the host, build and push v{version}, plan and register the job, follow it to healthy.

    The image is built only when the engine lacks v{version} (`inv build` rebuilds it) and pushed only
    when the registry's tag is not this image: a second deploy with nothing new changes nothing; one
    while the same version is still deploying follows that deployment.

    The image is built for the clients' platform; one no client the job can go to runs is refused
    before the push (or, with --skip-build, before the register), naming both architectures.

    The service is registered where your Traefik reads it: setting service_provider (MSH_SERVICE_PROVIDER:
    consul, nomad, or auto = consul when the clients have Consul, as the original job); the router's
    entrypoints tag only when traefik_entrypoints names entry points. A move to the other catalogue is warned of.
    https: true makes the router TLS on traefik_tls_entrypoints, plain HTTP redirected or refused (plain_http).

    Exit codes: 0 healthy (or already deployed); 10 placement failed (or no client of the image's
    architecture); 11 deployment failed (and Nomad
    did not revert, or the revert failed too); 12 deployment failed and Nomad reverted to the last
    stable version (the message says if that one is a stopped copy: the job is stopped then), or a
    schema migration failed: the backup put back, the old version started again (11 when that failed);
    13 healthy in Nomad but the service URL (deploy_url, default http(s)://{domain}/) does not answer;
    18 its certificate is not trusted (setting ca_file) or not for the name (https: true);
    14 another release, deploy, rollback or restore holds the deploy lock (`inv lock`);
    15 the database on the host cannot be taken over (see `inv migrate`), or its schema is newer than the
    image's MLflow knows: nothing changed; 2 the registry lacks the tag, or --no-backup with a release that
    migrates the schema; 1 any other error (e.g. the job changed between plan and register).

    A setup the original recipe left (artifact locations under /mnt/artifacts, files the image's user
    does not own, an older schema under a job that is not ours) is taken over first, as `inv migrate`.
    """
    from mlflow_self_host.flows import deploy as job_deploy

    settings = _settings(**_ssh_flags(accept_host_key))
    job_deploy.deploy(settings, _version(settings), dry_run=dry_run, skip_host=skip_host,
                      skip_build=skip_build, backup=not no_backup)


@task(help={
    "dry_run": "read-only: list every change (store and job); nothing changed anywhere",
    "skip_build": "do not build and push first (the registry must already have the tag)",
    "accept_host_key": "accept and record an unknown SSH host key",
})
def migrate(c, dry_run=False, skip_build=False, accept_host_key=False):
    """Take over MLflow as the original recipe left it, losing nothing, then deploy v{version}.

    In order: stop the old job; a byte-for-byte copy of the database, kept in backups_path
    (`inv restore NAME` puts it back); the image's user made owner of everything in the two volume
    folders; artifact locations under legacy_artifact_root (/mnt/artifacts) rewritten to
    mlflow-artifacts:/ (the same files, through the server); then the job is replaced by ours (plan
    diff shown) and the image upgrades the schema on start. A second run changes nothing. `inv deploy`
    does the same when it finds such a setup.

    Exit codes: deploy's (0, 2, 10-14); 15 the database cannot be taken over as it is (missing, fails
    PRAGMA integrity_check, not MLflow's, or written by a newer MLflow): nothing was changed.
    """
    from mlflow_self_host.flows import deploy as job_deploy

    settings = _settings(**_ssh_flags(accept_host_key))
    job_deploy.deploy(settings, _version(settings), dry_run=dry_run, skip_build=skip_build, migrate=True)


@task(name="migrate-store", help={
    "to": "the store to move to: postgres (the database at MSH_DATABASE_URL, which must be empty)",
    "from": "copy this local SQLite file (e.g. ./backups/NAME from `inv backup --download`) instead of the "
            "Nomad client's mlflow.db",
    "dry_run": "list the tables and row counts it would copy; change nothing anywhere",
    "accept_host_key": ACCEPT_HOST_KEY,
})
def migrate_store(c, to=None, from_=None, dry_run=False, accept_host_key=False):
    """Copy the SQLite store into an empty PostgreSQL database, check every table, then set store: postgres.

    The copy is taken consistently (SQLite's online backup; the Nomad client's store through `inv backup`,
    refused while the job runs: stop it first). MLflow's schema is made in PostgreSQL at the image's head,
    every table copied in foreign-key order and compared (row count and checksum, shown per table);
    settings.yaml says store: postgres only when all match. The SQLite store is kept as it was.
    Exit codes: 0 copied and checked; 2 --to is not postgres; 15 the target is not empty, or the SQLite
    store is not one MLflow can read: nothing changed; 1 any other error (the target unreachable, a table
    that differs: what this run created is dropped again).
    """
    from mlflow_self_host.steps.store import migrate_store as store_migrate

    store_migrate.run(_settings(**_ssh_flags(accept_host_key)), to=to, from_path=from_, dry_run=dry_run)


@task(help={"json": "print JSON for scripts"})
def status(c, json=False):
    """Job version and status, running image vs version.txt, allocations, latest deployment."""
    from mlflow_self_host.steps.job import status as job_status

    settings = _settings()
    job_status.status(settings, _version(settings), as_json=json)


@task(help={"follow": "keep streaming new lines", "stderr": "show stderr instead of stdout",
            "lines": "how many last lines to show (default 50)"})
def logs(c, follow=False, stderr=False, lines=None):
    """The running allocation's task logs."""
    from mlflow_self_host.steps.job import logs as job_logs

    job_logs.logs(_settings(), follow=follow, stderr=stderr, lines=job_logs.line_count(lines))


@task(help={"to": "job version to go back to (default: the newest stable one before the current, never a "
                  "stopped copy)", "dry_run": DRY_RUN,
            "restore": "going back past an MLflow upgrade: stop the job, put back the newest backup whose "
                       "schema that version's MLflow serves (the one taken before the migration), register it"})
def rollback(c, to=None, dry_run=False, restore=False):
    """Revert the job to an earlier version (check-and-set) and follow the deployment.

    A version with the current specification registers nothing ("nothing to roll back", exit 0). A
    version whose MLflow is older than the database's schema (a release migrated it since) is refused
    unless --restore. Exit codes as deploy: 0 healthy; 10 placement failed; 11 failed; 12 failed and
    reverted; 14 the deploy lock is held; 15 that version's MLflow cannot serve the database (--restore),
    or --restore finds no backup it can; 2 no such version, or a stopped copy of the job (what `nomad job
    stop` and `inv restore` leave), or --restore with nothing to restore.
    """
    from mlflow_self_host.flows import rollback as job_rollback

    job_rollback.rollback(_settings(), to=to, dry_run=dry_run, restore=restore)


@task(help={"take": "take the lock by hand (maintenance): deploys are refused until --release",
            "release": "release the lock, whoever holds it (says whose it was)",
            "message": "with --take: why (shown to whoever is refused)"})
def lock(c, take=False, release=False, message=None):
    """Show the deploy lock (who holds it, since when, for what), or take or release it by hand.

    release, deploy, rollback and restore hold it for their whole run, so a second one at the same time
    is refused at once (exit 14) with the holder named. It lives in Nomad (a Variable, path
    mlflow-self-host/lock/{job_name}); one older than lock_stale_after is called stale.
    """
    from mlflow_self_host.adapters import lock as deploy_lock

    deploy_lock.command(_settings(), take=take, release_lock=release, message=message)


@task(help={
    "add": "add this user (the password asked twice, or MSH_USER_PASSWORD)",
    "remove": "remove this user and its permissions",
    "set_password": "set this user's password (asked twice, or MSH_USER_PASSWORD)",
    "grant": "grant this user --permission on --experiment or --model",
    "revoke": "revoke this user's permission on --experiment or --model (back to the default, READ)",
    "experiment": "--grant/--revoke: the experiment, by name or ID",
    "model": "--grant/--revoke: the registered model, by name",
    "permission": "--grant: READ, USE, EDIT, MANAGE or NO_PERMISSIONS",
    "url": "MLflow's URL (default: deploy_url, else http(s)://{domain}/; http://127.0.0.1:5000/ for `inv up --auth`)",
    "dry_run": DRY_RUN,
})
def users(c, add=None, remove=None, set_password=None, grant=None, revoke=None, experiment=None, model=None,
          permission=None, url=None, dry_run=False):
    """List MLflow's users, or add, remove one, set its password, grant or revoke a permission (auth: basic).

    Through MLflow's auth API as the admin (MSH_MLFLOW_ADMIN_PASSWORD). inv users; inv users --add alice;
    inv users --set-password alice; inv users --grant alice --experiment first --permission EDIT;
    inv users --revoke alice --model churn; inv users --remove alice. A new password is asked twice on the
    terminal, or read from MSH_USER_PASSWORD (never a flag's value). A user reads every experiment and model
    (MLflow's default permission READ) until granted more.
    Exit codes: 0 done; 2 an unknown user, experiment or model, a user that exists, a bad permission;
    9 MLflow refused the admin's password; 13 no MLflow answers; 18 its certificate is not trusted (ca_file).
    """
    from mlflow_self_host.core.errors import ExitCode, UserError
    from mlflow_self_host.steps import users as mlflow_users

    given = {action: who for action, who in (("add", add), ("remove", remove), ("password", set_password),
                                              ("grant", grant), ("revoke", revoke)) if who}
    if len(given) > 1:
        raise UserError("one of --add, --remove, --set-password, --grant, --revoke at a time",
                        code=ExitCode.BAD_ARGUMENT)
    action, name = next(iter(given.items()), ("list", None))
    mlflow_users.run(_settings(), action, name, experiment=experiment, model=model, permission=permission, url=url,
                     dry_run=dry_run)


# --- DNS -----------------------------------------------------------------------------------------
@task(help={
    "check": "only resolve the domain against the DNS server and report the answer",
    "remove": "remove the record",
    "dry_run": DRY_RUN,
    "backend": "pihole (v6 API) or dnsmasq (file over SSH; also Pi-hole v5)",
    "insecure": "do not verify the Pi-hole's TLS certificate",
    "tls_server_name": "the name the Pi-hole's certificate must have (default: pihole_url's host; pi.hole "
                       "for an IP address)",
    "accept_host_key": "dnsmasq: accept and record an unknown SSH host key",
    "ask_sudo_pass": "dnsmasq: prompt for the sudo password on the host",
})
def dns(c, check=False, remove=False, dry_run=False, backend=None, insecure=False, tls_server_name=None,
        accept_host_key=False, ask_sudo_pass=False):
    """Point {domain} at the proxy with a CNAME (Pi-hole v6 or dnsmasq) and check it resolves.

    Password: PIHOLE_PASSWORD (or an app password with webserver.api.app_sudo). Pi-hole and dnsmasq
    restart after a change: the answer of dns_server (or the system resolver) is asked again until it
    is right or dns_check_timeout seconds have passed. dnsmasq: the new configuration is checked
    (dnsmasq_test_command) before the restart, and the previous file put back if either fails.
    Exit codes: 0 the record is right (or no change); 1 a refusal, a failed check or restart, or a
    wrong answer at the deadline.
    """
    from mlflow_self_host.steps.dns import task as dns_task

    settings = _settings(dns_backend=backend, pihole_insecure=insecure or None,
                         pihole_tls_server_name=tls_server_name, **_ssh_flags(accept_host_key, ask_sudo_pass))
    dns_task.run(settings, check_only=check, remove=remove, dry_run=dry_run)


# --- release -------------------------------------------------------------------------------------
@task(help={
    "bump": "major, minor or patch",
    "set": "set this exact version instead of bumping",
    "list": "show the next version for each part and exit",
    "allow_dirty": "release from a git tree with uncommitted or untracked files",
    "no_deploy": "stop after pushing the image",
    "skip_host": "deploy without running configure-host first",
    "accept_host_key": "accept and record an unknown SSH host key (deploy's configure-host step)",
    "dry_run": DRY_RUN,
})
def release(c, bump=None, set=None, list=False, allow_dirty=False, no_deploy=False, skip_host=False,
            accept_host_key=False, dry_run=False):
    """Bump version.txt, commit, tag, build, push v{new} and latest, deploy.

    Refuses a dirty tree, an existing tag v{new} (git or registry) before changing anything. A failure
    before the push undoes the commit, the tag and version.txt; after it, the error names what to run.
    With a deploy, the whole release holds the deploy lock (`inv lock`).
    Exit codes: 0 released; 2 a bad --bump/--set; 1 a refusal; 14 the deploy lock is held; else the
    failing step's (build, push, deploy).
    """
    from mlflow_self_host.flows import release as rel

    rel.release(_settings(**_ssh_flags(accept_host_key)), bump=bump, set_version=set, list_only=list,
                allow_dirty=allow_dirty, deploy=not no_deploy, dry_run=dry_run, skip_host=skip_host)


# --- operations ----------------------------------------------------------------------------------
@task(help={"json": "print JSON for scripts"})
def doctor(c, json=False):
    """Check every part the tasks use (✓/✗ with the fix); exit 0 only when all pass.

    Each check has a deadline (setting doctor_timeout, seconds), so doctor never hangs.
    Exit codes: 0 every check passed; 1 at least one failed (the table says which and the fix).
    """
    from mlflow_self_host.flows import doctor as doc

    doc.doctor(_settings(), as_json=json)


@task(help={"download": "also copy the backup to ./backups on this machine",
            "local": "back up the local mode's ./data instead of the Nomad client",
            "list": "list the backups in backups_path (store, when, version, size) and take none",
            "dry_run": DRY_RUN, "accept_host_key": ACCEPT_HOST_KEY, "ask_sudo_pass": ASK_SUDO_PASS})
def backup(c, download=False, local=False, list=False, dry_run=False, accept_host_key=False, ask_sudo_pass=False):
    """Consistent backup of the MLflow store (SQLite's online backup, or pg_dump), checked, kept on the host.

    store sqlite: SQLite's online backup on the Nomad client, PRAGMA integrity_check, mlflow-{UTC}-v{version}.db.
    store postgres: pg_dump -Fc here (its major version >= the server's; setting pg_bin_dir), checked with
    pg_restore --list, uploaded as mlflow-{UTC}-v{version}.dump. Both keep the newest backup_keep.
    Exit codes: 0 backed up (or listed); 2 a bad setting (pg_bin_dir without pg_dump); 1 any other error (no
    database, no pg_dump or one older than the server, an unreachable host or database).
    """
    from mlflow_self_host.steps import backup as bk

    settings = _settings(**_ssh_flags(accept_host_key, ask_sudo_pass))
    if list:
        bk.list_backups(settings, local=local)
        return
    bk.backup(settings, download=download, local=local, dry_run=dry_run)


@task(help={"backup": "backup file name or path to restore (with --verify: to drill; default the newest)",
            "local": "restore into ./data",
            "verify": "a restore drill: the backup into a scratch database beside the live one, checked and counted "
                      "against the live store; the live store is only read",
            "dry_run": DRY_RUN, "accept_host_key": ACCEPT_HOST_KEY, "ask_sudo_pass": ASK_SUDO_PASS})
def restore(c, backup, local=False, verify=False, dry_run=False, accept_host_key=False, ask_sudo_pass=False):
    """Stop the job, put a backup in place (current database kept aside), start, wait healthy.

    BACKUP: a name in backups_path (`inv backup --list`), a path on the host, or a local file (uploaded
    first). A backup failing PRAGMA integrity_check is refused before anything stops. With store postgres
    (a .dump): the job stopped, pg_restore --clean --if-exists --no-owner --no-privileges in one
    transaction (a failure changes nothing), the job started; --dry-run lists the tables, rows now and in
    the backup. Exit codes: 0 restored and healthy; 10/11/12 as deploy when the job does not come back
    healthy; 14 the deploy lock is held; 1 any other error.

    --verify [BACKUP] (default: the newest backup of the store's): a restore drill. SQLite: a copy in a scratch
    folder on the host, PRAGMA integrity_check; PostgreSQL: pg_restore into a scratch database {db}_verify (the
    role needs CREATEDB). Experiments, runs, metrics, params and the runs' artifacts counted in both, a table
    shown, the scratch removed, the result kept for doctor (backups_path/.last-drill.json). No deploy lock (it
    changes nothing of the live store). Exit codes: 0 the drill passed; 1 it failed (a failed check, or fewer
    live rows than the backup); 2 no BACKUP without --verify, or --verify with --local; 14 a restore runs.
    """
    from mlflow_self_host.core.errors import ExitCode, UserError
    from mlflow_self_host.steps import backup as bk

    settings = _settings(**_ssh_flags(accept_host_key, ask_sudo_pass))
    if verify:
        if local:
            raise UserError("--verify drills the store on the host; --local is not drilled",
                            hint="leave out --local", code=ExitCode.BAD_ARGUMENT)
        from mlflow_self_host.steps.backup import drill

        drill.verify(settings, backup or None, dry_run=dry_run)
        return
    if not backup:
        raise UserError("restore needs BACKUP: `inv restore NAME` (`inv backup --list` names them)",
                        hint="or `inv restore --verify` to drill the newest backup", code=ExitCode.BAD_ARGUMENT)
    bk.restore(settings, backup, local=local, dry_run=dry_run)
