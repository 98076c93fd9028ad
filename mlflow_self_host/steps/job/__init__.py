"""The Nomad job: its file and variables, the clients it can go to, status, logs, following a
deployment, stop and start. Deploy and rollback are flows/; the Nomad client and the lock adapters/."""
