"""MLflow's tracking store: SQLite (one file on the Nomad client, the default) or PostgreSQL.

Setting ``store`` (invoke.yaml's ``store:`` section) says which; with ``postgres`` the database is the
secret ``database_url`` (``MSH_DATABASE_URL``, environment only), a SQLAlchemy URL such as
``postgresql://mlflow:PASSWORD@db.lan:5432/mlflow``. Its password is never shown: ``shown_url``
gives ``postgresql://mlflow:****@db.lan:5432/mlflow``, and ``hide`` takes it out of any text.

- ``core/database.py`` (below every layer): the URL's checks and masks (no I/O);
- ``migrate_store.py``: `inv migrate-store --to postgres` (facts, a pure plan, ``runner.run`` in three steps);
- ``health.py``: doctor's store rows;
- ``worker.py``: the program that talks to both databases, run by the MLflow environment's python.
"""
