"""Shared bits of the benchmarks: timing, medians, and writing a section of BENCHMARKS.md.

Every figure is a ratio against a baseline measured in the same run (the machines are noisy);
each script replaces its own section of BENCHMARKS.md, between markers, with the command to redo it.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "BENCHMARKS.md"
sys.path.insert(0, str(ROOT))


def timed(cmd: list[str], runs: int, env=None, cwd=ROOT) -> list[float]:
    """Wall seconds of ``cmd`` over ``runs`` runs (after one warm-up)."""
    subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def median(values) -> float:
    return statistics.median(values)


def machine() -> str:
    return f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, {platform.machine()}"


def write_section(name: str, body: str) -> None:
    """Replace the section ``name`` of BENCHMARKS.md (or append it)."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = f"{begin}\n{body.rstrip()}\n\n_Measured {stamp} on {machine()}._\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Benchmarks\n\nEach section is written by the script it names; every figure is a ratio against a "
        "baseline measured in the same run, medians of several runs.\n\n")
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    print(body)


MIB = 2**20


class ContainerMemory:
    """The RSS of all a container's processes: its memory cgroup's anonymous memory (``total_rss`` on
    cgroup v1, ``anon`` on v2; page cache not counted), read from the cgroup's files on this machine
    (the engine must run here). ``start()`` samples it every 0.1 s in a thread; ``peak`` is the highest
    value seen since ``start()`` or ``reset_peak()``. A container that died (OOM kill) keeps its last
    values."""

    def __init__(self, container):
        import threading

        self.container = container
        self.stat_file, self.key = _memory_stat_file(container)
        self.peak = 0.0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @property
    def source(self) -> str:
        """Which counter: ``total_rss`` of memory.stat (cgroup v1) or ``anon`` (cgroup v2)."""
        return f"memory.stat {self.key}, cgroup {'v1' if self.key == 'total_rss' else 'v2'}"

    def now(self) -> float:
        """MiB now (0 once the container is gone)."""
        try:
            with open(self.stat_file) as fh:
                for line in fh:
                    key, value = line.split()
                    if key == self.key:
                        return int(value) / MIB
        except OSError:
            pass
        return 0.0

    def start(self) -> "ContainerMemory":
        self._thread.start()
        return self

    def reset_peak(self) -> None:
        self.peak = self.now()

    def stop(self) -> float:
        self._halt.set()
        self._thread.join(5)
        return self.peak

    def _sample(self) -> None:
        while not self._halt.wait(0.1):
            self.peak = max(self.peak, self.now())


def _memory_stat_file(container) -> tuple[str, str]:
    container.reload()
    pid = container.attrs["State"]["Pid"]
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines() if pid else []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            found = (f"/sys/fs/cgroup/memory{path}/memory.stat", "total_rss")
            break
    else:
        v2 = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
        found = (f"/sys/fs/cgroup{v2[0]}/memory.stat", "anon") if v2 else ("", "")
    if not found[0] or not os.path.exists(found[0]):
        raise SystemExit(f"cannot read the memory cgroup of container {container.name} on this machine "
                         f"(pid {pid}): run the benchmark where the engine runs")
    return found


def process_rss(container) -> list[tuple[float, str]]:
    """(RSS in MiB, command line) of each of the container's processes, from /proc (each process's own
    resident pages: shared ones count in each)."""
    found = []
    for row in container.top(ps_args="-eo pid")["Processes"]:
        pid = row[0]
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        found.append((rss / 1024, cmdline.strip()))
    return found


# MLflow's admin of the benches that deploy (auth: basic, the cluster's default since issue 29): deploy gets the
# password as MSH_MLFLOW_ADMIN_PASSWORD, the benches' clients log in with it.
ADMIN = ("admin", "bench-admin-password")
# The entrypoint's environment for MLflow's auth app as the cluster runs it (auth basic, auth_cache_seconds 30).
AUTH_ON = {"MLFLOW_AUTH": "basic", "MLFLOW_AUTH_CACHE_SECONDS": "30", "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
           "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1], "MLFLOW_FLASK_SERVER_SECRET_KEY": "bench-secret-key"}


def log_in_as_admin() -> dict:
    """MLflow's client credentials (MLFLOW_TRACKING_*) set in this process; the variables for `inv` returned."""
    os.environ.update({"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]})
    return {"MSH_MLFLOW_ADMIN_PASSWORD": ADMIN[1]}
