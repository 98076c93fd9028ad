"""`inv release` of an MLflow upgrade (3.16.1 -> 3.17.2: two schema migrations) on SQLite, to healthy, beside
its floor measured in the same round.

bench/release.py's stack: the real engine, registry, sshd, dnsmasq and nginx (tests/services), and the Nomad
double whose client runs the real images. The project repository starts on MLflow 3.16.1
(tests/services/mlflow_3_16's lock) and is released once (cold, not measured), then a run with
``--metrics`` metric steps is logged. Each round:

- release: the project's docker/requirements.lock (3.17.2) committed, then `inv release --bump minor`
  (bump, commit, tag, build, push, latest, deploy: backup, stop, the migration's batch job, register
  without revert, follow to healthy, the check through the proxy);
- floor: the database as it was before that release (an online copy), migrated by the new image as the
  batch job runs it (``MLFLOW_DB_UPGRADE=only``: container start and `mlflow db upgrade`), then the new image
  started on it the way the double's client starts it until /health answers, plus the job's
  min_healthy_time (the least any deploy of it can take, as in bench/release.py);
- then, not measured, `inv rollback --restore` (3.16.1 on the pre-migration backup) and the old lock
  committed again, for the next round.

Run: python3 bench/release_upgrade.py [--rounds N] [--metrics N]   (root; ignores DOCKER_HOST)
"""
import argparse
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from common import ROOT, median, write_section
from release import DOMAIN, Stack, to_health


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--metrics", type=int, default=2000)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    os.environ.pop("DOCKER_HOST", None)
    rows = []
    from services import nomad_user

    with tempfile.TemporaryDirectory(prefix="msh-bench-upgrade-") as tmp, nomad_user():
        with Upgrades(Path(tmp), trace=args.trace) as stack:
            stack.on_lock("old", "MLflow 3.16.1")
            stack.release("minor")  # the first deploy, of 3.16.1: cold, not measured
            stack.seed(args.metrics)
            for _ in range(args.rounds):
                before = stack.snapshot()
                stack.on_lock("new", "MLflow 3.17.2")
                took = stack.inv("release", "--bump", "minor")
                migrate, start, min_healthy = stack.floor(before)
                rows.append((took, migrate, start, min_healthy))
                print(f"upgrade release {took:.1f}s; floor: migration {migrate:.1f}s + start {start:.1f}s + "
                      f"min_healthy_time {min_healthy:.0f}s", flush=True)
                stack.inv("rollback", "--restore")
                stack.on_lock("old", "back to MLflow 3.16.1")
    report(args, rows)


class Upgrades(Stack):
    def on_lock(self, which: str, message: str) -> None:
        """The project's requirements files and lock of the old release or the current one, committed."""
        from tests.services import mlflow_old_image
        from tests.services.project_repo import git

        if which == "old":
            mlflow_old_image.use_lock(self.repo)
        else:
            for name in mlflow_old_image.FILES:
                shutil.copy(ROOT / "docker" / name, self.repo / "docker" / name)
        if git(self.repo, "status", "--porcelain").strip():
            git(self.repo, "commit", "--quiet", "--all", "--message", message)

    def seed(self, metrics: int) -> None:
        """A run with ``metrics`` steps of one metric, logged through the name and the proxy."""
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        from tests.services.resolver import use_dns

        with use_dns(self.dns.port):
            client = MlflowClient(tracking_uri=f"http://{DOMAIN}:{self.proxy.port}/")
            run = client.create_run(client.create_experiment("bench-upgrade")).info.run_id
            for first in range(0, metrics, 500):
                client.log_batch(run, metrics=[Metric("loss", 1.0 / (s + 1), 0, s)
                                               for s in range(first, min(metrics, first + 500))])

    def snapshot(self) -> Path:
        """An online copy of the served database, as it is before the release."""
        copy = self.root / "floor-upgrade" / uuid.uuid4().hex[:8] / "mlflow.db"
        copy.parent.mkdir(parents=True)
        source = sqlite3.connect(self.host.backend / "mlflow.db")
        target = sqlite3.connect(copy)
        source.backup(target)
        target.close()
        source.close()
        return copy

    def floor(self, database: Path) -> tuple[float, float, float]:
        """(the migration of ``database`` by the released image, its server's start on it, min_healthy_time)."""
        from mlflow_self_host.core.settings import Settings
        from mlflow_self_host.steps.job import jobfile
        from tests.doubles.nomad.client import SECOND
        from tests.doubles.nomad.jobspec import duration
        from tests.services import free_port

        settings = Settings.load(root=self.repo, env=self.env)
        version = (self.repo / "version.txt").read_text().strip()
        ref = settings.image_ref(version)
        job = jobfile.variables(settings, version)
        folders = {"backend_store": database.parent, "artifacts": database.parent / "artifacts"}
        for folder in folders.values():
            folder.mkdir(exist_ok=True)
        for path in (database.parent, folders["artifacts"], database):
            os.chown(path, 1000, 1000)
        volumes = {str(path): {"bind": f"/mnt/{name}", "mode": "rw"} for name, path in folders.items()}
        common = dict(user=job["user"], volumes=volumes, mem_limit=f"{job['memory']}m", network=self.network)

        migration = self.client.containers.create(ref, environment={"MLFLOW_DB_UPGRADE": "only"}, **common)
        start = time.perf_counter()
        migration.start()
        try:
            code = migration.wait(timeout=600)["StatusCode"]
            migrate = time.perf_counter() - start
            if code != 0:
                raise SystemExit(f"the floor's migration failed ({code}): {migration.logs()[-2000:]!r}")
        finally:
            migration.remove(force=True)

        port = free_port()
        server = self.client.containers.create(ref, environment={"MLFLOW_DOMAIN": DOMAIN, "MLFLOW_DB_UPGRADE": "false"},
                                               ports={"5000/tcp": ("127.0.0.1", port)}, **common)
        ready = to_health(server, port)
        return migrate, ready, duration(job["min_healthy_time"], "min_healthy_time") / SECOND


def report(args, rows) -> None:
    took = median([r[0] for r in rows])
    migrate, start, min_healthy = (median([r[i] for r in rows]) for i in (1, 2, 3))
    floor = median([r[1] + r[2] + r[3] for r in rows])
    body = f"""## Release of an MLflow upgrade (schema migrations) to healthy

Command: `python3 bench/release_upgrade.py --rounds {args.rounds} --metrics {args.metrics}` (bench/release.py's
real engine, registry, sshd, dnsmasq, nginx and the Nomad double running the real images; SQLite; MLflow
3.16.1 -> 3.17.2, two migrations; a run of {args.metrics} metric steps in the store; each round releases the
upgrade, measures its floor, then goes back with `inv rollback --restore`; medians of {args.rounds} rounds)

| what | median | ratio to the floor |
| --- | --- | --- |
| the migration alone: the new image with `MLFLOW_DB_UPGRADE=only` on a copy of the database | {migrate:.1f} s | |
| the new server's start on the migrated copy, to `/health` | {start:.1f} s | |
| min_healthy_time | {min_healthy:.0f} s | |
| floor: the three together | {floor:.1f} s | 1.00x |
| `inv release --bump minor` of the upgrade, to healthy (warm caches) | {took:.1f} s | {took / floor:.2f}x |

What the release adds to the floor: its own steps (bump, commit, tag, the build of a new venv layer from the
engine's cache, push of that layer, latest, backup), the stop of the old allocation, the batch job's
registration, placement and the wait for its end, the register and its deployment's checks (every 2 s).
"""
    write_section("release_upgrade", body)


if __name__ == "__main__":
    main()
