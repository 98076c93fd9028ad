"""The store copy's program: run by the python of the MLflow environment, never imported by the package.

``python worker.py OP [SQLITE]``: one operation, one JSON line on stdout; exit 0 done, 3 refused or
failed (the JSON says why: ``{"error": ...}``). It needs what the image has: MLflow (the same pinned
version: its alembic migrations create the schema), SQLAlchemy and psycopg2, so `inv migrate-store`
runs it from the native server's environment, made from the image's lock (``local.ensure_venv``).

The PostgreSQL URL comes from the environment (``MSH_DATABASE_URL``), never from the command line
(``ps`` shows that to every user of the machine).

Operations:

- ``target``: the target's tables and alembic revision (``{"tables": [...], "revision": ...}``);
- ``upgrade SQLITE``: the file's schema to MLflow's head (run on a copy only);
- ``schema``: MLflow's tables in the empty target, at MLflow's head (as the server makes them);
- ``copy SQLITE``: every table's rows, in foreign-key order, in one transaction (after removing the
  rows the migrations seed, such as the default workspace: the source has its own); then each serial
  column's sequence set past its largest value;
- ``check SQLITE``: per table, row count and checksum on both sides: the sha256 of each row's
  canonical form (values by type: numbers, text, booleans, times, JSON, bytes), summed modulo 2**256,
  so that neither side's row order (or collation) matters;
- ``drop``: every table (and enum type) in the target's schema: undoes ``schema`` after a failure
  (the caller checked the target was empty before).
"""
from __future__ import annotations

import datetime
import decimal
import hashlib
import json
import os
import sys

ALEMBIC = "alembic_version"
BATCH = 2000


def _done(data: dict, code: int = 0) -> None:
    print(json.dumps(data), flush=True)
    sys.exit(code)


