"""Request budgets and seeded fault injection.

Both are deterministic on purpose: a benchmark or a chaos run with the same seed sees the same
sequence of faults, so a failure found once can be found again.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ..rates import Rate, SlidingWindow
from .settings import SandboxSettings


class KeyedLimiter:
    """A sliding window per key (client_id); no limit when ``rate`` is None."""

    def __init__(self, rate: Rate | None) -> None:
        self.rate = rate
        self._windows: dict[str, SlidingWindow] = {}

    def acquire(self, key: str, now: float) -> float | None:
        """Count a request; ``None`` when allowed, otherwise seconds until one would be."""
        if self.rate is None:
            return None
        window = self._windows.setdefault(key, SlidingWindow(self.rate))
        return window.acquire(now) or None


@dataclass(frozen=True)
class Fault:
    """What the injector decided for one request."""

    kind: str  # "none", "drop", "5xx", "429", "429_bare"
    latency_s: float = 0.0
    status: int = 200
    retry_after_s: int | None = None


class FaultInjector:
    """Draws one decision per request from a seeded stream, in a fixed order of checks."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self._rng = random.Random(settings.fault_seed)
        self._speed_rng = random.Random(f"speed:{settings.fault_seed}")  # its own stream: faults stay put

    def decide(self) -> Fault:
        s = self.settings
        # Always draw the same number of values so one probability change does not reshuffle the rest.
        draws = [self._rng.random() for _ in range(5)]
        latency_s = s.fault_latency_ms / 1000.0
        if draws[0] < s.fault_drop:
            return Fault("drop", latency_s)
        if draws[1] < s.fault_5xx:
            return Fault("5xx", latency_s, status=(500, 502, 503)[math.floor(draws[4] * 3) % 3])
        if draws[2] < s.fault_429:
            return Fault("429", latency_s, status=429, retry_after_s=1 + math.floor(draws[4] * 3))
        if draws[3] < s.fault_429_bare:
            return Fault("429_bare", latency_s, status=429)
        return Fault("none", latency_s)

    def speed_factor(self) -> float:
        """How much longer (or shorter) than base + rtf x audio the next transcription takes."""
        jitter = self.settings.processing_jitter
        return self._speed_rng.uniform(1.0 - jitter, 1.0 + jitter) if jitter else 1.0

    def task_fails(self) -> bool:
        return self._rng.random() < self.settings.fault_task_failure
