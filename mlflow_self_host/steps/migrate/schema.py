"""MLflow's schema revisions: as this package's MLflow knows them, as an image records them, and the
database's against the image's (``compare``: same, empty, upgrade, newer, unknown).

The image pins mlflow==3.17.2 (docker/requirements.lock) and this package depends on the same
mlflow-skinny, which carries the alembic scripts (``mlflow/store/db_migrations/versions``). Their
``revision``/``down_revision`` lines give the chain without importing alembic or SQLAlchemy, so the
laptop can tell, before anything changes, whether the image can upgrade a database: a revision in the
chain can be upgraded, the head is current, any other one was written by a newer MLflow.

`inv build` reads the same scripts from the built image's own MLflow (``parse_scripts``) and labels the
image with them (``LABELS``): its MLflow version, its head and its whole chain, oldest first. Deploy and
rollback read those labels from the registry (``chain_of_labels``) and the database's revision
(steps/store/revision.py), and ``compare`` says what the image would do to that database.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...core.schema_chain import (BUILD_ARGS, LABEL_CHAIN, LABEL_HEAD, LABEL_VERSION, Chain,  # noqa: F401
                                  build_args, chain, chain_of_labels, parse_scripts)


# --- the database against the image ----------------------------------------------------------------
SAME, EMPTY, UPGRADE, NEWER, UNKNOWN = "same", "empty", "upgrade", "newer", "unknown"


@dataclass(frozen=True)
class SchemaFacts:
    """The database's revision against the image's chain (``kind``: ``compare``'s, or unknown)."""

    db_revision: str | None  # None: no MLflow tables (or not read: see kind)
    image_head: str | None  # None: the image has no schema labels
    chain: tuple = ()  # the image's revisions, oldest first
    kind: str = UNKNOWN  # same, empty, upgrade, newer, unknown
    image_mlflow: str = ""  # the image's MLflow version (its label)
    why: str = ""  # unknown: why (no labels, the database not read); newer: which MLflow wrote it, if known

    @property
    def behind(self) -> int:
        """Migrations the image runs (upgrade)."""
        return len(self.chain) - 1 - self.chain.index(self.db_revision) if self.kind == UPGRADE else 0

    @property
    def line(self) -> str:
        """The plan's header line of a schema upgrade."""
        return f"schema upgrade {self.db_revision} -> {self.image_head}: backup, migrate once, no automatic revert"


def compare(db_revision: str | None, chain) -> str:
    """What the image of ``chain`` (its revisions, oldest first; empty: unknown) does to a database at
    ``db_revision`` (None: no MLflow tables). Pure."""
    order = tuple(chain or ())
    if not order:
        return UNKNOWN
    if db_revision is None:
        return EMPTY
    if db_revision == order[-1]:
        return SAME
    if db_revision in order:
        return UPGRADE
    return NEWER


def facts(db_revision: str | None, image: Chain | None, unreadable: str = "") -> SchemaFacts:
    """SchemaFacts of a database (``unreadable``: why its revision could not be read) and an image's chain."""
    if image is None:
        return SchemaFacts(db_revision, None, (), UNKNOWN, why="the image has no schema labels (built before "
                                                                 "they existed)")
    if unreadable:
        return SchemaFacts(None, image.head, image.order, UNKNOWN, image.mlflow_version,
                           why=f"the database's revision was not read: {unreadable}")
    kind = compare(db_revision, image.order)
    why = written_by(db_revision) if kind == NEWER else ""
    return SchemaFacts(db_revision, image.head, image.order, kind, image.mlflow_version, why)


def written_by(revision: str | None) -> str:
    """Which MLflow wrote a revision, when this package's MLflow knows it ("" else)."""
    try:
        own = chain()
    except Exception:  # noqa: BLE001 - a broken install: not known
        return ""
    if revision and own.knows(revision):
        return f"revision {revision} is in the schema of MLflow {own.mlflow_version} (this package's)"
    return ""
