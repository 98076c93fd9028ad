"""mlflow-self-host: the logic behind tasks.py. Each module is one concern; see README.md."""
