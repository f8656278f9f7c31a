"""The pieces of the Transcription API budget shared by its forms, and its one-process form.

The fleet-wide budget is ``plaud.budget.Budget`` (Redis, waiters pulled by a dispatcher); a
client without Redis (a script, the CLI's own calls) counts its requests with ``MemoryLimiter``,
the same sliding window for one process. Both count submits and polls together, at most
``limit`` in any ``period_s``, and both report a ``Load``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .rates import Rate, SlidingWindow

SUBMIT = "submit"
POLL = "poll"
SAFETY_S = 1.0
DEFAULT_SUBMIT_SHARE = 0.5

@dataclass(frozen=True)
class Load:
    """How much of the window is taken, and who is queuing for the rest."""

    limit: int
    used: int
    submits_waiting: int = 0
    polls_waiting: int = 0
    planned: int = 0

    @property
    def slack(self) -> float:
        """The share of the budget nobody has used, waits for or plans to use within a period: 1.0 idle, 0.0 spent.

        Any period that holds now holds at most the requests of the past period plus those of the
        next, so a request that fits both fits every window it falls in.
        """
        # Waiting requests are planned requests whose time has come: counted once, as planned.
        needed = self.used + max(self.planned, self.submits_waiting + self.polls_waiting)
        return max(1.0 - needed / self.limit, 0.0)


class MemoryLimiter:
    """The same window for one process, first come first served (no queues: one process has none)."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._window = SlidingWindow(rate)
        self._lock = threading.Lock()

    def try_acquire(self, waiter: str | None = None, kind: str = SUBMIT) -> float:
        with self._lock:
            return self._window.acquire(time.monotonic())

    def load(self) -> Load:
        with self._lock:
            return Load(self.rate.limit, self._window.count(time.monotonic()))

    def plan(self, request: str, at_s: float, *, instead_of: tuple[str, ...] = ()) -> None:
        pass  # one process plans nothing ahead: its own requests are all it would count

    def unplan(self, *requests: str) -> None:
        pass
