"""How long Plaud takes, learned by the whole fleet: expected = base + rtf × audio seconds.

The two numbers live in one Redis hash, so every worker schedules from what all of them have
seen, and a restarted fleet starts where it left off. The configured values are only the prior.

Learning uses the one fact each recording reveals for sure, at its on-time poll (a guard of a
few seconds after its expected time): done (a hit) or not (a miss). An early probe that finds it
done is a hit too.
That bit is exactly what quantile regression needs: a stochastic-gradient step on the pinball
loss shrinks the estimate a little on a hit and grows it more on a miss, and settles where
``TARGET_HIT_RATE`` of recordings are done when first polled on time. Each parameter moves by
its share of the prediction, so short recordings mostly teach the base and long ones the rate.
Steps are in log space (a factor, never a sign change) and get smaller as samples accumulate,
down to a floor that still follows Plaud getting slower or faster.

A hit seen late (the poll waited for budget or for a worker) says little: it is not counted.

Verdicts arrive in batches: a hundred recordings scheduled on one estimate finish together, and
if it was low they all miss. Applied one after another, each would raise the estimate again
and it would overshoot many times over (it did: a threefold overshoot, then oscillation). So a
verdict moves the estimate by one step, but never past ``GENERATION_STEPS`` steps from the
values that recording was scheduled with: a batch scheduled on one estimate moves it at most
that far, and the next batch, scheduled on the moved estimate, goes on from there. One
recording at a time this is plain stochastic gradient descent. The constants were chosen in a
simulation of batches of 300 against a threefold-wrong prior: stable, and within 20 % of the
truth by the second batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .names import TIMING_KEY
from .redis_connection import ScriptCall

TARGET_HIT_RATE = 0.8
GENERATION_STEPS = 10  # how far one batch scheduled on the same estimate may move it, in steps
STEP_START = 0.3
STEP_FLOOR = 0.05
STEP_HALF_LIFE_SAMPLES = 25  # the step is STEP_START / sqrt(1 + samples / this), at least STEP_FLOOR
BASE_BOUNDS_S = (0.5, 3600.0)
RTF_BOUNDS = (0.001, 10.0)
# The learn script's limits, in log space as it keeps the estimate: log base's, then log rtf's.
_LOG_LIMITS = (*map(math.log, BASE_BOUNDS_S), *map(math.log, RTF_BOUNDS))


@dataclass(frozen=True)
class TimingEstimate:
    base_s: float
    rtf: float
    samples: int = 0
    hits: int = 0
    misses: int = 0

    def expected_s(self, audio_duration_s: float | None) -> float:
        return self.base_s + self.rtf * (audio_duration_s or 0.0)

    def as_fields(self) -> dict[str, float]:
        """What a recording keeps of the estimate it was scheduled with, to learn from it later."""
        return {"timing_base_s": round(self.base_s, 4), "timing_rtf": round(self.rtf, 6)}

    @classmethod
    def from_fields(cls, fields: Any) -> TimingEstimate | None:
        """Back from a record (anything with ``number``); None when it has no estimate saved."""
        base_s, rtf = fields.number("timing_base_s"), fields.number("timing_rtf")
        return cls(base_s, rtf) if base_s > 0 and rtf > 0 else None


# One verdict, applied to the estimate as it is in Redis when the script runs: each log moves by its
# step, but not past the bound (the values the recording was scheduled with, moved by a
# generation's steps) nor the model's limits; the hash starts from the caller's read (the prior)
# if it has no values yet; the tallies go up. Done here rather than from the caller's read, so
# neither two workers learning at once nor a read made before a slow request can carry the
# estimate past its bound. One command for redis-py to send and one reply to read.
# With a recording's record as KEYS[2], only that recording's first verdict counts (its
# ``timing_learned`` goes up either way); returns 0 for one that does not.
# ARGV: 1-2 the caller's read of log base and log rtf, 3-4 base's step and bound, 5-6 rtf's,
# 7 'hits' or 'misses', 8-11 the limits of log base and log rtf (low, high).
_LEARN = """
if KEYS[2] and redis.call('HINCRBY', KEYS[2], 'timing_learned', 1) ~= 1 then return 0 end
local function moved(field, read, step, bound, low, high)
  local current = tonumber(redis.call('HGET', KEYS[1], field) or read)
  local target = current + step
  if step > 0 then
    target = math.max(current, math.min(target, bound))
  else
    target = math.min(current, math.max(target, bound))
  end
  return string.format('%.17g', math.min(math.max(target, low), high))
