"""A real MLflow upgrade, on the real parts, as a user types it (tests/test_user_path.py's setup): the sshd host,
the Nomad double running the real images, the registry, the proxy (nginx routed as Traefik would), dnsmasq;
on SQLite and on PostgreSQL.

The project is on MLflow 3.16.1 (tests/services/mlflow_3_16's lock, schema head b7e2c1a4d9f3) and deployed; a
user logs runs, metrics and an artifact through the name and the proxy. Then the lock of 3.17.2 (the project's
docker/requirements.lock, head dc11669786a5: two migrations more) is committed with an entrypoint whose serve
step is broken (the migration works, the server never passes its check), and `inv release` while a client
logs: it backs up, stops, migrates, registers without revert, fails, and says how to go back; the command it
names, `inv rollback --to N --restore`, puts the old version back on the pre-migration data, compared with the backup table by table; every
step the client had acknowledged before the backup is there. Last the real upgrade, `inv release` with the
working entrypoint while the client logs: everything read back through the proxy, nothing acknowledged lost,
the database at 3.17.2's head, and a rollback to 3.16.1 without --restore refused (15).

No two servers of different MLflow versions ever run on the one database: the release stops the old one
before the migration, and the rollback stops the new one before the restore.
"""
from __future__ import annotations

import ipaddress
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.services import mlflow_old_image as old_release
from tests.services import project_repo, resolver, user_path
from tests.services.mlflow_image import PROJECT_ROOT
from tests.services import ADMIN_PASSWORD  # auth: basic by default
from tests.services.mlflow_load import SteadyLogger
from tests.services.project_repo import git
from tests.host.conftest import nomad_user  # noqa: F401 - the fixture fresh_host uses
from tests.test_user_path import fresh_host, proxy  # noqa: F401 - the fixtures

pytestmark = pytest.mark.slow
DOMAIN = user_path.DOMAIN
BROKEN_SERVE = ("echo 'mlflow-entrypoint: serving broken on purpose (/health answers 404)' >&2\n"
                'exec python -m http.server "$MLFLOW_PORT"\n')


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, docker_engine_service, nomad_network):
    """("sqlite", None), or ("postgres", its URL as the job and this machine reach it: the bridge's gateway,
    relayed to the test PostgreSQL on loopback)."""
    if request.param == "sqlite":
        yield "sqlite", None
        return
    from tests.job.test_release_on_postgres import Relay

    server = request.getfixturevalue("postgres_server")
    ipam = docker_engine_service.client().networks.get(nomad_network).attrs["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    relay = Relay(gateway, ("127.0.0.1", server.port))
    name = f"upgrade_{uuid.uuid4().hex[:8]}"
    server.database(name)
    try:
        yield "postgres", (server, name, server.url(name, port=relay.port).replace("@127.0.0.1:", f"@{gateway}:"))
    finally:
        relay.stop()


class Release(threading.Thread):
    """`inv ARGS` in the background, its output lines timed: ``seen(text)`` is when a line with ``text`` came."""

    def __init__(self, cmd, cwd, env):
        super().__init__(daemon=True)
        self.cmd, self.cwd, self.env = cmd, cwd, env
        self.lines: list[tuple[float, str]] = []
        self.code = None
        self.on_line = None  # called with each line as it comes

    def run(self):
        proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            self.lines.append((time.monotonic(), line))
            if self.on_line:
                self.on_line(line)
        self.code = proc.wait(timeout=900)

    @property
    def stderr(self) -> str:
        return "".join(line for _, line in self.lines)


def pg_restore(server, database: str, dump: Path):
    """``dump`` restored into ``database`` by the superuser over the socket (to compare it), read from stdin:
    the postgres user cannot read the test's folders."""
    from tests.services import postgres as postgres_service

    return subprocess.run([str(server.bin_dir / "pg_restore"), "--no-owner", "--no-privileges", "-h",
                           str(server.socket_dir), "-p", str(server.port), "-U", "postgres", "-d", database],
                          input=dump.read_bytes(), capture_output=True, timeout=120, **postgres_service._as_postgres())


def rows(store_kind, where) -> dict[str, list]:
    """Every table's rows, sorted (what a comparison with the backup compares)."""
    if store_kind == "sqlite":
        con = sqlite3.connect(where)
        try:
            names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                               "AND name NOT LIKE 'sqlite_%' ORDER BY 1")]
            return {n: sorted(map(repr, con.execute(f'SELECT * FROM "{n}"'))) for n in names}
        finally:
            con.close()
    server, database = where
    names = server.tables(database)
    return {n: server.psql(f'SELECT t::text FROM "{n}" t ORDER BY 1', database=database).splitlines()
            for n in names}


