"""Adapters from a case file's JSON to each area's pure ``make_plan``: facts in, plan out."""
from __future__ import annotations

from mlflow_self_host.plan import Plan


def _bytes(value):
    return None if value is None else value.encode()


def plan_host(settings, facts: dict, args: dict) -> Plan:
    from mlflow_self_host.host.configure import HostFacts, make_plan

    host_facts = HostFacts(
        client_config=_bytes(facts.get("client_config")),
        folders={path: (tuple(stat) if stat else None) for path, stat in facts.get("folders", {}).items()},
        job_file=_bytes(facts.get("job_file")),
        job_file_stat=tuple(facts["job_file_stat"]) if facts.get("job_file_stat") else None,
        missing_users=facts.get("missing_users", []),
        missing_groups=facts.get("missing_groups", []),
    )
    return make_plan(settings, host_facts, args.get("job_content", "").encode(), host=args.get("host", ""))


AREAS = {"host": plan_host}
