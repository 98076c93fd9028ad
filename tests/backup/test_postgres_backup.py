"""store: postgres: `inv backup` (pg_dump here, checked, kept on the SSH host), `--list`, retention, the version
rule, and `inv restore` (the job stopped, the database replaced in one transaction, the job started), against
the session's real PostgreSQL and sshd (and the Nomad double for the job the restore stops and starts)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mlflow_self_host.steps import backup
from mlflow_self_host.steps.backup import postgres as pg_backup
from tests.backup.conftest import PROJECT_ROOT, deploy
from tests.services import clean_env

DUMP = re.compile(r"^mlflow-\d{8}T\d{6}Z-v[0-9A-Za-z.]+(-\d+)?\.dump$")


def make_store(pg, rows: int = 20) -> tuple[str, str]:
    """A database of the role mlflow with MLflow-like tables (a foreign key, serial ids, a revision); (name, URL)."""
    name = f"bk_{uuid.uuid4().hex[:10]}"
    url = pg.database(name)
    pg.psql("SET ROLE mlflow; "
            "CREATE TABLE experiments (experiment_id serial PRIMARY KEY, name text UNIQUE NOT NULL); "
            "CREATE TABLE runs (run_id serial PRIMARY KEY, experiment_id int REFERENCES experiments, "
            "note text, value double precision); "
            "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY); "
            "INSERT INTO alembic_version VALUES ('b7e2c1a4d9f3'); "
            "INSERT INTO experiments (name) VALUES ('Default'), ('tuning'); "
            f"INSERT INTO runs (experiment_id, note, value) SELECT 1 + i % 2, 'line one' || chr(10) || 'two ' || i, "
            f"i / 7.0 FROM generate_series(1, {rows}) i", database=name)
    return name, url


def more_work(pg, name: str) -> None:
    """What happens after a backup: rows added and changed, a table a newer MLflow's migration would make."""
    pg.psql("SET ROLE mlflow; INSERT INTO runs (experiment_id, note, value) SELECT 2, 'later', i FROM "
            "generate_series(1, 15) i; UPDATE experiments SET name = 'renamed' WHERE name = 'tuning'; "
            "UPDATE alembic_version SET version_num = 'dc11669786a5'; "
            "CREATE TABLE webhooks (id serial PRIMARY KEY, url text); INSERT INTO webhooks (url) VALUES ('x')",
            database=name)


def snapshot(pg, name: str) -> dict:
    """Per table: row count and a checksum of every row (in a fixed order), as the superuser reads them."""
    return {t: pg.psql(f"SELECT count(*) || ':' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
                       f'FROM "{t}" x', database=name) for t in pg.tables(name)}


def secrets_of(pg) -> list[str]:
    """The password, and the random part of it (the fixture's passwords start with hard characters)."""
    return [pg.password, pg.password[len("p'q\"r#s\\t$u v@w/x-"):]]


def logging_bin_dir(folder: Path, real: Path) -> Path:
    """pg_dump, pg_restore and psql that log their command line (what `ps` shows) and run the real ones."""
    folder.mkdir(parents=True, exist_ok=True)
    for tool in ("pg_dump", "pg_restore", "psql"):
        script = folder / tool
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "{tool} $*" >> {folder}/argv.log\n'
                          f'exec {real / tool} "$@"\n')
        script.chmod(0o755)
    return folder


@pytest.fixture
def inv_env(ssh_server, postgres_server, tmp_path):
    """`inv` in a subprocess with store: postgres on a new database, the SSH host, backups_path in tmp."""

    def make(url: str, **more) -> dict:
        env = clean_env()
        env.update(ssh_server.env(), MSH_STORE="postgres", MSH_DATABASE_URL=url,
                   MSH_BACKUPS_PATH=str(tmp_path / "host" / "backups"), MSH_NOMAD_ADDR="http://127.0.0.1:1",
                   MSH_BACKEND_PATH=str(tmp_path / "host" / "backend"))
        env.update({f"MSH_{k.upper()}": str(v) for k, v in more.items()})
        return env

    return make


