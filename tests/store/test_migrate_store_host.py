"""`inv migrate-store --to postgres` from the Nomad client's store (no --from): the real sshd is the host,
the Nomad double's client runs the stub image with the host's backend folder mounted, the target a real
PostgreSQL. A running job is refused (its writes during the copy would be lost) with nothing changed; once
stopped, the store is backed up on the host with `inv backup`'s code, downloaded to ./backups, and copied.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid

from mlflow_self_host.adapters import nomad_api
from tests.flags.conftest import ROOT, errors, inv
from tests.flags.test_data_flags import IMAGE_UID, deploy, on_the_host
from tests.services import wait_for
from tests.store.test_migrate_store import assert_no_password, sqlite_store, store_line  # noqa: F401 - the fixture


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_running_job_is_refused_then_the_hosts_store_is_backed_up_and_copied(tmp_path, ssh_server, nomad_cluster,
                                                                                postgres_server, sqlite_store):
    project, settings, env = on_the_host(tmp_path, ssh_server, nomad_cluster)
    shutil.copytree(ROOT / "docker", project / "docker")  # the image's lock: the MLflow environment's recipe
    db = nomad_cluster.backend / "mlflow.db"
    shutil.copy(sqlite_store, db)
    os.chown(db, IMAGE_UID, IMAGE_UID)
    deploy(settings, "0.99")
    name = f"host_{uuid.uuid4().hex[:8]}"
    env = dict(env, MSH_DATABASE_URL=postgres_server.database(name))
    yaml_before, before = (project / "invoke.yaml").read_text(), _sha256(db)

    running = inv("migrate-store", "--to", "postgres", cwd=project, env=env, expect=1)
    assert len(errors(running)) == 1 and "job mlflow is running" in errors(running)[0]
    assert "nomad job stop mlflow" in running.stderr
    assert postgres_server.tables(name) == [] and (project / "invoke.yaml").read_text() == yaml_before
    assert not (project / "backups").exists() and not os.path.exists(settings.backups_path)

    nomad = nomad_api.client(settings)
    nomad.job.deregister_job(settings.job_name)
    wait_for(lambda: not [a for a in nomad.job.get_allocations(settings.job_name)
                          if a.get("ClientStatus") in ("pending", "running")], 60, "the job's stop")

    cache = tmp_path / "fresh-cache"  # a machine without the worker's environment: the dry run creates none
    dry = inv("migrate-store", "--to", "postgres", "--dry-run", cwd=project, env=dict(env, MSH_CACHE_DIR=str(cache)))
    assert "dry run: nothing was changed" in dry.stderr and "inv backup --download" in dry.stderr
    assert f"run {settings.host}:{settings.backend_path.rstrip('/')}/mlflow.db" in dry.stderr  # the backup, shown
    assert postgres_server.tables(name) == [] and not os.path.exists(settings.backups_path)
    assert not cache.exists() and not (project / "backups").exists()

    done = inv("migrate-store", "--to", "postgres", cwd=project, env=env)
    assert "every table checks out" in done.stderr
    (downloaded,) = (project / "backups").iterdir()
    assert downloaded.name.startswith("mlflow-") and downloaded.name.endswith("-v0.99.db")
    assert postgres_server.count(name, "metrics") == 267 and postgres_server.count(name, "runs") == 7
    assert store_line(project).split()[1] == "postgres"
    assert _sha256(db) == before, "the host's store was changed"
    assert_no_password(postgres_server.password, running, dry, done)
