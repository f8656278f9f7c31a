"""A fleet-wide budget for Transcription API requests (submit and get together).

A sliding-window log in one Redis sorted set, updated by a Lua script that reads Redis's own
clock, so workers with skewed clocks still share one exact window: at most ``limit`` requests in
any ``period_s``. ``try_acquire`` never blocks: it returns how long to wait, so a Celery task can
re-enqueue itself with that countdown instead of sleeping in a worker slot.

Two classes of request share the window. Whoever is refused joins a queue of its class (a
sorted set, first refusal first), and while both classes have callers waiting, each keeps its
share of the window: ``submit_share`` for submits, the rest for polls (half and half by default:
one submit and one poll per recording is the whole cost of a recording). So a flood of polls
cannot starve submits, nor a flood of submits keep every finished job from being noticed; with
one class waiting alone it may use the whole window. The answer to a refused caller is when
*its* turn comes, not when the next slot frees, so a hundred waiting tasks do not all come back
at once.

The window is ``safety_s`` longer than the rate's period: a request takes a slot here a moment
before it reaches Plaud, and that moment varies; without the margin two requests a period apart
here could land inside one period there.

Callers that know they will ask (a recording on its way to a submit, a poll's next request)
say so with ``plan``: the window's ``load`` counts those requests, so "slack" means budget nobody
needs in the coming period, not just budget unused so far.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from .rates import Rate, SlidingWindow

SUBMIT = "submit"
POLL = "poll"
SAFETY_S = 1.0
DEFAULT_SUBMIT_SHARE = 0.5

# KEYS = window (all requests), submit queue, poll queue, window of this caller's class.
# ARGV = limit, period us, slot member, waiter id, class, this class's share, waiter ttl us.
# Returns 0 when a slot was taken, else microseconds until this caller's turn.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local waiter = ARGV[4]
local is_submit = ARGV[5] == 'submit'
local own_queue = is_submit and KEYS[2] or KEYS[3]
local other_queue = is_submit and KEYS[3] or KEYS[2]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - period)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[7]))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[7]))
local used = redis.call('ZCARD', KEYS[1])
local own_used = redis.call('ZCARD', KEYS[4])
local ahead = redis.call('ZRANK', own_queue, waiter) or redis.call('ZCARD', own_queue)
-- While the other class has callers waiting, this class keeps to its share of the window.
local own_limit = limit
if redis.call('ZCARD', other_queue) > 0 then
  own_limit = math.max(math.floor(limit * tonumber(ARGV[6])), 1)
end
if used + ahead < limit and own_used + ahead < own_limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('ZADD', KEYS[4], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(period / 1000))
  redis.call('PEXPIRE', KEYS[4], math.ceil(period / 1000))
  redis.call('ZREM', own_queue, waiter)
  return 0
end
redis.call('ZADD', own_queue, 'NX', now, waiter)
redis.call('PEXPIRE', own_queue, math.ceil(tonumber(ARGV[7]) / 1000))
-- This caller's turn: for each window that binds, when its (count + ahead - cap)-th slot frees,
-- a period later for every full window of callers ahead; the later of the two.
local function turn(window, count, cap)
  if count + ahead < cap then return 0 end
  local index = count + ahead - cap
  local rounds = math.floor(index / math.max(count, 1))
  local slot = redis.call('ZRANGE', window, index % math.max(count, 1), index % math.max(count, 1), 'WITHSCORES')
  local frees_at = slot[2] and tonumber(slot[2]) + period or now + period
  return frees_at - now + rounds * period
end
return math.max(turn(KEYS[1], used, limit), turn(KEYS[4], own_used, own_limit), 1000)
"""

# KEYS = window, submit queue, poll queue, planned; ARGV = period us, how long a plan outlives its time us.
# Returns used, submits waiting, polls waiting, requests planned up to a period ahead (those
# already due but not yet made included: they are waiting for a worker or for budget).
_LOAD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', (now - tonumber(ARGV[2])) / 1000000)
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]),
        redis.call('ZCOUNT', KEYS[4], '-inf', (now + period) / 1000000)}
