"""configure-host: the Nomad client host made ready for MLflow (SSH itself is adapters/ssh.py)."""
