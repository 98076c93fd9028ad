"""`inv status`: the job, the image running vs version.txt, allocations with health, latest deployment."""
from __future__ import annotations

import time

from . import jobfile
from ...adapters import nomad_api


def _when(ns) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9)) if ns else ""


def collect(settings, version) -> dict:
    n = nomad_api.client(settings)
    job = jobfile.current(settings, n)
    want = str(version)
    data = {"job": None, "namespace": settings.nomad_namespace or "default", "address": nomad_api.address(settings),
            "version_txt": want, "allocations": [], "deployment": None}
    if job is None:
        return data
    image = jobfile.image_of(job)
    running = jobfile.version_of(image)
    data["job"] = {"id": job.get("ID"), "version": job.get("Version"), "status": job.get("Status"),
                   "stable": job.get("Stable"), "stopped": bool(job.get("Stop")), "image": image,
                   "image_version": running, "up_to_date": running == want,
                   "submitted": _when(job.get("SubmitTime"))}
    allocs = nomad_api.call(settings, "listing allocations", n.job.get_allocations, settings.job_name) or []
    for alloc in sorted(allocs, key=lambda a: a.get("CreateIndex", 0), reverse=True):
        healthy = (alloc.get("DeploymentStatus") or {}).get("Healthy")
        data["allocations"].append({
            "id": alloc.get("ID"), "job_version": alloc.get("JobVersion"), "client_status": alloc.get("ClientStatus"),
            "desired_status": alloc.get("DesiredStatus"), "node": alloc.get("NodeName") or alloc.get("NodeID"),
            "healthy": healthy, "created": _when(alloc.get("CreateTime")), "modified": _when(alloc.get("ModifyTime"))})
    dep = nomad_api.call(settings, "reading the latest deployment", n.job.get_deployment, settings.job_name)
    if dep:
        groups = dep.get("TaskGroups") or {}
        data["deployment"] = {
            "id": dep.get("ID"), "job_version": dep.get("JobVersion"), "status": dep.get("Status"),
            "description": dep.get("StatusDescription"),
            "healthy": sum(g.get("HealthyAllocs", 0) for g in groups.values()),
            "desired": sum(g.get("DesiredTotal", 0) for g in groups.values())}
    return data


def status(settings, version, as_json: bool = False) -> dict:
    from ...core import console

    data = collect(settings, version)
    if as_json:
        console.json(data)
        return data
    job = data["job"]
    if job is None:
        console.result(f"job {settings.job_name} is not registered in namespace {data['namespace']} "
                       f"at {data['address']} (deploy it with `inv deploy`)")
        return data
    image_note = "= version.txt" if job["up_to_date"] else f"version.txt is v{data['version_txt']}"
    console.table(f"job {job['id']} ({data['namespace']}, {data['address']})", ["field", "value"], [
        ("job version", f"{job['version']}" + (" (stable)" if job["stable"] else "")),
        ("status", job["status"] + (" (stopped)" if job["stopped"] else "")),
        ("image", f"{job['image']}  ({image_note})"),
        ("submitted", job["submitted"]),
    ])
    console.table("allocations", ["id", "job version", "status", "desired", "health", "node", "created"], [
        (a["id"][:8], a["job_version"], a["client_status"], a["desired_status"],
         "healthy" if a["healthy"] else "unhealthy" if a["healthy"] is False else "-", a["node"], a["created"])
        for a in data["allocations"]])
    dep = data["deployment"]
    if dep:
        console.table("latest deployment", ["id", "job version", "status", "healthy", "description"], [
            (dep["id"][:8], dep["job_version"], dep["status"], f"{dep['healthy']}/{dep['desired']}",
             dep["description"])])
    return data
