"""No-op deploy: a second `inv deploy` right after a successful one, vs the first.

Real engine, registry and SSH server (tests/services), the Nomad double (tests/doubles/nomad/) whose
client runs the job's task on the engine, `inv deploy` run as users run it. Each round is a real first
deploy: a fresh Nomad client folder (client.hcl without the MLflow volumes; the restart command restarts
the double's agent, which then reads them), a fresh double, a fresh registry, and an engine that holds
nothing but the base image: after each round the image is removed with its layers, and so is the venv
build stage's (untagged) image, whose layers would otherwise let the next build skip the `pip install`;
each round checks that the engine's images (`docker images -a`) are the ones it had before the first.
So the first deploy's build is a build without cache (the packages are downloaded again: pip's cache is
off in the image). The first deploy ends when the double has pulled the image, run MLflow and seen its check
pass for min_healthy_time (job timings shortened as in the tests: MLFLOW_TIMINGS of
tests/services/nomad_cluster.py, so the wait is Nomad's minimum, not the defaults' 10 s). Target: the
second under 10% of the first, and it builds, pushes, restarts and registers nothing (counted).
Run: python3 bench/noop_deploy.py [--rounds N]   (ignores DOCKER_HOST: it needs an engine of its own)
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import ROOT, median, write_section
from services import engine, nomad_user, registry, stand_in_base

HOST_KEYS = ("host", "ssh_port", "ssh_user", "ssh_key", "known_hosts", "nomad_client_config", "backend_path",
             "artifacts_path", "job_dir", "folder_owner", "folder_group", "nomad_restart_command", "nomad_addr",
             "nomad_health_timeout")


def inv_deploy(env) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "invoke", "deploy"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=900)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"inv deploy failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return elapsed, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from tests.services import docker_engine, ssh_server

    firsts, seconds, counts = [], [], []
    os.environ.pop("DOCKER_HOST", None)
    with nomad_user(), engine() as eng, tempfile.TemporaryDirectory(prefix="msh-bench-deploy-") as tmp:
        client = eng.client()
        base = stand_in_base(client)
        bare = all_images(client)  # the base only, on a private engine: what each round starts from
        network = f"mshb{os.getpid() % 1_000_000}"  # the bridge the double's tasks join
        docker_engine.bridge_network(eng, network)
        sshd = ssh_server.start(Path(tmp) / "sshd")
        try:
            for n in range(args.rounds):
                left = all_images(client) - bare
                if left:
                    raise SystemExit(f"round {n + 1} would not start cold: the engine still has {sorted(left)}")
                with registry() as reg:
                    one_round(n, eng, client, network, base, sshd, reg, Path(tmp), firsts, seconds, counts)
        finally:
            ssh_server.stop(sshd)
            docker_engine.remove_network(eng, network)
    report(args, firsts, seconds, counts)


def one_round(n, eng, client, network, base, sshd, reg, tmp, firsts, seconds, counts) -> None:
    from tests.doubles.nomad import NomadDouble
    from tests.host.conftest import make_nomad_host
    from tests.services.nomad_cluster import MLFLOW_TIMINGS

    root = tmp / f"host{n}"
    double = NomadDouble(engine=client, network=network, client_config=root / "nomad.d" / "client.hcl")
    name = f"msh-bench-deploy-{uuid.uuid4().hex[:6]}"
    ref = f"{reg.address}/{name}:v{(ROOT / 'version.txt').read_text().strip()}"
    try:
        host = make_nomad_host(root, sshd, double.address)
        restart_double_agent(host, double.address)
        double.client.reload()  # the agent was running with this client.hcl
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MSH_", "NOMAD_", "PIHOLE_"))}
        env.update({f"MSH_{k.upper()}": str(host.settings[k]) for k in HOST_KEYS})
        env.update({f"MSH_{k.upper()}": str(v) for k, v in MLFLOW_TIMINGS.items()})
        env.update(DOCKER_HOST=eng.base_url, MSH_REGISTRY=reg.address, MSH_IMAGE=name, MSH_BASE_IMAGE=base,
                   MSH_DEPLOY_POLL="0.05", MSH_DEPLOY_CHECK="false")
        first, _ = inv_deploy(env)
        (alloc,) = double.running_allocs()  # MLflow runs: the first deploy really ended healthy
        if double.container_of(alloc["ID"]).attrs["Config"]["Image"] != ref:
            raise SystemExit(f"the first deploy left {alloc['ID'][:8]} running, not {ref}")
        image_id, restarts_before = client.images.get(ref).id, host.restarts()
        registered_before, digest_before = len(double.registrations()), reg.digest(name, ref.rsplit(":", 1)[1])
        second, result = inv_deploy(env)
        counts.append({
            "builds": int(client.images.get(ref).id != image_id) + result.stderr.count("building "),
            "pushes": int(reg.digest(name, ref.rsplit(":", 1)[1]) != digest_before) + result.stderr.count("pushed "),
            "restarts": host.restarts() - restarts_before,
            "registers": len(double.registrations()) - registered_before,
        })
        firsts.append(first)
        seconds.append(second)
    finally:
        double.stop()  # its containers go with it
    client.images.remove(ref)  # with its layers
    client.images.prune(filters={"dangling": True})  # the venv stage's image and its layers: the next build is cold


def all_images(client) -> set[str]:
    """Every image the engine has, intermediate and untagged ones too (`docker images -a`)."""
    return {image.id for image in client.images.list(all=True)}


def restart_double_agent(host, address: str) -> None:
    """The host's `systemctl restart nomad`: counted, restarts the double's agent (which reads client.hcl
    again) and returns once the old agent is gone."""
    script = Path(host.settings.nomad_restart_command)
    script.write_text(f"#!/bin/sh\necho \"$(id -un)\" >> {host.restarts_file}\n"
                      f"curl -fsS -o /dev/null -X POST -d '{{\"seconds\": 1}}' {address}/_double/agent/restart\n"
                      f"while curl -fsS -o /dev/null --max-time 1 {address}/v1/agent/health; do sleep 0.05; done\n")


def report(args, firsts, seconds, counts) -> None:
    from tests.services.nomad_cluster import MLFLOW_TIMINGS

    f, s = median(firsts), median(seconds)
    total = {k: sum(c[k] for c in counts) for k in counts[0]}
    met = s / f < 0.10 and not any(total.values())
    body = f"""## No-op deploy

Command: `python3 bench/noop_deploy.py --rounds {args.rounds}` (real engine, registry and sshd; the Nomad double
runs MLflow on the engine, job timings shortened: check every {MLFLOW_TIMINGS['check_interval']}, min_healthy_time \
{MLFLOW_TIMINGS['min_healthy_time']}; service check off in both). Each round starts from an engine holding only the
base image (checked: no layer of the image or of its venv build stage is left from the round before), so the
first deploy's build downloads and installs every locked package again.

| `inv deploy` | median | ratio to the first |
| --- | --- | --- |
| first (configure host, build without cache on the base, push to an empty registry, register, MLflow started and healthy) | {f:.1f} s | 1.00x |
| second, right after (nothing new) | {s:.2f} s | {s / f:.3f}x ({'met' if met else 'MISSED'}: target < 0.10x, nothing done) |

What the second deploys did, over {args.rounds} rounds: {total['builds']} builds, {total['pushes']} pushes,
{total['restarts']} Nomad restarts, {total['registers']} job registrations.
"""
    write_section("noop_deploy", body)


if __name__ == "__main__":
    main()
