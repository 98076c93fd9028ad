"""A Nomad double that behaves like Nomad over time: the HTTP API and scheduler (server.py), one client
node running the jobs' tasks on the test Docker engine (client.py, docker_driver.py), the job parser and
template renderer on Nomad's own Go libraries (engine.py, engine/: HashiCorp's HCL, go-envparse, Go's
text/template, nomad/api), what the server keeps of a job spec (jobspec.py) and the plan diff (diff.py)."""
from .diff import spec
from .server import ALL_CAPS, READ_CAPS, HTTPError, NomadDouble

__all__ = ["ALL_CAPS", "READ_CAPS", "HTTPError", "NomadDouble", "spec"]
