"""When to ask Plaud next: a small pure function, with the randomness passed in.

Every poll that finds "not done yet" spends a slot of the fleet's Transcription API budget that a
submit could have used, so the schedule aims one request at each recording's expected finish
(``tasks.timing``: learned by the fleet) and adds early probes only when the budget has slack:

- slack >= 50 %: probes at 60 % and 85 % of the expected time catch a job that runs faster than
  estimated;
- slack >= 25 %: the 85 % probe only;
- less: none; the budget goes to submits and on-time polls.

A probe is a bet made ahead of time, so it is checked again when its time comes: with less than
``PROBE_MIN_SLACK`` left by then it is skipped for the on-time poll (``probe_still_worth_it``).

The on-time poll lands a 3-s guard after the expected finish. After it, the interval is a
fraction of the time already waited (5 % with slack, up to 20 % without; 2 s to 2 min), so a
job that runs long costs a few more polls, not hundreds, and the detection delay stays a small
share of the processing time.

This decides when the next *request* is made. The poll task re-enqueues itself in hops: as a
countdown when the hop is within the hold horizon, else as data in Redis that a dispatcher turns
back into a countdown when it comes within the horizon (``tasks.sleeping_polls``). A hop that
arrives before the target makes no request.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

EARLY_PROBES = ((0.5, (0.6, 0.85)), (0.25, (0.85,)))  # (least slack, probes as fractions of expected)
OVERDUE_FRACTION = (0.05, 0.2)  # of the time waited: with full slack, with none
JITTER_FRACTION = 0.05
JITTER_MAX_S = 3.0  # a few seconds spread a batch; more would only delay detection
ON_TIME_GUARD_S = JITTER_MAX_S  # the on-time poll lands this long after the expected finish
PROBE_MIN_SLACK = EARLY_PROBES[-1][0]


@dataclass(frozen=True)
class PollSchedule:
    min_interval_s: float = 2.0
    max_interval_s: float = 120.0
    fixed_interval_s: float = 0.0  # > 0: poll on a fixed clock, as most clients do (for comparison)

    def probes(self, slack: float) -> tuple[float, ...]:
        for least_slack, fractions in EARLY_PROBES:
            if slack >= least_slack:
                return fractions + (1.0,)
        return (1.0,)

    def probe_still_worth_it(self, waited_s: float, expected_s: float, slack: float) -> bool:
        """Whether a request due now should be made: always, unless it is an early probe the budget cannot spare."""
        return self.fixed_interval_s > 0 or waited_s >= expected_s or slack >= PROBE_MIN_SLACK

    def next_delay_s(self, waited_s: float, expected_s: float, slack: float = 1.0,
                     rng: random.Random | None = None) -> float:
        """Seconds from now to the next request, ``waited_s`` after submit."""
        if self.fixed_interval_s > 0:
            return self.fixed_interval_s
        for fraction in self.probes(slack):
            if fraction == 1.0:
                # The on-time poll: the guard after the expected finish, jittered later only, so it
                # asks exactly the question the timing model learns from (done by then, or not).
                target = expected_s + ON_TIME_GUARD_S
                if target - waited_s >= self.min_interval_s:
                    return jitter(target - waited_s, rng, later_only=True)
            elif fraction * expected_s - waited_s >= self.min_interval_s:
                return jitter(fraction * expected_s - waited_s, rng)
        fraction = overdue_fraction(slack)
        interval = min(max(fraction * max(waited_s, expected_s), self.min_interval_s), self.max_interval_s)
        return jitter(interval, rng)


def overdue_fraction(slack: float) -> float:
    """5 % of the time waited with half the budget or more to spare, rising to 20 % with none."""
    with_slack, without = OVERDUE_FRACTION
    pressure = 1.0 - min(max(slack, 0.0) / 0.5, 1.0)
    return with_slack + (without - with_slack) * pressure


def jitter(delay_s: float, rng: random.Random | None = None, *, later_only: bool = False) -> float:
    """Spread requests of a batch submitted together: +/-5 %, at most +/-3 s, never below 0.1 s."""
    spread = min(JITTER_FRACTION * delay_s, JITTER_MAX_S)
    return max(delay_s + (rng or random).uniform(0.0 if later_only else -spread, spread), 0.1)
