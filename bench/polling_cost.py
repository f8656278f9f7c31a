"""Polls per recording and detection delay for processing times from 10 s to 2 h.

    python -m bench.polling_cost

This drives the pipeline's own schedule (``tasks.schedule.PollSchedule``, the code the poll task
calls) over simulated time: a live two-hour run per point is not practical. Detection delay is
the time from the job finishing at Plaud to the poll that sees it, with the fleet's budget to
spare and with it tight. Beside it: fixed 5-second polling, what Plaud's sample apps do. Rows
marked x0.5 / x2 show the job taking half / twice the expected time (live, the learned model
and re-aiming shrink that error; here it stays).
"""

from __future__ import annotations

import random
import statistics

from tasks.schedule import PollSchedule

PROCESSING_S = (10, 60, 300, 1800, 3600, 7200)
MISESTIMATES = (1.0, 0.5, 2.0)
TRIALS = 500
FIXED_INTERVAL_S = 5.0


def simulate(schedule: PollSchedule, expected_s: float, processing_s: float, slack: float,
             rng: random.Random) -> tuple[int, float]:
    t = schedule.next_delay_s(0.0, expected_s, slack, rng)
    polls = 1
    while t < processing_s:
        t += schedule.next_delay_s(t, expected_s, slack, rng)
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
    schedule = PollSchedule()  # the defaults workers run with (2..120 s between requests)
    rng = random.Random(42)
    print("schedule: probes at 60 % and 85 % of the expected time only with budget to spare, one poll just "
          "after it (+3 s), then every 5 % (spare budget) to 20 % (none) of the time waited, "
          f"{schedule.min_interval_s:g}..{schedule.max_interval_s:g} s; jitter +/-5 % (at most 3 s)")
    print(f"{'':>21} | {'budget to spare':^24} | {'budget tight':^24} | {'fixed 5 s':^24}")
    print(f"{'processing':>10} {'actual/est':>10} | " + " | ".join([f"{'polls':>6} {'delay p50':>9} {'p95':>7}"] * 3))
    for processing_s in PROCESSING_S:
        for factor in MISESTIMATES:
            expected_s = processing_s / factor
            cells = []
            for slack in (1.0, 0.0):
                runs = [simulate(schedule, expected_s, processing_s, slack, rng) for _ in range(TRIALS)]
                cells.append(runs)
            cells.append([fixed(processing_s, rng) for _ in range(TRIALS)])
            print(f"{processing_s:>9}s {'x' + format(factor, 'g'):>10} | " + " | ".join(
                f"{statistics.mean(p for p, _ in runs):6.1f} {q([d for _, d in runs], 0.5):8.1f}s "
                f"{q([d for _, d in runs], 0.95):6.1f}s" for runs in cells))


if __name__ == "__main__":
    main()
