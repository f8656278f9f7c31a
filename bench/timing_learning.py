"""How fast, and how steadily, the fleet's timing model learns: batches against a wrong prior.

    python -m bench.timing_learning

Drives the real ``tasks.timing.TimingModel`` (on fakeredis) over simulated time: batches of
300 recordings of mixed length, submitted at 5 a second, each scheduled on the estimate of the
moment it is submitted and polled once at its expected time (+3 s); a recording not done then
is a miss and is polled again until done. Processing takes 2 s + 0.03 x audio, +/-10 %, while
the prior is 5 s + 0.1 x audio (about three times too long), or 5 s + 0.01 x audio (three
times too short). Printed per batch: the estimate after it, hits and misses, and the detection
delay. ``--ungated`` shows the same without the per-generation bound on steps.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random

import fakeredis

import tasks.timing as timing
from tasks.timing import TimingModel

DURATIONS_S = (20, 45, 90, 180, 360, 720)
GUARD_S = 3.0


def run_batches(prior_rtf: float, seed: int, batches: int, size: int) -> list[str]:
    model = TimingModel(fakeredis.FakeRedis(), prior_base_s=5, prior_rtf=prior_rtf)
    rng = random.Random(seed)
    rows = []
    for batch in range(batches):
        events: list[tuple] = []
        for i in range(size):
            audio_s = rng.choice(DURATIONS_S)
            heapq.heappush(events, (i / 5.0, 0, i, audio_s, (2 + 0.03 * audio_s) * rng.uniform(0.9, 1.1), None, 0.0))
        hits = misses = 0
        delays = []
        while events:
            now, kind, i, audio_s, actual_s, used, submitted = heapq.heappop(events)
            if kind == 0:  # submit: schedule the on-time poll on today's estimate
                used = model.current()
                heapq.heappush(events, (now + used.expected_s(audio_s) + GUARD_S, 1, i, audio_s, actual_s, used, now))
                continue
            waited = now - submitted
            if kind == 1:  # the on-time poll: the one verdict this recording gives
                model.learn(audio_s, hit=actual_s <= waited, used=used)
                hits += actual_s <= waited
                misses += actual_s > waited
            if actual_s <= waited:
                delays.append(waited - actual_s)
            else:
                heapq.heappush(events, (now + max(2.0, 0.05 * waited), 2, i, audio_s, actual_s, used, submitted))
        delays.sort()
        estimate = model.current()
        rows.append(f"{batch + 1:>5} | {estimate.base_s:5.2f} s + {estimate.rtf:.4f} x audio | {hits:>4} {misses:>6} | "
                    f"{delays[len(delays) // 2]:5.1f} s {delays[int(0.95 * len(delays))]:6.1f} s")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--ungated", action="store_true", help="every verdict steps from the current estimate")
    args = parser.parse_args()
    if args.ungated:
        timing.GENERATION_STEPS = math.inf
    print(f"truth 2 s + 0.03 x audio (+/-10 %); target: {timing.TARGET_HIT_RATE:.0%} done at the on-time poll"
          f"{'; UNGATED' if args.ungated else ''}")
    for prior_rtf in (0.1, 0.01):
        for seed in (1, 2):
            print(f"\nprior 5 s + {prior_rtf} x audio, seed {seed}")
            print(f"{'batch':>5} | {'estimate after':^25} | {'hits':>4} {'misses':>6} | {'delay p50':>7} {'p95':>8}")
            for row in run_batches(prior_rtf, seed, args.batches, args.size):
                print(row)


if __name__ == "__main__":
    main()
