"""When to poll next: a small pure function, with the randomness passed in.

First poll near the expected finish time (base + real-time factor × audio duration). After
that, the interval grows with the time already waited (a tenth of it), between a floor and a
cap, so a short job is seen done within seconds and a long one costs a handful of polls, and
the detection delay stays a small fraction of the processing time. Jitter spreads polls so a
batch submitted together does not poll together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

WAITED_FRACTION = 0.1
JITTER_FRACTION = 0.1


@dataclass(frozen=True)
class PollSchedule:
    base_s: float = 5.0
    rtf: float = 0.1
    min_interval_s: float = 2.0
    max_interval_s: float = 300.0

    def expected_s(self, audio_duration_s: float | None) -> float:
        return self.base_s + self.rtf * (audio_duration_s or 0.0)

    def first_delay_s(self, audio_duration_s: float | None, rng: random.Random | None = None) -> float:
        return self._bounded(jitter(self.expected_s(audio_duration_s), rng))

    def next_delay_s(self, waited_s: float, audio_duration_s: float | None,
                     rng: random.Random | None = None) -> float:
        """Delay after a poll that found the job not done, ``waited_s`` after submit."""
        remaining = self.expected_s(audio_duration_s) - waited_s
        if remaining > self.min_interval_s:  # polled early (e.g. a retry): aim at the expected finish
            return self._bounded(jitter(remaining, rng))
        return self._bounded(jitter(WAITED_FRACTION * waited_s, rng))

    def _bounded(self, delay_s: float) -> float:
        return min(max(delay_s, self.min_interval_s), self.max_interval_s)


def jitter(delay_s: float, rng: random.Random | None = None) -> float:
    return delay_s * (1 + (rng or random).uniform(-JITTER_FRACTION, JITTER_FRACTION))
