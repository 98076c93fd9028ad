"""A release that changes MLflow's schema, as deploy and rollback see it before any change, through `inv`:
the registry's image labels (a stub image labelled with a schema chain, as `inv build` labels the real one)
against the database's revision on the SSH host (a database whose alembic_version is rewritten: never served
by an MLflow). deploy --dry-run says "schema upgrade X -> Y"; --no-backup with it is refused (2); a database
newer than the image is refused (15); rollback to a version whose MLflow is older than the database's schema
is refused (15, hint --restore), and --restore puts back the backup recorded at a schema it serves."""
from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

from mlflow_self_host.core.schema_chain import chain
from tests.flags.conftest import errors, inv, set_version
from tests.flags.test_data_flags import deploy, on_the_host

HEAD = "dc11669786a5"  # MLflow 3.17.2's, the image's
OLD_HEAD = "b7e2c1a4d9f3"  # MLflow 3.16.1's


def set_revision(db: Path, revision: str) -> None:
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL)")
        con.execute("DELETE FROM alembic_version")
        con.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
    con.close()


def revision_of(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    finally:
        con.close()


def publish_labelled(cluster, version: str, order: tuple, mlflow: str) -> str:
    """The stub image of v{version}, labelled with a schema chain as `inv build` labels the real image."""
    images = cluster.images
    ref = images.publish(version)
    dockerfile = (f"FROM {ref}\nLABEL io.mlflow-self-host.mlflow-version=\"{mlflow}\" "
                  f"io.mlflow-self-host.schema-head=\"{order[-1]}\" "
                  f"io.mlflow-self-host.schema-chain=\"{' '.join(order)}\"\n")
    import io

    images.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref, rm=True, network_mode="host")
    for event in images.client.api.push(f"{images.registry}/{images.repository}", tag=f"v{version}", stream=True,
                                        decode=True):
        assert not event.get("error"), event
    images._pushed.pop(version, None)  # the registry's tag is no longer the plain stub
    return ref


def test_deploy_dry_run_on_an_older_database_says_the_schema_upgrade_and_refuses_what_it_cannot_do(
        tmp_path, ssh_server, nomad_cluster):
    project, settings, env = on_the_host(tmp_path, ssh_server, nomad_cluster)
    db, double = nomad_cluster.backend / "mlflow.db", nomad_cluster.nomad
    deploy(settings, "0.99")
    set_revision(db, OLD_HEAD)  # as MLflow 3.16.1 left it
    publish_labelled(nomad_cluster, "0.100", chain().order, "3.17.2")
    set_version(project, "0.100")
    before = (len(double.versions()), db.read_bytes())

    dry = inv("deploy", "--skip-host", "--skip-build", "--dry-run", cwd=project, env=env)
    line = f"schema upgrade {OLD_HEAD} -> {HEAD}: backup, migrate once, no automatic revert"
    assert line in dry.stderr, dry.stderr
    shown = dry.stderr[dry.stderr.index(line):]
    actions = re.findall(r"^\s+(back up|stop|migrate|register|follow|check) ", shown, re.M)
    assert actions == ["back up", "stop", "migrate", "register", "follow"], shown
    assert re.search(r"^\s+register job mlflow .*no automatic revert", shown, re.M), shown

    refused = inv("deploy", "--skip-host", "--skip-build", "--no-backup", cwd=project, env=env, expect=2)
    assert errors(refused) and "--no-backup refused" in errors(refused)[0]

    set_revision(db, "f4a9b2c7d1e6")  # MLflow 3.18.0's head: written by a newer MLflow
    newer = inv("deploy", "--skip-host", "--skip-build", cwd=project, env=env, expect=15)
    [red] = errors(newer)
    assert "schema revision f4a9b2c7d1e6" in red and "a newer MLflow wrote it" in red
    assert (len(double.versions()), not Path(settings.backups_path).exists()) == (before[0], True)
    assert revision_of(db) == "f4a9b2c7d1e6"


def test_rollback_to_an_older_schema_is_refused_and_restore_puts_back_the_backup_before_the_migration(
        tmp_path, ssh_server, nomad_cluster):
    project, settings, env = on_the_host(tmp_path, ssh_server, nomad_cluster)
    db, double = nomad_cluster.backend / "mlflow.db", nomad_cluster.nomad
    order = chain().order
    old = order[:order.index(OLD_HEAD) + 1]
    set_revision(db, OLD_HEAD)
    publish_labelled(nomad_cluster, "0.98", old, "3.16.1")
    publish_labelled(nomad_cluster, "0.99", order, "3.17.2")
    deploy(settings, "0.98")  # job version 0: MLflow 3.16.1 on its own schema
    backups = Path(settings.backups_path)
    backups.mkdir()
    before = "mlflow-20261207T110000Z-v0.98.db"
    shutil.copy(db, backups / before)  # the backup deploy took before the migration, with its schema recorded
    (backups / (before + ".schema")).write_text(OLD_HEAD + "\n")
    set_revision(db, HEAD)  # migrated by v0.99's release (its migration step is another test's)
    deploy(settings, "0.99")  # job version 1
    later = "mlflow-20261207T120000Z-v0.99.db"
    shutil.copy(db, backups / later)
    (backups / (later + ".schema")).write_text(HEAD + "\n")
    versions = len(double.versions())

    refused = inv("rollback", "--to", "0", cwd=project, env=env, expect=15)
    [red] = errors(refused)
    assert f"schema head {OLD_HEAD}" in red and f"schema revision {HEAD}" in red and "MLflow 3.16.1" in red
    assert "inv rollback --to 0 --restore" in refused.stderr
    assert len(double.versions()) == versions and revision_of(db) == HEAD

    dry = inv("rollback", "--to", "0", "--restore", "--dry-run", cwd=project, env=env)
    assert f"restore backup {before}" in " ".join(dry.stderr.split()), dry.stderr
    assert len(double.versions()) == versions and revision_of(db) == HEAD

    done = inv("rollback", "-t", "0", "-O", cwd=project, env=env)
    assert f"restored {before}" in done.stderr and "rolled back to job version 0" in done.stderr
    assert revision_of(db) == OLD_HEAD
    (alloc,) = double.running_allocs()
    assert double.container_of(alloc["ID"]).attrs["Config"]["Image"] == nomad_cluster.images.ref("0.98")