end
local a = ARGV
redis.call('HSET', KEYS[1],
  'log_base', moved('log_base', a[1], tonumber(a[3]), tonumber(a[4]), tonumber(a[8]), tonumber(a[9])),
  'log_rtf', moved('log_rtf', a[2], tonumber(a[5]), tonumber(a[6]), tonumber(a[10]), tonumber(a[11])))
redis.call('HINCRBY', KEYS[1], 'samples', 1)
return redis.call('HINCRBY', KEYS[1], a[7], 1)
"""

_FIELDS = ("log_base", "log_rtf", "samples", "hits", "misses")


class TimingModel:
    def __init__(self, redis: Any, *, prior_base_s: float, prior_rtf: float, key: str = TIMING_KEY) -> None:
        self.redis = redis
        self.key = key
        self._learn = redis.register_script(_LEARN)
        self.prior = TimingEstimate(_clamp(prior_base_s, BASE_BOUNDS_S), _clamp(prior_rtf, RTF_BOUNDS))

    def current(self) -> TimingEstimate:
        return self.estimate_from(self.redis.hmget(self.key, *_FIELDS))

    def ask(self, pipe: Any) -> None:
        """Queue the read ``current`` makes on a pipeline, to read the estimate along with something
        else in one round trip; ``estimate_from`` reads its reply."""
        pipe.hmget(self.key, *_FIELDS)

    def estimate_from(self, reply: list[Any]) -> TimingEstimate:
        log_base, log_rtf, samples, hits, misses = reply
        if log_base is None or log_rtf is None:
            return self.prior
        return TimingEstimate(_clamp(math.exp(float(log_base)), BASE_BOUNDS_S), _clamp(math.exp(float(log_rtf)),
                                                                                       RTF_BOUNDS),
                              int(samples or 0), int(hits or 0), int(misses or 0))

    def learn(self, audio_duration_s: float | None, hit: bool, used: TimingEstimate | None = None) -> TimingEstimate:
        """One recording's verdict, on the estimate it was scheduled with (``used``, default the current
        one); returns the estimate it moved from."""
        now = self.current()
        self.lesson(audio_duration_s, hit, used, now=now).run(self.redis)
        return now

    def lesson(self, audio_duration_s: float | None, hit: bool, used: TimingEstimate | None = None, *,
               now: TimingEstimate, once_for: str | None = None) -> ScriptCall:
        """What ``learn`` writes, as a call to send with other commands. ``now`` is the current
        estimate as the caller read it (``ask``): it sizes the step (which shrinks as samples
        grow); the script moves the stored values themselves, within the bound. With a record's
        key as ``once_for``, only that recording's first verdict counts."""
        used = used or now
        audio_s = audio_duration_s or 0.0
        expected = used.expected_s(audio_s)
        step = max(STEP_START / math.sqrt(1 + now.samples / STEP_HALF_LIFE_SAMPLES), STEP_FLOOR)
        direction = -(1 - TARGET_HIT_RATE) if hit else TARGET_HIT_RATE
        base_step = step * direction * used.base_s / expected
        rtf_step = step * direction * used.rtf * audio_s / expected
        # Not past ``used`` moved by a generation's steps: a batch scheduled on one estimate moves it
        # at most that far.
        return ScriptCall(self._learn, [self.key, *([once_for] if once_for else [])], [
            math.log(now.base_s), math.log(now.rtf),
            base_step, math.log(used.base_s) + GENERATION_STEPS * base_step,
            rtf_step, math.log(used.rtf) + GENERATION_STEPS * rtf_step,
            "hits" if hit else "misses", *_LOG_LIMITS])

    def forget(self) -> None:
        """Back to the prior (after Plaud changed, or between benchmark runs)."""
        self.redis.delete(self.key)


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])
