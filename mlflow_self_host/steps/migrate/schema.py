"""MLflow's SQLite schema revisions, as the MLflow of the image knows them.

The image pins mlflow==3.17.2 (docker/requirements.lock) and this package depends on the same
mlflow-skinny, which carries the alembic scripts (``mlflow/store/db_migrations/versions``). Their
``revision``/``down_revision`` lines give the chain without importing alembic or SQLAlchemy, so the
laptop can tell, before anything changes, whether the image can upgrade a database: a revision in the
chain can be upgraded, the head is current, any other one was written by a newer MLflow.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_LINE = re.compile(r"""^(revision|down_revision)\s*(?::\s*[^=]+)?=\s*(?:['"]([0-9a-f]+)['"]|None)""", re.M)


@dataclass(frozen=True)
class Chain:
    mlflow_version: str
    order: tuple  # revisions, oldest first

    @property
    def head(self) -> str:
        return self.order[-1]

    def knows(self, revision: str) -> bool:
        return revision in self.order

    def behind(self, revision: str) -> int:
        """How many migrations the image runs on a database at ``revision``."""
        return len(self.order) - 1 - self.order.index(revision)


@lru_cache(maxsize=1)
def chain() -> Chain:
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("mlflow")  # found, not imported: importing mlflow takes seconds
    folder = Path(list(spec.submodule_search_locations)[0]) / "store" / "db_migrations" / "versions"
    return Chain(importlib.metadata.version("mlflow-skinny"), tuple(_order(_links(folder))))


def _links(folder: Path) -> dict:
    """revision -> down_revision of every script in ``folder``."""
    links = {}
    for script in folder.glob("*.py"):
        found = dict((k, v) for k, v in _LINE.findall(script.read_text(encoding="utf-8")))
        if found.get("revision"):
            links[found["revision"]] = found.get("down_revision") or None
    return links


def _order(links: dict) -> list[str]:
    children = {down: rev for rev, down in links.items()}
    base = [rev for rev, down in links.items() if down is None]
    if len(base) != 1 or len(children) != len(links):
        raise RuntimeError("MLflow's migration scripts do not form one chain")  # a broken install
    order, at = [], base[0]
    while at is not None:
        order.append(at)
        at = children.get(at)
    return order
