"""The job admission controllers of the Nomad double: what Nomad adds to a job before a plan or register
(nomad/job_endpoint.go ``admissionControllers``, called by ``Register``, ``Plan`` and ``Validate``).

Only the implied constraints of service discovery (nomad/job_endpoint_hooks.go ``jobImpliedConstraints``,
the same at v1.8.0, v1.9.0 and v1.10.5), the ones our jobs get:
- a group with a Consul service (``provider = "consul"`` or none: structs.go ``Service.IsConsul``), in the
  group or in a task, gets ``${attr.consul.version} semver >= 1.8.0`` on the group or on that task,
  unless a constraint on the same attribute is there (``constraintMatcherLeft``): a node without a Consul
  agent (no ``consul.*`` attributes from client/fingerprint/consul.go) is filtered, and the
  placement failure names that constraint (``Constraint.String()``);
- a group with a Nomad service gets ``${attr.nomad.service_discovery} = true`` on the group, and with
  checks also ``${attr.nomad.version} semver >= 1.4.0`` (``constraintMatcherFull``).
The constraints are stored with the job, so they are in its versions and in the plan's diff.
"""
from __future__ import annotations

CONSUL_SERVICE_DISCOVERY = {"LTarget": "${attr.consul.version}", "RTarget": ">= 1.8.0", "Operand": "semver"}
NATIVE_SERVICE_DISCOVERY = {"LTarget": "${attr.nomad.service_discovery}", "RTarget": "true", "Operand": "="}
NATIVE_SERVICE_DISCOVERY_CHECKS = {"LTarget": "${attr.nomad.version}", "RTarget": ">= 1.4.0", "Operand": "semver"}


def _is_consul(service: dict) -> bool:
    return (service.get("Provider") or "consul") == "consul"


def _mutate(holder: dict, constraint: dict, left_only: bool) -> None:
    """mutateConstraint: add ``constraint`` unless one matches (the same LTarget, or an equal one)."""
    present = holder.get("Constraints") or []
    if left_only:
        found = any(c.get("LTarget") == constraint["LTarget"] for c in present)
    else:
        found = any((c.get("LTarget"), c.get("RTarget"), c.get("Operand")) ==
                    (constraint["LTarget"], constraint["RTarget"], constraint["Operand"]) for c in present)
    if not found:
        holder["Constraints"] = present + [dict(constraint)]


def implied_constraints(job: dict) -> dict:
    """The job with the constraints its services imply, in place (and returned)."""
    for group in job.get("TaskGroups") or []:
        tasks = group.get("Tasks") or []
        every = list(group.get("Services") or []) + [s for task in tasks for s in task.get("Services") or []]
        native = [s for s in every if s.get("Provider") == "nomad"]
        if native:
            _mutate(group, NATIVE_SERVICE_DISCOVERY, left_only=False)
        if any(s.get("Checks") for s in native):
            _mutate(group, NATIVE_SERVICE_DISCOVERY_CHECKS, left_only=False)
        if any(_is_consul(s) for s in every):
            if any(_is_consul(s) for s in group.get("Services") or []):
                _mutate(group, CONSUL_SERVICE_DISCOVERY, left_only=True)
            for task in tasks:
                if any(_is_consul(s) for s in task.get("Services") or []):
                    _mutate(task, CONSUL_SERVICE_DISCOVERY, left_only=True)
    return job
