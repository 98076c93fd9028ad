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
