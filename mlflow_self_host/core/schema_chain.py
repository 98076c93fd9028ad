"""The alembic chain of MLflow's migration scripts: from their texts, as an image's labels, and the one this
package's MLflow carries (``chain``, read from its files, not imported).

``revision``/``down_revision`` lines give the chain without importing alembic or SQLAlchemy. `inv build` reads
the scripts of the image's own MLflow and passes ``build_args`` to the Dockerfile's labels; deploy and
rollback read them back (``chain_of_labels``). steps/migrate/schema.py compares a database with a chain.
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
    return _links_of(script.read_text(encoding="utf-8") for script in folder.glob("*.py"))


def _links_of(texts) -> dict:
    links = {}
    for text in texts:
        found = dict((k, v) for k, v in _LINE.findall(text))
        if found.get("revision"):
            links[found["revision"]] = found.get("down_revision") or None
    return links


def parse_scripts(texts) -> tuple:
    """The chain, oldest first, of migration scripts given as their texts (an image's, read by `inv build`)."""
    return tuple(_order(_links_of(texts)))


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


# --- an image's schema, as labels ------------------------------------------------------------------
LABEL_VERSION = "io.mlflow-self-host.mlflow-version"
LABEL_HEAD = "io.mlflow-self-host.schema-head"
LABEL_CHAIN = "io.mlflow-self-host.schema-chain"
BUILD_ARGS = {LABEL_VERSION: "MLFLOW_VERSION", LABEL_HEAD: "SCHEMA_HEAD", LABEL_CHAIN: "SCHEMA_CHAIN"}


def build_args(mlflow_version: str, order: tuple) -> dict:
    """The Dockerfile's ARGs that become the three labels."""
    return {"MLFLOW_VERSION": mlflow_version, "SCHEMA_HEAD": order[-1] if order else "",
            "SCHEMA_CHAIN": " ".join(order)}


def chain_of_labels(labels: dict | None) -> Chain | None:
    """An image's chain from its labels; None when it has none (built before they existed: "unknown")."""
    labels = labels or {}
    order = tuple((labels.get(LABEL_CHAIN) or "").split())
    if not order or (labels.get(LABEL_HEAD) and labels[LABEL_HEAD] != order[-1]):
        return None
    return Chain(labels.get(LABEL_VERSION) or "", order)