def test_an_mlflow_upgrade_backs_up_migrates_once_and_goes_back_whole(
        tmp_path, fresh_host, proxy, dns_server, registry, base_image, docker_engine_service,  # noqa: F811
        mlflow_old_image, mlflow_image, store, monkeypatch, capsys):
    store_kind, pg = store
    host, double = fresh_host
    repo = project_repo.make(tmp_path / "project", version="1.0")
    old_release.use_lock(repo)  # the fixture mlflow_old_image built it: `inv deploy` finds its layers cached
    git(repo, "commit", "--quiet", "--all", "--message", "MLflow 3.16.1")
    image = f"mlflow-upgrade-{uuid.uuid4().hex[:8]}"
    url = f"http://{DOMAIN}:{proxy.port}/"
    backups = tmp_path / "host" / "data" / "backups"
    env = user_path.env(host, double, docker_engine_service, registry, image, base_image, dns_server, url, backups,
                        "05-mlflow-upgrade.conf", deploy_timeout=400)
    if store_kind == "postgres":
        env.update(MSH_STORE="postgres", MSH_DATABASE_URL=pg[2])

    inv = user_path.runner(repo, env)

    def served_version() -> str:
        return requests.get(url + "version", timeout=10, auth=("admin", ADMIN_PASSWORD)).text.strip()

    def database():
        return host.backend / "mlflow.db" if store_kind == "sqlite" else (pg[0], pg[1])

    def revision() -> str:
        if store_kind == "sqlite":
            with sqlite3.connect(host.backend / "mlflow.db") as con:
                return con.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        return pg[0].psql("SELECT version_num FROM alembic_version", database=pg[1])

    def while_logging(client, run, *args, expect=0):
        """`inv ARGS` while a training job logs through the proxy; (the release, the logger, how many steps
        were acknowledged when the release began its backup)."""
        logger = SteadyLogger(client, run)
        logger.start()
        time.sleep(2)
        release = Release([sys.executable, "-m", "invoke", *args], repo, env)
        at_backup = []
        release.on_line = lambda line: at_backup.append(len(logger.acknowledged)) \
            if "backing up the database" in line and not at_backup else None
        started = time.monotonic()
        release.start()
        release.join(900)
        took = time.monotonic() - started
        time.sleep(2)
        logger.stop()
        assert release.code == expect, f"inv {' '.join(args)} → {release.code}\n{release.stderr[-5000:]}"
        assert "Traceback" not in release.stderr
        assert at_backup, "the release took no backup before the migration\n" + release.stderr[-3000:]
        return release, logger, at_backup[0], took

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")  # auth: basic, the default: the client logs in
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    undo_dns = resolver.install(dns_server.port)  # mlflow.lan for this process (the client, /version)
    try:
        inv("configure-host")
        inv("dns")
        deployed = inv("deploy")
        assert "deployed v1.0" in deployed.stderr
        assert served_version() == old_release.MLFLOW_VERSION
        assert revision() == old_release.SCHEMA_HEAD

        # a user's work under 3.16.1, through the name and the proxy
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=url)
        experiment, run, artifact = user_path.log_work(client, "upgrade", tmp_path)

        def everything_is_there():
            assert client.get_run(run).data.params == {"lr": "0.01"}
            assert [m.step for m in client.get_metric_history(run, "loss")] == list(range(10))
            got = Path(client.download_artifacts(run, "model.txt", str(tmp_path / f"read-{uuid.uuid4().hex}")))
            assert got.read_text() == artifact.read_text()

        everything_is_there()

        # 1. 3.17.2 with a broken serve step: the migration runs, the new server fails its check
        for name in ("requirements.txt", "requirements-nodeps.txt", "requirements.lock", "entrypoint.sh"):
            shutil.copy(PROJECT_ROOT / "docker" / name, repo / "docker" / name)
        entrypoint = repo / "docker" / "entrypoint.sh"
        text = entrypoint.read_text()
        assert '\nserve="$(dirname "$0")/mlflow-serve.py"\n' in text
        entrypoint.write_text(text.replace('\nserve="$(dirname "$0")/mlflow-serve.py"\n',
                                           "\n" + BROKEN_SERVE + 'serve="$(dirname "$0")/mlflow-serve.py"\n', 1))
        git(repo, "commit", "--quiet", "--all", "--message", "MLflow 3.17.2, serving broken")
        healthy_deadline = env["MSH_HEALTHY_DEADLINE"]
        env.update(MSH_HEALTHY_DEADLINE="12s")  # the broken server's check fails until then (its image is pulled
        # already: the migration's batch job ran it on the same client)
        logged = client.create_run(experiment).info.run_id
        release, logger, at_backup, _ = while_logging(client, logged, "release", "--bump", "minor", expect=11)
        said = release.stderr
        assert f"schema upgrade {old_release.SCHEMA_HEAD}" in said and "no automatic revert" in said, said
        back = re.search(r"`inv rollback --to (\d+) --restore`", said)  # the one command back deploy says
        assert back and "`inv restore --backup mlflow-" in said, said
        (backup,) = [p for p in backups.iterdir() if p.name.startswith("mlflow-") and
                     p.suffix in (".db", ".dump")]
        assert "v1.0" in backup.name and backup.name in said
        assert revision() == old_release.NEW_SCHEMA_HEAD  # migrated, then the server failed
        env.update(MSH_HEALTHY_DEADLINE=healthy_deadline)

        # 2. the commands deploy said: back on 3.16.1 with the data of the backup
        inv("rollback", "--to", back.group(1), "--restore")
        assert served_version() == old_release.MLFLOW_VERSION
        assert revision() == old_release.SCHEMA_HEAD
        if store_kind == "sqlite":
            assert rows("sqlite", database()) == rows("sqlite", backup)
        else:
            server, name = pg[0], f"{pg[1]}_backup"
            server.database(name)
            restored = pg_restore(server, name, backup)
            assert restored.returncode == 0, restored.stderr
            assert rows("postgres", database()) == rows("postgres", (server, name))
        everything_is_there()
        kept = {m.step for m in client.get_metric_history(logged, "load")}
        assert set(logger.acknowledged[:at_backup]) <= kept, "a step acknowledged before the backup was lost"

        # 3. the real upgrade, while a training job logs
        shutil.copy(PROJECT_ROOT / "docker" / "entrypoint.sh", entrypoint)
        git(repo, "commit", "--quiet", "--all", "--message", "MLflow 3.17.2")
        logged = client.create_run(experiment).info.run_id
        release, logger, _, took = while_logging(client, logged, "release", "--bump", "minor")
        assert "deployed v1.2" in release.stderr
        assert served_version() == old_release.NEW_MLFLOW_VERSION
        assert revision() == old_release.NEW_SCHEMA_HEAD
        everything_is_there()
        stored = {m.step for m in client.get_metric_history(logged, "load")}
        assert logger.acknowledged and set(logger.acknowledged) <= stored, "an acknowledged step was lost"
        with capsys.disabled():
            print(f"\n{store_kind}: release 3.16.1 -> 3.17.2 {took:.1f}s; the logging client saw the service "
                  f"away for {logger.longest_gap:.1f}s at most ({logger.failures} failed calls)")

        # going back past the migration without the backup: refused, nothing changed
        refused = inv("rollback", expect=15)
        assert "--restore" in refused.stderr
        assert served_version() == old_release.NEW_MLFLOW_VERSION
    finally:
        undo_dns()
        double.stop()
        engine = docker_engine_service.client()
        for tagged in engine.images.list(name=f"{registry.address}/{image}"):
            for tag in tagged.tags:
                engine.images.remove(tag, noprune=True)