def inv(env: dict, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(PROJECT_ROOT), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_inv_backup_dumps_checks_keeps_lists_and_never_shows_the_password(postgres_server, inv_env, tmp_path):
    pg = postgres_server
    name, url = make_store(pg)
    at_backup = snapshot(pg, name)
    bins = logging_bin_dir(tmp_path / "bin", pg.bin_dir)
    env = inv_env(url, backup_keep=2, pg_bin_dir=bins)
    folder = tmp_path / "host" / "backups"
    folder.mkdir(parents=True)
    old_sqlite = folder / "mlflow-20200101T000000Z-v0.1.db"  # the last backup of the store before a move
    old_sqlite.write_bytes(b"SQLite format 3\0" + b"\0" * 100)

    plan = inv(env, "backup", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "pg_dump 15" in plan.stderr and "3 tables" in plan.stderr and "dry run: nothing was changed" in plan.stderr
    assert sorted(os.listdir(folder)) == [old_sqlite.name]

    paths = []
    for _ in range(3):
        done = inv(env, "backup")
        assert done.returncode == 0, done.stderr
        paths.append(done.stdout.strip())
        for secret in secrets_of(pg):
            assert secret not in done.stdout + done.stderr
    assert all(os.path.dirname(p) == str(folder) and DUMP.match(os.path.basename(p)) for p in paths)
    assert "3 tables checked with pg_restore --list" in done.stderr
    kept = sorted(n for n in os.listdir(folder) if n.endswith(".dump"))
    assert kept == sorted(os.path.basename(p) for p in paths[1:])  # backup_keep 2: the oldest dump removed
    assert old_sqlite.exists()  # another store's backups are not counted against the dumps
    listed = subprocess.run([str(pg.bin_dir / "pg_restore"), "--list", paths[-1]], capture_output=True, text=True)
    assert listed.returncode == 0 and len(re.findall(r"TABLE DATA public (runs|experiments|alembic_version) ",
                                                     listed.stdout)) == 3

    shown = inv(env, "backup", "--list")
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if "mlflow-" in line]
    assert len(rows) == 3 and os.path.basename(paths[-1]) in rows[0]  # newest first
    assert all("postgres" in r for r in rows[:2]) and "sqlite" in rows[2]
    assert all(re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", r) and re.search(r"\d(\.\d)? (B|KB)", r) for r in rows)

    # every command line pg_dump, pg_restore and psql ran with (what `ps` showed), and none holds the password
    argv = (bins / "argv.log").read_text()
    assert argv.count("pg_dump -Fc") == 3
    for secret in secrets_of(pg):
        assert secret not in argv
    assert snapshot(pg, name) == at_backup  # a backup changes nothing


def test_dump_command_line_has_no_password(postgres_server):
    url = postgres_server.url("mlflow")
    client = pg_backup.postgres.Client(postgres_server.bin_dir / "pg_dump", "15.0", 15)
    argv = " ".join(pg_backup.dump_argv(client, url, "/tmp/x.dump"))
    assert "-Fc" in argv and "@127.0.0.1" in argv
    for secret in secrets_of(postgres_server):
        assert secret not in argv


def test_a_pg_dump_older_than_the_server_is_refused_naming_what_to_install(postgres_server, inv_env, tmp_path):
    pg = postgres_server
    name, url = make_store(pg, rows=3)
    old = tmp_path / "old-client"
    old.mkdir()
    fake = old / "pg_dump"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) 12.22'; exit 0; fi\n"
                    f"touch {old}/ran; exit 1\n")
    fake.chmod(0o755)
    env = inv_env(url, pg_bin_dir=old)
    server_major = pg.psql("SHOW server_version_num")[:-4]
    for args in (["backup"], ["backup", "--dry-run"]):
        refused = inv(env, *args)
        assert refused.returncode == 1, refused.stderr
        (first,) = [line for line in refused.stderr.splitlines() if line.startswith("error:")]  # one red line
        assert first.startswith("error: pg_dump 12.22") and f"PostgreSQL {server_major}." in first
        assert f"postgresql-client-{server_major}" in refused.stderr and "pg_bin_dir" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert not (old / "ran").exists() and not (tmp_path / "host" / "backups").exists()

    missing = inv(inv_env(url, pg_bin_dir=tmp_path / "nowhere"), "backup")
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "pg_bin_dir" in missing.stderr


def test_before_deploy_dumps_and_restore_now_puts_it_back(postgres_server, remote_settings):
    """Deploy's interface: before_deploy returns the dump's BackupResult; restore_now (no lock, no job) puts the
    database back as it was at the backup, a later migration's table dropped."""
    pg = postgres_server
    name, url = make_store(pg)
    settings = remote_settings(store="postgres", database_url=url)
    at_backup = snapshot(pg, name)
    result = backup.before_deploy(settings, "3.16.1", "3.17.2")
    assert result.store == "postgres" and DUMP.match(result.name) and "-v3.16.1" in result.name
    assert os.path.getsize(result.path) == result.size > 0
    more_work(pg, name)
    assert snapshot(pg, name) != at_backup
    backup.restore_now(settings, result.name)
    assert snapshot(pg, name) == at_backup and "webhooks" not in pg.tables(name)

    again = backup.backup(settings, download=True, version="3.17.2")  # --download: a copy in ./backups
    assert open(again.downloaded, "rb").read() == open(again.path, "rb").read()
    assert again.downloaded == str(settings.root / "backups" / again.name)


