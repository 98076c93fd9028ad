"""Waiting for something to become true, with a deadline: the one loop every wait uses.

``Deadline`` is a point in time several steps share (follow a deployment, then its revert);
``until`` asks ``check`` again every ``interval`` seconds until it returns something truthy, and at
the deadline either returns the last answer (``TimedOut.last``) through ``on_timeout`` or raises.
"""
from __future__ import annotations

import time
from typing import Any, Callable


class Deadline:
    """``seconds`` from now (monotonic clock)."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.at = time.monotonic() + self.seconds

    def left(self) -> float:
        return max(self.at - time.monotonic(), 0.0)

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at


class TimedOut(Exception):
    """The deadline passed; ``last`` is what the check said last (None if it never answered)."""

    def __init__(self, last: Any = None):
        super().__init__("timed out")
        self.last = last


def until(check: Callable[[], Any], deadline: Deadline | float, interval: float = 0.5,
          on_timeout: Callable[[Any], Any] | None = None) -> Any:
    """Call ``check()`` until it returns something truthy, and return that.

    ``deadline``: a ``Deadline`` or seconds from now. The check runs at least once, also when the
    deadline has already passed. At the deadline, ``on_timeout(last)`` is returned (it may raise the
    step's own UserError), else ``TimedOut(last)`` is raised. ``interval`` never sleeps past the deadline.
    """
    if not isinstance(deadline, Deadline):
        deadline = Deadline(deadline)
    while True:
        last = check()
        if last:
            return last
        if deadline.passed:
            if on_timeout is not None:
                return on_timeout(last)
            raise TimedOut(last)
        time.sleep(min(interval, max(deadline.left(), 0.01)))
