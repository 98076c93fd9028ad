"""What the native environment's build shows while pip works: the packages counted as pip collects and
installs them, as a bar on a terminal and as plain lines without one (a log file, a pipe).

- ``package_count``: how many packages the lock installs on this Python (its environment markers evaluated).
- ``PipProgress``: pure; reads pip's own lines ("Collecting x==1" or "Processing x.whl", "Installing collected
  packages: a, b") into the phase and the counts. While pip installs it prints nothing per package: the
  installed count is the ``*.dist-info/RECORD`` files in the environment (pip writes a package's RECORD last).
- ``Display``: a rich bar on a terminal; else one line when a phase starts, then one when the count moved
  (at most every ``PLAIN_EVERY`` seconds) and at least every ``PLAIN_SILENCE`` seconds: never a spinner's
  residue in a log, never silent for long.
- ``run_watched``: runs a command (venv, then pip), feeding the two.
"""
from __future__ import annotations

import collections
import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ...core import console

PLAIN_EVERY = 5.0  # seconds between two plain lines when only the count moved
PLAIN_SILENCE = 10.0  # a plain line at least this often, moved or not
TICK = 0.25  # seconds between two looks at pip's output and the environment


def package_count(lock_text: str) -> int:
    """The pinned packages of a lock (``name==version`` lines) that apply to this Python."""
    from packaging.markers import InvalidMarker, Marker

    from ..image import deps

    count = 0
    for key in deps.pins(lock_text):
        _, _, marker = key.partition(" ; ")
        try:
            count += 1 if not marker or Marker(marker).evaluate() else 0
        except InvalidMarker:
            count += 1
    return count


@dataclass
class PipProgress:
    """Where pip is: ``phase`` ("creating the virtual environment", "downloading", "installing"), with ``done``
    of ``total`` packages in it."""
    total: int
    phase: str = "creating the virtual environment"
    collected: int = 0
    installed: int = 0

    def read(self, line: str) -> None:
        """One line of pip's output."""
        text = line.strip()
        if text.startswith(("Collecting ", "Processing ")):  # from an index; a local file (find-links)
            self.phase = "downloading"
            self.collected += 1
        elif text.startswith("Installing collected packages:"):
            self.phase = "installing"
            names = [name for name in text.split(":", 1)[1].split(",") if name.strip()]
            self.total = len(names) or self.total  # what pip installs, markers and all
        elif text.startswith("Successfully installed"):
            self.installed = self.total

    def counted(self, installed: int) -> None:
        """``installed``: the packages whose files are all in place now (never counts back)."""
        if self.phase == "installing":
            self.installed = min(self.total, max(self.installed, installed))

    @property
    def done(self) -> int | None:
        return {"downloading": self.collected, "installing": self.installed}.get(self.phase)


class Display:
    """The progress as a bar (terminal) or as plain lines (anything else); nothing with MSH_QUIET."""

    def __init__(self, clock=time.monotonic, terminal: bool | None = None):
        self.clock = clock
        self.started = clock()
        self.terminal = console.err.is_terminal if terminal is None else terminal
        self.quiet = console._quiet()
        self.bar = None
        self.task = None
        self.shown: tuple[str, int | None] | None = None  # the last plain line's (phase, done)
        self.shown_at = 0.0

    def __enter__(self) -> Display:
        if self.terminal and not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=console.err, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("", total=None)
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def update(self, progress: PipProgress) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            counted = progress.done is not None
            self.bar.update(self.task, description=progress.phase, total=progress.total if counted else None,
                            completed=progress.done or 0)
            return
        now = self.clock()
        state = (progress.phase, progress.done)
        if self.shown is None or state[0] != self.shown[0]:
            line = progress.phase if progress.done is None else f"{progress.phase} {progress.total} packages"
        elif (state != self.shown and now - self.shown_at >= PLAIN_EVERY) or now - self.shown_at >= PLAIN_SILENCE:
            count = "" if progress.done is None else f": {progress.done}/{progress.total}"
            line = f"{progress.phase}{count} ({self.elapsed():.0f} s)"
        else:
            return
        console.info(f"  {line}")
        self.shown, self.shown_at = state, now


def installed_count(venv: Path) -> int:
    """The packages installed in ``venv`` (their RECORD written)."""
    return len(list(venv.glob("lib/python*/site-packages/*.dist-info/RECORD")))


def run_watched(command: list[str], venv: Path, progress: PipProgress, display: Display) -> tuple[int, list[str]]:
    """Run ``command`` (venv, pip: its output read line by line, unbuffered), showing the progress; returns (exit
    code, its last lines)."""
    before = installed_count(venv)  # pip itself (and setuptools on older Pythons)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace", env=env)
    lines: queue.Queue = queue.Queue()
    tail: collections.deque[str] = collections.deque(maxlen=40)

    def read() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ended = False
        while not ended:
            try:
                line = lines.get(timeout=TICK)
                while line is not None:
                    tail.append(line.rstrip())
                    progress.read(line)
                    display.update(progress)  # each phase has its line, however short
                    line = lines.get_nowait()
                ended = True
            except queue.Empty:
                pass
            progress.counted(installed_count(venv) - before)
            display.update(progress)
        return proc.wait(), [line for line in tail if line.strip()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