def test_rollback_restore_puts_the_dump_back_with_store_postgres(postgres_server, remote_settings):
    """`inv rollback --to N --restore`'s restore (the change after its stop) with store: postgres: the dump deploy
    took before the migration replaces the migrated database (it once stopped there: "not done by rollback yet",
    the job left stopped, while deploy's own hint after a failed release names this very command)."""
    from mlflow_self_host.core.plan import Plan
    from mlflow_self_host.flows import rollback

    pg = postgres_server
    name, url = make_store(pg)
    settings = remote_settings(store="postgres", database_url=url)
    at_backup = snapshot(pg, name)
    taken = backup.before_deploy(settings, "3.16.1", "3.17.2")
    more_work(pg, name)  # the migration's table and revision, and rows logged since
    plan = Plan("rollback")
    plan.add("restore", f"backup {taken.name}", "", op=rollback.Restore(taken.name, "b7e2c1a4d9f3"))
    (change,) = plan.changes
    said = rollback.Apply(settings, None).apply_one(change)
    assert said.startswith(f"restored {taken.name} (schema b7e2c1a4d9f3)"), said
    assert snapshot(pg, name) == at_backup and "webhooks" not in pg.tables(name)


def test_before_deploy_with_an_empty_database_takes_none(postgres_server, remote_settings, capsys):
    url = postgres_server.database(f"empty_{uuid.uuid4().hex[:8]}")
    assert backup.before_deploy(remote_settings(store="postgres", database_url=url), "0.98", "0.99") is None
    assert "nothing to back up" in capsys.readouterr().err


def _changes(double):
    return [(m, p) for m, p, q, b in double.requests if m in ("POST", "PUT", "DELETE")]


@pytest.fixture
def cluster_env(ssh_server, nomad_cluster, tmp_path):
    """`inv`'s environment for store: postgres at ``url``, the job on the Nomad double, the SSH host."""

    def make(url: str) -> dict:
        env = clean_env()
        env.update(ssh_server.env(), **nomad_cluster.env(backups_path=tmp_path / "backups"), MSH_STORE="postgres",
                   MSH_DATABASE_URL=url)
        return env

    return make


def backed_up(pg, cluster_env) -> tuple[str, dict, str]:
    """A new database with rows, and `inv backup` of it: (database, inv's environment, the dump's name)."""
    name, url = make_store(pg)
    env = cluster_env(url)
    taken = inv(env, "backup")
    assert taken.returncode == 0, taken.stderr
    return name, env, os.path.basename(taken.stdout.strip())


@pytest.fixture
def running_job(nomad_cluster, cluster_settings):
    """The job running on the Nomad double (deployed as the stub registers it); its request log starts after."""
    deploy(cluster_settings(), "0.99", backup=False)
    double = nomad_cluster.nomad
    with double.lock:
        double.requests.clear()
    return double


