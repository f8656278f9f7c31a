"""A fleet-wide budget for Transcription API requests (submit and get together).

A sliding-window log in one Redis sorted set, updated by a Lua script that reads Redis's own
clock, so workers with skewed clocks still share one exact window: at most ``limit`` requests in
any ``period_s``. ``try_acquire`` never blocks: it returns how long to wait, so a Celery task can
re-enqueue itself with that countdown instead of sleeping in a worker slot.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Protocol

from .rates import Rate, SlidingWindow

# KEYS[1] = window key; ARGV = limit, period in microseconds, unique member.
# Returns 0 when a slot was taken, else microseconds until one frees up.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(period / 1000))
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(tonumber(oldest[2]) + period - now, 1)
"""


class Limiter(Protocol):
    rate: Rate

    def try_acquire(self) -> float:
        """Take one request slot: 0.0 when taken, else seconds to wait before asking again."""


class RedisLimiter:
    def __init__(self, redis: Any, rate: Rate, *, key: str) -> None:
        self.rate = rate
        self.key = key
        self._script = redis.register_script(_SLIDING_WINDOW)

    def try_acquire(self) -> float:
        wait_us = self._script(keys=[self.key], args=[self.rate.limit, int(self.rate.period_s * 1_000_000),
                                                      uuid.uuid4().hex])
        return int(wait_us) / 1_000_000


class MemoryLimiter:
    """The same window for one process."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._window = SlidingWindow(rate)
        self._lock = threading.Lock()

    def try_acquire(self) -> float:
        with self._lock:
            return self._window.acquire(time.monotonic())
