"""When to ask Plaud next: a small pure function, with the randomness passed in.

The expected processing time comes from the audio duration (base + real-time factor × audio).
Before it, probes at 60 % and 85 % of it catch a job that runs faster than estimated, and one
lands just after it.  After it, the interval is 5 % of the time already waited (2 s
to 2 min), so the detection delay stays a small fraction of the processing time, and a job that
runs long costs a few more polls, not hundreds.

This decides when the next *request* is made. The poll task re-enqueues itself in hops no
longer than the countdown cap (well below the broker's visibility timeout); a hop that arrives
before the target makes no request.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PROBES = (0.6, 0.85, 1.0)
OVERDUE_FRACTION = 0.05
JITTER_FRACTION = 0.05
JITTER_MAX_S = 3.0  # a few seconds spread a batch; more would only delay detection


@dataclass(frozen=True)
class PollSchedule:
    base_s: float = 5.0
    rtf: float = 0.1
    min_interval_s: float = 2.0
    max_interval_s: float = 120.0

    def expected_s(self, audio_duration_s: float | None) -> float:
        return self.base_s + self.rtf * (audio_duration_s or 0.0)

    def first_delay_s(self, audio_duration_s: float | None, rng: random.Random | None = None) -> float:
        return self.next_delay_s(0.0, audio_duration_s, rng)

    def next_delay_s(self, waited_s: float, audio_duration_s: float | None,
                     rng: random.Random | None = None) -> float:
        """Seconds from now to the next request, ``waited_s`` after submit."""
        expected = self.expected_s(audio_duration_s)
        for fraction in PROBES:
            # The last probe lands just after the expected finish, never before it by jitter.
            target = fraction * expected + (JITTER_MAX_S if fraction == 1.0 else 0.0)
            if target - waited_s >= self.min_interval_s:
                return jitter(target - waited_s, rng)
        interval = min(max(OVERDUE_FRACTION * max(waited_s, expected), self.min_interval_s), self.max_interval_s)
        return jitter(interval, rng)


def jitter(delay_s: float, rng: random.Random | None = None) -> float:
    """Spread requests of a batch submitted together: +/-5 %, at most +/-3 s, never below 0.1 s."""
    spread = min(JITTER_FRACTION * delay_s, JITTER_MAX_S)
    return max(delay_s + (rng or random).uniform(-spread, spread), 0.1)
