"""A Nomad double that behaves like Nomad over time: the HTTP API and scheduler (server.py), one client
node running the jobs' tasks on the test Docker engine (client.py, docker_driver.py), the HCL2 job
parser (hcl_job.py) and the plan diff (diff.py)."""
from .diff import spec
from .server import ALL_CAPS, READ_CAPS, HTTPError, NomadDouble

__all__ = ["ALL_CAPS", "READ_CAPS", "HTTPError", "NomadDouble", "spec"]
