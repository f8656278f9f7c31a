"""Polls that sleep as data: a poll whose next look is further off than the hold horizon ends its
task and waits in Redis, not as a countdown task a worker holds in memory.

A countdown task costs its worker about 19 KiB (kombu's decoded message, Celery's request and
timer entry; BENCHMARKS.md), for as long as Plaud works on the job: 10,000 recordings in flight
were 10,000 held tasks. So a poll that has more than ``PLAUD_POLL_HOLD_HORIZON_S`` to wait writes
its recording id and wake time to one sorted set and acks; each worker's dispatcher
(``tasks.dispatch``) takes the ones whose wake time comes within the horizon, and enqueues their
poll again with the countdown that is left, so the poll still fires on time. A worker then holds
only the polls of the next horizon, however many recordings are in flight.

Nothing is lost when a worker dies: an entry is written before the task acks, and one taken by a
dispatcher that died before enqueueing it is past its recording's due time soon after, when the
reconciler re-drives it (the same as a countdown task lost with its worker).
"""

from __future__ import annotations

from typing import Any

from plaud.keys import text

from .names import SLEEPING_POLLS

# KEYS: 1 sleeping polls (id -> wake at s). ARGV: 1 take those waking at or before this (s),
# 2 at most this many. Removes and returns them, soonest first: id, wake at, id, wake at, ...
_TAKE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #due, 2 do redis.call('ZREM', KEYS[1], due[i]) end
return due
"""


class SleepingPolls:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._take_due = redis.register_script(_TAKE_DUE)

    def sleep(self, recording_id: str, wake_at_s: float) -> None:
        """The recording's poll wakes at ``wake_at_s`` (a later sleep of the same recording replaces it)."""
        self.redis.zadd(SLEEPING_POLLS, {recording_id: wake_at_s})

    def take_due(self, until_s: float, limit: int) -> list[tuple[str, float]]:
        """Take (and remove) up to ``limit`` polls waking at or before ``until_s``, soonest first.

        Atomic: of any number of dispatchers asking at once, each poll goes to one.
        """
        flat = self._take_due(keys=[SLEEPING_POLLS], args=[until_s, limit])
        return [(text(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]

    def next_wake_s(self) -> float | None:
        """When the soonest sleeping poll wakes (epoch s); None when none sleeps."""
        first = self.redis.zrange(SLEEPING_POLLS, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def wake_at(self, recording_id: str) -> float | None:
        """When this recording's poll wakes; None when it does not sleep here."""
        score = self.redis.zscore(SLEEPING_POLLS, recording_id)
        return None if score is None else float(score)

    def forget(self, recording_id: str) -> None:
        """The recording ended, or another chain took over its poll: it no longer sleeps here."""
        self.redis.zrem(SLEEPING_POLLS, recording_id)

    def count(self) -> int:
        return int(self.redis.zcard(SLEEPING_POLLS))