def _reason(exc: BaseException) -> str:
    """The driver's message, without SQLAlchemy's [SQL: ...] and background link."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip() or type(orig).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("("))[:500]


def _target_engine():
    import sqlalchemy

    url = os.environ.get("MSH_DATABASE_URL", "")  # with its driver named (database.sqlalchemy_url)
    return sqlalchemy.create_engine(url, connect_args={"connect_timeout": 10}, pool_pre_ping=False)


def _source_engine(path: str, read_only: bool = True):
    import sqlalchemy

    if read_only:
        return sqlalchemy.create_engine("sqlite:///file:" + path + "?mode=ro&uri=true")
    return sqlalchemy.create_engine("sqlite:///" + path)


def _tables(engine) -> dict:
    import sqlalchemy

    meta = sqlalchemy.MetaData()
    meta.reflect(bind=engine)
    return meta


def _revision(conn, names) -> str | None:
    import sqlalchemy

    if ALEMBIC not in names:
        return None
    row = conn.execute(sqlalchemy.text(f"SELECT version_num FROM {ALEMBIC}")).first()
    return row[0] if row else None


def target() -> None:
    import sqlalchemy

    try:
        engine = _target_engine()
        with engine.connect() as conn:
            names = sqlalchemy.inspect(conn).get_table_names()
            schema = conn.execute(sqlalchemy.text("SELECT current_schema()")).scalar()
            server = conn.execute(sqlalchemy.text("SHOW server_version")).scalar()
            revision = _revision(conn, names)
    except Exception as exc:  # noqa: BLE001 - any failure to connect is reported, not raised
        _done({"error": "unreachable", "reason": _reason(exc)}, 3)
    _done({"tables": sorted(names), "revision": revision, "schema": schema, "server": server})


def upgrade(path: str) -> None:
    from mlflow.store.db.utils import _upgrade_db

    try:
        _upgrade_db(_source_engine(path, read_only=False))
    except Exception as exc:  # noqa: BLE001
        _done({"error": "upgrade", "reason": _reason(exc)}, 3)
    _done({"upgraded": path})


def schema() -> None:
    from mlflow.store.db.utils import _initialize_tables, _get_latest_schema_revision

    import sqlalchemy

    try:
        engine = _target_engine()
        _initialize_tables(engine)
        with engine.connect() as conn:
            revision = _revision(conn, sqlalchemy.inspect(conn).get_table_names())
    except Exception as exc:  # noqa: BLE001
        _done({"error": "schema", "reason": _reason(exc)}, 3)
    head = _get_latest_schema_revision()
    if revision != head:
        _done({"error": "schema", "reason": f"the new schema is at {revision}, not MLflow's head {head}"}, 3)
    _done({"revision": revision})


def _order(meta) -> list:
    """Tables parents first (a table's rows after the rows they refer to); alembic's own table last."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a cycle is reported by the inserts themselves
        tables = list(meta.sorted_tables)
    return [t for t in tables if t.name != ALEMBIC]


def copy(path: str) -> None:
    import sqlalchemy

    source_engine, target_engine = _source_engine(path), _target_engine()
    source_meta, target_meta = _tables(source_engine), _tables(target_engine)
    copied = {}
    table = None
    try:
        with source_engine.connect() as src, target_engine.begin() as dst:
            for table in reversed(_order(target_meta)):  # rows the migrations seeded (the default workspace):
                dst.execute(table.delete())              # the copy brings the source's own
            for table in _order(target_meta):
                if table.name not in source_meta.tables:
                    copied[table.name] = 0
                    continue
                columns = [c.name for c in table.columns]
                from_table = source_meta.tables[table.name]
                missing = [c for c in columns if c not in from_table.columns]
                if missing:
                    _done({"error": "copy", "table": table.name,
                           "reason": f"the SQLite table has no column {', '.join(missing)}"}, 3)
                result = src.execution_options(stream_results=True).execute(
                    sqlalchemy.select(*[from_table.c[c] for c in columns]))
                count = 0
                while True:
                    rows = result.fetchmany(BATCH)
                    if not rows:
                        break
                    dst.execute(table.insert(), [dict(zip(columns, row)) for row in rows])
                    count += len(rows)
                copied[table.name] = count
            table = None
            sequences = _reset_sequences(dst, target_meta)
    except Exception as exc:  # noqa: BLE001
        _done({"error": "copy", "table": table.name if table is not None else "", "reason": _reason(exc)}, 3)
    _done({"copied": copied, "sequences": sequences})


def _reset_sequences(conn, meta) -> int:
    """Each serial (or identity) column's sequence set past the largest value copied, so that the
    server's next insert does not collide with a copied row."""
    import sqlalchemy

    done = 0
    for table in meta.sorted_tables:
        for column in table.columns:
            seq = conn.execute(sqlalchemy.text("SELECT pg_get_serial_sequence(:t, :c)"),
                               {"t": f'"{table.name}"', "c": column.name}).scalar()
            if not seq:
                continue
            conn.execute(sqlalchemy.text(
                f'SELECT setval(:s, COALESCE((SELECT MAX("{column.name}") FROM "{table.name}"), 0) + 1, false)'),
                {"s": seq})
            done += 1
    return done


def _canon(value):
    """One value in a form both databases give alike (bool before int: a bool is an int in Python)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return ["i", str(value)]
    if isinstance(value, float):
        return ["f", repr(value)]
    if isinstance(value, decimal.Decimal):
        return ["f", repr(float(value))]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return ["t", value.isoformat()]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ["b", bytes(value).hex()]
    if isinstance(value, (dict, list)):
        return ["j", json.dumps(value, sort_keys=True, ensure_ascii=False)]
    return ["s", str(value)]


def _summary(conn, table, columns) -> tuple[int, str]:
    import sqlalchemy

    total, count = 0, 0
    result = conn.execution_options(stream_results=True).execute(sqlalchemy.select(*[table.c[c] for c in columns]))
    while True:
        rows = result.fetchmany(BATCH)
        if not rows:
            break
        for row in rows:
            line = json.dumps([_canon(v) for v in row], ensure_ascii=False, separators=(",", ":"))
            total = (total + int.from_bytes(hashlib.sha256(line.encode()).digest(), "big")) % (1 << 256)
            count += 1
    return count, f"{total:064x}"


def check(path: str) -> None:
    source_engine, target_engine = _source_engine(path), _target_engine()
    source_meta, target_meta = _tables(source_engine), _tables(target_engine)
    rows = []
    try:
        with source_engine.connect() as src, target_engine.connect() as dst:
            for name in sorted(set(source_meta.tables) | set(target_meta.tables)):
                s, t = source_meta.tables.get(name), target_meta.tables.get(name)
                columns = sorted(t.columns.keys()) if t is not None else []
                if s is None or t is None or sorted(s.columns.keys()) != columns:
                    rows.append({"table": name, "source": None if s is None else _summary(src, s, sorted(s.columns.keys())),
                                 "target": None if t is None else _summary(dst, t, columns), "columns": False})
                    continue
                rows.append({"table": name, "source": _summary(src, s, columns), "target": _summary(dst, t, columns),
                             "columns": True})
    except Exception as exc:  # noqa: BLE001
        _done({"error": "check", "reason": _reason(exc)}, 3)
    _done({"tables": rows})


def drop() -> None:
    import sqlalchemy

    try:
        with _target_engine().begin() as conn:
            names = sqlalchemy.inspect(conn).get_table_names()
            if names:
                conn.execute(sqlalchemy.text("DROP TABLE " + ", ".join(f'"{n}"' for n in names) + " CASCADE"))
            types = conn.execute(sqlalchemy.text(
                "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE t.typtype = 'e' AND n.nspname = current_schema()")).scalars().all()
            for name in types:
                conn.execute(sqlalchemy.text(f'DROP TYPE IF EXISTS "{name}" CASCADE'))
    except Exception as exc:  # noqa: BLE001
        _done({"error": "drop", "reason": _reason(exc)}, 3)
    _done({"dropped": sorted(names)})


if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)  # alembic's and MLflow's progress lines are not ours to show
    op, args = sys.argv[1], sys.argv[2:]
    {"target": target, "upgrade": upgrade, "schema": schema, "copy": copy, "check": check,
     "drop": drop}[op](*args)
