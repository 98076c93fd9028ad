"""The Nomad job: deploy, status, logs, rollback."""
