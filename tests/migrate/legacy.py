"""A Nomad client as the original recipe (Makefile, Ansible playbook, `nomad job run` by hand) left it.

- client.hcl: the playbook's managed block, unindented, between its markers;
- the two volume folders and the jobs folder ``nomad:root 0774``, made recursively;
- ``/opt/nomad/jobs/mlflow/mlflow_job.nomad`` registered by hand: image ``…/mlflow:latest``, no update
  block, the service inside the task (no provider: Consul), ``env = {}``;
- the store written by MLflow 1.29.0 from a container running as root, ``--default-artifact-root
  /mnt/artifacts``: fixture/mlflow.db and fixture/artifacts (made by fixture/make_mlflow129.py with the
  real MLflow 1.29.0; fixture/expected.json is what they hold).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixture"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def managed_block(backend: str, artifacts: str) -> str:
    """The playbook's block as the recipe's template had it: at column 0."""
    return ("# MLFLOW_BEGIN ANSIBLE MANAGED BLOCK\n"
            f'host_volume "mlflow-backend-store" {{\npath      = "{backend}"\nread_only = false\n}}\n'
            f'host_volume "mlflow-artifacts" {{\npath      = "{artifacts}"\nread_only = false\n}}\n'
            "# MLFLOW_END ANSIBLE MANAGED BLOCK\n")


def client_hcl(backend: str, artifacts: str) -> str:
    return ('data_dir = "/opt/nomad/data"\n\nclient {\n  enabled = true\n  servers = ["127.0.0.1"]\n'
            + managed_block(backend, artifacts) + "}\n")


def job_hcl(image: str, datacenter: str = "DC0") -> str:
    """The recipe's job file, as `nomad job run` took it."""
    return f'''job "mlflow" {{
  datacenters = ["{datacenter}"]
  type        = "service"

  group "svc" {{
    count = 1

    network {{
      port "mlflow_http" {{
        to = 5000
      }}
    }}

    volume "mlflow-backend-store" {{
      type      = "host"
      source    = "mlflow-backend-store"
      read_only = false
    }}

    volume "mlflow-artifacts" {{
      type      = "host"
      source    = "mlflow-artifacts"
      read_only = false
    }}

    task "mlflow_app" {{
      driver = "docker"

      config {{
        image = "{image}"
        ports = ["mlflow_http"]
      }}

      env = {{}}

      volume_mount {{
        volume      = "mlflow-backend-store"
        destination = "/mnt/backend_store"
      }}

      volume_mount {{
        volume      = "mlflow-artifacts"
        destination = "/mnt/artifacts"
      }}

      service {{
        name = "mlflow"
        port = "mlflow_http"
        tags = ["traefik.enable=true", "traefik.http.routers.mlflow.rule=Host(`mlflow.lan`)"]
      }}

      resources {{
        cpu    = 200
        memory = 512
      }}
    }}
  }}
}}
'''


def chown_tree(path: Path, uid: int, gid: int, mode: int | None = None) -> None:
    """``chown -R`` (and ``chmod`` of the folders), as the playbook's ``recurse: yes`` did."""
    for top, dirs, files in os.walk(path):
        os.lchown(top, uid, gid)
        if mode is not None:
            os.chmod(top, mode)
        for name in files:
            os.lchown(os.path.join(top, name), uid, gid)


def lay_out_store(backend: Path, artifacts: Path, nomad_uid: int) -> None:
    """The 1.29.0 database and artifacts, written as root; the folders nomad:root 0774 recursively."""
    backend.mkdir(parents=True, exist_ok=True)
    if artifacts.exists():
        shutil.rmtree(artifacts)
    shutil.copytree(FIXTURE / "artifacts", artifacts)
    shutil.copyfile(FIXTURE / "mlflow.db", backend / "mlflow.db")
    os.chmod(backend / "mlflow.db", 0o644)
    for folder in (backend, artifacts):
        chown_tree(folder, 0, 0)
        os.chown(folder, nomad_uid, 0)
        os.chmod(folder, 0o774)


def register(nomad_addr: str, hcl: str) -> dict:
    """`nomad job run mlflow_job.nomad`: parse on the agent, then register (no check-and-set)."""
    import requests

    job = requests.post(f"{nomad_addr}/v1/jobs/parse", json={"JobHCL": hcl, "Canonicalize": True}, timeout=10)
    job.raise_for_status()
    done = requests.post(f"{nomad_addr}/v1/jobs", json={"Job": job.json()}, timeout=10)
    done.raise_for_status()
    return done.json()