"""


@dataclass(frozen=True)
class Load:
    """How much of the window is taken, and who is queuing for the rest."""

    limit: int
    used: int
    submits_waiting: int = 0
    polls_waiting: int = 0
    planned: int = 0

    @property
    def slack(self) -> float:
        """The share of the budget nobody has used, waits for or plans to use within a period: 1.0 idle, 0.0 spent.

        Any period that holds now holds at most the requests of the past period plus those of the
        next, so a request that fits both fits every window it falls in.
        """
        # Waiting requests are planned requests whose time has come: counted once, as planned.
        needed = self.used + max(self.planned, self.submits_waiting + self.polls_waiting)
        return max(1.0 - needed / self.limit, 0.0)


class Limiter(Protocol):
    rate: Rate

    def try_acquire(self, waiter: str | None = None, kind: str = SUBMIT) -> float:
        """Take one request slot: 0.0 when taken, else seconds to wait before asking again."""

    def load(self) -> Load:
        """The window's state now, for callers that plan requests ahead."""

    def plan(self, request: str, at_s: float, *, instead_of: tuple[str, ...] = ()) -> None:
        """A request named ``request`` will be made at ``at_s`` (epoch seconds), replacing its earlier
        plan and those of ``instead_of`` (requests it stands for that will not be made)."""

    def unplan(self, *requests: str) -> None:
        """These requests will not be made (any more)."""


class RedisLimiter:
    def __init__(self, redis: Any, rate: Rate, *, key: str, safety_s: float = SAFETY_S,
                 submit_share: float = DEFAULT_SUBMIT_SHARE) -> None:
        self.rate = rate
        self.redis = redis
        self.keys = [key, f"{key}:waiting:{SUBMIT}", f"{key}:waiting:{POLL}", f"{key}:planned"]
        self.class_windows = {SUBMIT: f"{key}:used:{SUBMIT}", POLL: f"{key}:used:{POLL}"}
        self.period_us = int((rate.period_s + safety_s) * 1_000_000)
        self.submit_share = submit_share
        # A waiter that never came back (its task died) leaves the queue after this long.
        self.waiter_ttl_us = 2 * self.period_us + 30_000_000
        self._acquire = redis.register_script(_ACQUIRE)
        self._load = redis.register_script(_LOAD)

    def try_acquire(self, waiter: str | None = None, kind: str = SUBMIT) -> float:
        if kind not in (SUBMIT, POLL):
            raise ValueError(f"kind must be {SUBMIT!r} or {POLL!r}, got {kind!r}")
        share = self.submit_share if kind == SUBMIT else 1.0 - self.submit_share
        wait_us = self._acquire(keys=[*self.keys[:3], self.class_windows[kind]],
                                args=[self.rate.limit, self.period_us, uuid.uuid4().hex, waiter or uuid.uuid4().hex,
                                      kind, share, self.waiter_ttl_us])
        return int(wait_us) / 1_000_000

    def load(self) -> Load:
        used, submits, polls, planned = self._load(keys=self.keys, args=[self.period_us, self.waiter_ttl_us])
        return Load(self.rate.limit, int(used), int(submits), int(polls), int(planned))

    def plan(self, request: str, at_s: float, *, instead_of: tuple[str, ...] = ()) -> None:
        pipe = self.redis.pipeline(transaction=False)  # one round trip: this runs at every poll
        if instead_of:
            pipe.zrem(self.keys[3], *instead_of)
        pipe.zadd(self.keys[3], {request: at_s})
        pipe.expire(self.keys[3], int(self.waiter_ttl_us / 1_000_000) + 86400)
        pipe.execute()

    def unplan(self, *requests: str) -> None:
        if requests:
            self.redis.zrem(self.keys[3], *requests)


class MemoryLimiter:
    """The same window for one process, first come first served (no queues: one process has none)."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._window = SlidingWindow(rate)
        self._lock = threading.Lock()

    def try_acquire(self, waiter: str | None = None, kind: str = SUBMIT) -> float:
        with self._lock:
            return self._window.acquire(time.monotonic())

    def load(self) -> Load:
        with self._lock:
            return Load(self.rate.limit, self._window.count(time.monotonic()))

    def plan(self, request: str, at_s: float, *, instead_of: tuple[str, ...] = ()) -> None:
        pass  # one process plans nothing ahead: its own requests are all it would count

    def unplan(self, *requests: str) -> None:
        pass
