"""How long Plaud takes, learned by the whole fleet: expected = base + rtf × audio seconds.

The two numbers live in one Redis hash, so every worker schedules from what all of them have
seen, and a restarted fleet starts where it left off. The configured values are only the prior.

Learning uses the one fact each recording reveals for sure, at its first poll on or after its
expected time: done (a hit) or not (a miss). An early probe that finds it done is a hit too.
That bit is exactly what quantile regression needs: a stochastic-gradient step on the pinball
loss shrinks the estimate a little on a hit and grows it more on a miss, and settles where
``TARGET_HIT_RATE`` of recordings are done when first polled on time. Each parameter moves by
its share of the prediction, so short recordings mostly teach the base and long ones the rate.
Steps are in log space (a factor, never a sign change) and get smaller as samples accumulate,
down to a floor that still follows Plaud getting slower or faster.

A hit seen late (the poll waited for budget or for a worker) says little: it is not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

KEY = "plaud:timing"
TARGET_HIT_RATE = 0.9
STEP_START = 0.3
STEP_FLOOR = 0.05
STEP_HALF_LIFE_SAMPLES = 25  # the step is STEP_START / sqrt(1 + samples / this), at least STEP_FLOOR
BASE_BOUNDS_S = (0.5, 3600.0)
RTF_BOUNDS = (0.001, 10.0)


@dataclass(frozen=True)
class TimingEstimate:
    base_s: float
    rtf: float
    samples: int = 0
    hits: int = 0
    misses: int = 0

    def expected_s(self, audio_duration_s: float | None) -> float:
        return self.base_s + self.rtf * (audio_duration_s or 0.0)


class TimingModel:
    def __init__(self, redis: Any, *, prior_base_s: float, prior_rtf: float, key: str = KEY) -> None:
        self.redis = redis
        self.key = key
        self.prior = TimingEstimate(_clamp(prior_base_s, BASE_BOUNDS_S), _clamp(prior_rtf, RTF_BOUNDS))

    def current(self) -> TimingEstimate:
        log_base, log_rtf, samples, hits, misses = self.redis.hmget(
            self.key, "log_base", "log_rtf", "samples", "hits", "misses")
        if log_base is None or log_rtf is None:
            return self.prior
        return TimingEstimate(_clamp(math.exp(float(log_base)), BASE_BOUNDS_S), _clamp(math.exp(float(log_rtf)),
                                                                                       RTF_BOUNDS),
                              int(samples or 0), int(hits or 0), int(misses or 0))

    def expected_s(self, audio_duration_s: float | None) -> float:
        return self.current().expected_s(audio_duration_s)

    def learn(self, audio_duration_s: float | None, hit: bool) -> TimingEstimate:
        """One recording's verdict; returns the estimate it was applied to."""
        now = self.current()
        audio_s = audio_duration_s or 0.0
        expected = now.expected_s(audio_s)
        step = max(STEP_START / math.sqrt(1 + now.samples / STEP_HALF_LIFE_SAMPLES), STEP_FLOOR)
        direction = -(1 - TARGET_HIT_RATE) if hit else TARGET_HIT_RATE
        new_base = _clamp(now.base_s * math.exp(step * direction * now.base_s / expected), BASE_BOUNDS_S)
        new_rtf = _clamp(now.rtf * math.exp(step * direction * now.rtf * audio_s / expected), RTF_BOUNDS)
        pipe = self.redis.pipeline()
        # Increments, not writes: two workers learning at once both count.
        pipe.hsetnx(self.key, "log_base", math.log(now.base_s))
        pipe.hsetnx(self.key, "log_rtf", math.log(now.rtf))
        pipe.hincrbyfloat(self.key, "log_base", math.log(new_base) - math.log(now.base_s))
        pipe.hincrbyfloat(self.key, "log_rtf", math.log(new_rtf) - math.log(now.rtf))
        pipe.hincrby(self.key, "samples", 1)
        pipe.hincrby(self.key, "hits" if hit else "misses", 1)
        pipe.execute()
        return now

    def forget(self) -> None:
        """Back to the prior (after Plaud changed, or between benchmark runs)."""
        self.redis.delete(self.key)


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])