def test_inv_restore_dry_run_then_restore_puts_the_rows_back(postgres_server, cluster_env, running_job):
    pg = postgres_server
    name, env, dump = backed_up(pg, cluster_env)
    at_backup = snapshot(pg, name)
    more_work(pg, name)
    before = snapshot(pg, name)

    plan = inv(env, "restore", dump, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "runs: 35 rows now, 20 rows in the backup" in plan.stderr
    assert "- webhooks: 1 row now, not in the backup: dropped" in plan.stderr
    assert "stop" in plan.stderr and "dry run: nothing was changed" in plan.stderr
    assert snapshot(pg, name) == before and _changes(running_job) == []

    done = inv(env, "restore", "--backup", dump, timeout=240)
    assert done.returncode == 0, done.stderr
    assert snapshot(pg, name) == at_backup and "webhooks" not in pg.tables(name)
    lock = "/v1/var/mlflow-self-host/lock/mlflow"
    # the nightly backup paused, the job stopped, restored, started, the nightly backup registered again, all under
    # the lock
    assert _changes(running_job) == [("PUT", lock), ("DELETE", "/v1/job/mlflow-backup"), ("DELETE", "/v1/job/mlflow"),
                                     ("POST", "/v1/job/mlflow/stable"), ("POST", "/v1/job/mlflow"),
                                     ("POST", "/v1/jobs"), ("DELETE", lock)]
    assert len(running_job.running_allocs()) == 1
    for secret in secrets_of(pg):
        assert secret not in plan.stderr + done.stderr + done.stdout


def test_a_failed_restore_leaves_the_database_as_it_was_and_starts_the_job(postgres_server, cluster_env, running_job):
    pg = postgres_server
    name, env, dump = backed_up(pg, cluster_env)
    more_work(pg, name)
    # the role may read and write it, not drop it: the restore fails midway
    pg.psql("ALTER TABLE runs OWNER TO postgres; GRANT ALL ON runs TO mlflow", database=name)
    before = snapshot(pg, name)

    failed = inv(env, "restore", dump, timeout=240)
    assert failed.returncode == 1, failed.stderr
    (first,) = [line for line in failed.stderr.splitlines() if line.startswith("error:")]  # one red line
    assert "must be owner of table runs" in first
    assert "the database is as it was" in first and "job mlflow started again" in first
    assert "Traceback" not in failed.stderr
    assert snapshot(pg, name) == before and "webhooks" in pg.tables(name)  # dropped first, then rolled back
    assert len(running_job.running_allocs()) == 1  # the job runs again
    assert ("DELETE", "/v1/job/mlflow") in _changes(running_job)


def test_a_sqlite_backup_is_refused_with_store_postgres(postgres_server, inv_env, tmp_path):
    name, url = make_store(postgres_server, rows=2)
    folder = tmp_path / "host" / "backups"
    folder.mkdir(parents=True)
    (folder / "mlflow-20200101T000000Z-v0.1.db").write_bytes(b"SQLite format 3\0")
    refused = inv(inv_env(url), "restore", "mlflow-20200101T000000Z-v0.1.db", "--dry-run")
    assert refused.returncode == 1 and "backup of the SQLite store" in refused.stderr.splitlines()[0]


def test_doctor_shows_the_pg_dump_row_green_or_red_against_the_server(postgres_server, tmp_path):
    from mlflow_self_host.core.settings import Settings
    from mlflow_self_host.flows import doctor

    pg = postgres_server
    url = pg.url("postgres")
    server_major = pg.psql("SHOW server_version_num")[:-4]

    def row(**more):
        settings = Settings.load(root=PROJECT_ROOT, env={}, overrides=dict(store="postgres", database_url=url, **more))
        assert doctor.check_pg_dump in [c.run for c in doctor._checks(settings)]
        (found,) = doctor.check_pg_dump(settings, 10)
        return found

    green = row(pg_bin_dir=str(pg.bin_dir))
    assert green.name == "pg_dump" and green.ok and f"dumps the server's PostgreSQL {server_major}." in green.found
    old = tmp_path / "old"
    old.mkdir()
    (old / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.22'\n")
    (old / "pg_dump").chmod(0o755)
    red = row(pg_bin_dir=str(old))
    assert not red.ok and "pg_dump 12.22" in red.found and f"postgresql-client-{server_major}" in red.fix
    assert doctor.check_pg_dump not in [c.run for c in doctor._checks(Settings.load(root=PROJECT_ROOT, env={}))]


def test_the_passfile_holds_the_password_escaped_and_the_url_none():
    """libpq's passfile escapes ':' and '\\'; the URL given on the command line keeps the user, not the password."""
    from mlflow_self_host.adapters import postgres

    url = "postgresql://ml%40flow:a%3Ab%5Cc%40d@db.lan:5433/mlflow?sslmode=require"
    assert postgres.libpq_url(url) == "postgresql://ml%40flow@db.lan:5433/mlflow?sslmode=require"
    with postgres.environment(url) as env:
        path = env["PGPASSFILE"]
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        assert open(path).read() == "*:*:*:*:a\\:b\\\\c@d\n"
        assert "PGPASSWORD" not in env
    assert not os.path.exists(path)  # removed after


def test_a_restore_drops_only_what_the_dump_lacks_and_lists_rows():
    contents = pg_backup.parse_list(
        ";\n; Archive created at 2026-12-07\n;\n"
        "215; 1259 16385 TABLE public runs mlflow\n"
        "216; 1259 16384 SEQUENCE public runs_run_id_seq mlflow\n"
        "3345; 0 16384 SEQUENCE OWNED BY public runs_run_id_seq mlflow\n"
        "3346; 0 16385 TABLE DATA public runs mlflow\n"
        "3347; 0 0 SEQUENCE SET public runs_run_id_seq mlflow\n")
    assert contents.tables == ["runs"] and contents.data == ("runs",) and contents.entries == 5
    drops = pg_backup.drop_extras([("TABLE", "public", "runs"), ("SEQUENCE", "public", "runs_run_id_seq"),
                                   ("SEQUENCE", "public", "webhooks_id_seq"), ("TABLE", "public", "webhooks"),
                                   ("TYPE", "public", "status")], contents)
    assert drops.splitlines() == ['DROP TABLE IF EXISTS "public"."webhooks" CASCADE;',
                                  'DROP SEQUENCE IF EXISTS "public"."webhooks_id_seq" CASCADE;',
                                  'DROP TYPE IF EXISTS "public"."status" CASCADE;']
    counted = pg_backup.count_rows('SET x = 1;\nCOPY public.runs (run_id, note) FROM stdin;\n1\ta\\nb\n2\tc\n\\.\n')
    assert counted == {"runs": 2}
