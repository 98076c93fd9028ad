"""mlflow-self-host: the logic behind tasks.py. Each module is one concern; see docs/how-it-is-built.md."""
