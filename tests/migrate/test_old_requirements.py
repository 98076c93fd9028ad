"""The previous MLflow's requirements (the upgrade tests' old image) stay docker/'s, with only MLflow's pins
changed: an extra the image's entrypoint needs (the auth app's, the metrics exporter) is there too, or the old
image would not start with the settings every deploy uses."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^(mlflow(?:-skinny|-tracing)?)==[\d.]+$")


def _requirements(path: Path) -> set[str]:
    lines = {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}
    return {PIN.sub(r"\1==PINNED", line) for line in lines}


def test_the_old_images_requirements_are_dockers_with_mlflows_pins_only():
    for name in ("requirements.txt", "requirements-nodeps.txt"):
        assert _requirements(ROOT / "tests/services/mlflow_3_16" / name) == _requirements(ROOT / "docker" / name), name
    old_lock = (ROOT / "tests/services/mlflow_3_16/requirements.lock").read_text()
    assert "flask-wtf==" in old_lock and "prometheus-flask-exporter==" in old_lock and "mlflow==3.16.1" in old_lock
