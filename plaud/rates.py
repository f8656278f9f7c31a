"""Request budgets written as ``'60/m'``: shared by the client's limiter and the sandbox."""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PERIOD_S = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


@dataclass(frozen=True)
class Rate:
    """A request budget: ``limit`` requests per ``period_s`` seconds."""

    limit: int
    period_s: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        match = _RATE_RE.match(text)
        if not match or int(match.group(1)) < 1:
            raise ValueError(f"{text!r} is not a rate like '10/m', '60/min', '5/s' or '100/h'")
        return cls(int(match.group(1)), float(_PERIOD_S[match.group(2)]))

    def __str__(self) -> str:
        return f"{self.limit}/{int(self.period_s)}s"


class SlidingWindow:
    """At most ``rate.limit`` hits in any window of ``rate.period_s`` seconds; not thread-safe."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._hits: collections.deque[float] = collections.deque()

    def count(self, now: float) -> int:
        """Hits inside the window ending at ``now``."""
        while self._hits and self._hits[0] <= now - self.rate.period_s:
            self._hits.popleft()
        return len(self._hits)

    def acquire(self, now: float) -> float:
        """Count a hit at ``now``: 0.0 when allowed, else seconds until one would be."""
        if self.count(now) < self.rate.limit:
            self._hits.append(now)
            return 0.0
        return max(self._hits[0] + self.rate.period_s - now, 0.001)
