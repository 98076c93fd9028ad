"""The nightly backup's retention (docker/mlflow-backup.py for SQLite, the bash of nomad/mlflow-backup.nomad.hcl for
PostgreSQL), run on a folder of backups: the newest backup_keep kept, and the newest backup of an older schema
spared when none of those kept has it, so `inv rollback --restore` still finds the backup taken before a migration
backup_keep nights later."""
from __future__ import annotations

import importlib.util
import subprocess

import pytest

from mlflow_self_host.core.settings import PROJECT_ROOT


def folder_of(tmp_path, ext, schemas):
    """Backups one day apart, oldest first, each with its .schema file."""
    for day, schema in enumerate(schemas):
        name = f"mlflow-202612{day + 1:02d}T030000Z-v1.{day}{ext}"
        (tmp_path / name).write_text("backup")
        (tmp_path / f"{name}.schema").write_text(schema + "\n")
    return tmp_path


def left(folder, ext):
    return sorted(int(p.name.split("-v1.")[1].split(".")[0]) for p in folder.glob(f"mlflow-*{ext}"))


def python_prune(folder, keep):
    spec = importlib.util.spec_from_file_location("mlflow_backup", PROJECT_ROOT / "docker" / "mlflow-backup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.prune(str(folder), keep)


def bash_prune(folder, keep):
    text = (PROJECT_ROOT / "nomad" / "mlflow-backup.nomad.hcl").read_text()
    start = text.index("    prune() {")
    function = text[start:text.index("\n    }\n", start) + 6]
    subprocess.run(["bash", "-c", f"set -euo pipefail\nBACKUP_KEEP={keep}\n{function}\nprune {folder}"], check=True,
                   capture_output=True, text=True)


@pytest.mark.parametrize("ext, prune", [(".db", python_prune), (".dump", bash_prune)])
def test_the_backup_before_a_migration_outlives_backup_keep_nights(tmp_path, ext, prune):
    folder = folder_of(tmp_path, ext, ["old"] * 3 + ["new"] * 6)  # migrated after the third night
    prune(folder, 4)
    assert left(folder, ext) == [2, 5, 6, 7, 8]  # the newest 4, and the last one of the old schema
    assert (folder / f"mlflow-20261203T030000Z-v1.2{ext}.schema").exists()


@pytest.mark.parametrize("ext, prune", [(".db", python_prune), (".dump", bash_prune)])
def test_one_schema_keeps_exactly_backup_keep(tmp_path, ext, prune):
    folder = folder_of(tmp_path, ext, ["same"] * 9)
    prune(folder, 4)
    assert left(folder, ext) == [5, 6, 7, 8]
    assert not (folder / f"mlflow-20261201T030000Z-v1.0{ext}.schema").exists()  # removed with its backup
