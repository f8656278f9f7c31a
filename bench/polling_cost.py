"""Polls per recording and detection delay for processing times from 10 s to 2 h.

    python -m bench.polling_cost

This drives the pipeline's own schedule (``tasks.schedule.PollSchedule``, the code the poll task
calls) over simulated time: a live two-hour run per point is not practical. Detection delay is
the time from the job finishing at Plaud to the poll that sees it. Beside it: fixed 5-second
polling, what Plaud's sample apps do. The estimate of the processing time comes from the audio
duration; rows marked x0.5 / x2 show the job taking half / twice what was estimated.
"""

from __future__ import annotations

import random
import statistics

from tasks.schedule import PollSchedule

PROCESSING_S = (10, 60, 300, 1800, 3600, 7200)
MISESTIMATES = (1.0, 0.5, 2.0)
TRIALS = 500
FIXED_INTERVAL_S = 5.0


def simulate(schedule: PollSchedule, audio_s: float, processing_s: float, rng: random.Random) -> tuple[int, float]:
    t = schedule.first_delay_s(audio_s, rng)
    polls = 1
    while t < processing_s:
        t += schedule.next_delay_s(t, audio_s, rng)
        polls += 1
    return polls, t - processing_s


def fixed(processing_s: float, rng: random.Random) -> tuple[int, float]:
    offset = rng.uniform(0, FIXED_INTERVAL_S)  # where the 5-s clock stands when the job is submitted
    polls = int((processing_s - offset) // FIXED_INTERVAL_S) + 2
    seen_at = offset + (polls - 1) * FIXED_INTERVAL_S
    return polls, seen_at - processing_s


def q(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    schedule = PollSchedule()  # the defaults workers run with (base 5 s, rtf 0.1, 2..300 s)
    rng = random.Random(42)
    print(f"schedule: expected = {schedule.base_s:g} s + {schedule.rtf:g} x audio; probes at 60 %, 85 %, 100 % "
          f"(+3 s) of it; then every 5 % of the time waited, {schedule.min_interval_s:g}..{schedule.max_interval_s:g}"
          f" s; jitter +/-5 % (at most 3 s)")
    print(f"{'processing':>10} {'actual/est':>10} | {'polls':>6} {'delay p50':>9} {'p95':>7} | "
          f"{'5-s polls':>9} {'delay p50':>9} {'p95':>6}")
    for processing_s in PROCESSING_S:
        for factor in MISESTIMATES:
            estimated = processing_s / factor
            audio_s = max((estimated - schedule.base_s) / schedule.rtf, 0.0)
            ours = [simulate(schedule, audio_s, processing_s, rng) for _ in range(TRIALS)]
            theirs = [fixed(processing_s, rng) for _ in range(TRIALS)]
            print(f"{processing_s:>9}s {'x' + format(factor, 'g'):>10} | {statistics.mean(p for p, _ in ours):6.1f} "
                  f"{q([d for _, d in ours], 0.5):8.1f}s {q([d for _, d in ours], 0.95):6.1f}s | "
                  f"{statistics.mean(p for p, _ in theirs):9.1f} {q([d for _, d in theirs], 0.5):8.1f}s "
                  f"{q([d for _, d in theirs], 0.95):5.1f}s")


if __name__ == "__main__":
    main()
