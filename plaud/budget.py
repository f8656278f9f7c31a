"""The fleet-wide Transcription API budget as a work-conserving scheduler: waiters are pulled, not told when.

At most ``limit`` requests (submits and polls together) in any ``period_s``, counted in one Redis
sorted set, the window, which is ``safety_s`` longer than the rate's period: a request takes its
slot here a moment before it reaches Plaud, and that moment varies.

The earlier limiter (``ratelimit.py``) told a refused caller when *its* turn would come, computed
as if the window stayed full; when the waiters themselves slept on those turns the window stayed
sparse and each waiter was pushed a whole period behind the one before: the schedule fulfilled
itself (150 recordings at 120/min fell from 60 recordings a minute to one). Here nobody is given a
time. A request that may go now takes a slot at once; one that must wait is written down as data
(its waiter id, in the wait list of its kind) and its task ends: nothing sleeps, nothing holds a
worker. Whoever finds capacity (the dispatcher's tick about every second, a request just finished, a
woken poll) calls ``release``, which in one step takes every free slot, grants them to the next
waiters in order and returns them, so the caller can enqueue their tasks. Capacity that frees is
used within a tick whatever the waiters are doing, so free budget and a waiting request never
coexist for more than a moment.

A grant reserves its slot at grant time. When the granted waiter comes back (``take`` again) the
slot's time moves to the actual send, so the window counts from when the request really leaves:
never less than the truth. A grant nobody comes back for (its task lost) is dropped after
``grant_ttl_s``, its slot staying counted until the window passes it, and ``release`` reports it.

Two kinds share the window. While both have waiters, each keeps its share (``submit_share`` for
submits, the rest for polls) and the next free slot goes to the kind using less of its share, the
older waiter on a tie (always, for a budget of one request); a kind waiting alone may use the
whole window. So neither starves: a flood of polls cannot hold back
new work, nor a flood of submits keep every finished job from being noticed.

Who goes first within a kind is the ``order`` score of ``take``, the first refusal's time by
default: the one place a fairness policy (tenants, weights, priorities) plugs in.

Every step that decides is one Lua script, atomic across the fleet, reading Redis's own clock so
skewed worker clocks still share one exact window; the scripts take an optional ``now_us`` instead,
which is how the simulation in the tests drives a fake clock through the very scripts the fleet
runs. A waiter costs two sorted-set entries (its place, and its first refusal for the oldest wait's
age): under 300 bytes of Redis with uuid-sized ids.

Callers that know they will ask (a recording on its way to a submit, a poll's next request) say so
with ``plan``: ``load`` counts those requests, so "slack" means budget nobody needs in the coming
period, not just budget unused so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .ratelimit import DEFAULT_SUBMIT_SHARE, POLL, SAFETY_S, SUBMIT
from .ratelimit import Load as WindowLoad
from .rates import Rate

__all__ = ["KINDS", "POLL", "SUBMIT", "Budget", "Load", "Release"]

KINDS = (SUBMIT, POLL)
GRANT_TTL_S = 30.0

# Shared by every script. KEYS: 1 window (all slots), 2-3 the slots of each kind, 4-5 the wait
# list of each kind (waiter -> order), 6-7 each waiter's first refusal (for the oldest wait),
# 8 grants (hash 'kind:waiter' -> slot), 9 grant times ('kind:waiter' -> us), 10 slot counter.
# ARGV: 1 now us ('' = Redis's clock), 2 limit, 3 window us, 4-5 submit and poll shares of the
# window while both kinds wait, 6 grant ttl us; the script's own arguments follow.
_PRELUDE = """
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local limit = tonumber(ARGV[2])
local window_us = tonumber(ARGV[3])
local grant_ttl_us = tonumber(ARGV[6])
local KIND = {
  submit = {slots = KEYS[2], queue = KEYS[4], since = KEYS[6], other = 'poll', share = tonumber(ARGV[4])},
  poll = {slots = KEYS[3], queue = KEYS[5], since = KEYS[7], other = 'submit', share = tonumber(ARGV[5])},
}
local function num(x) return string.format('%.17g', x) end

local function trim()
  local cutoff = num(now - window_us)
  for i = 1, 3 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', cutoff) end
end

-- The slot counts from now, in the window and in its kind's (a window idle for a minute after it empties vanishes).
local function count(kind, slot)
  local gc_ms = math.ceil(window_us / 1000) + 60000
  for _, key in ipairs({KEYS[1], KIND[kind].slots}) do
    redis.call('ZADD', key, num(now), slot)
    redis.call('PEXPIRE', key, gc_ms)
  end
  return slot
end

local function add_slot(kind)
  return count(kind, redis.call('INCR', KEYS[10]))
end

-- While the other kind has waiters, a kind keeps to its share; alone it may use the whole window.
local function cap(kind)
  if redis.call('EXISTS', KIND[KIND[kind].other].queue) == 1 then return KIND[kind].share end
  return limit
end

local function leave_queue(kind, waiter)
  redis.call('ZREM', KIND[kind].queue, waiter)
  redis.call('ZREM', KIND[kind].since, waiter)
end
"""

# ARGV 7 kind, 8 waiter, 9 order score ('' = now), 10 '1' to join the wait list when refused. Returns 2 sent
# on a grant, 1 took a free slot, 0 refused (and waits, if it joined or was already waiting).
_TAKE = _PRELUDE + """
trim()
local kind, waiter = ARGV[7], ARGV[8]
local field = kind .. ':' .. waiter
local granted_slot = redis.call('HGET', KEYS[8], field)
if granted_slot then
  -- Other grants' expiry is release's to report; this one's waiter is here, late or not.
  local granted_at = tonumber(redis.call('ZSCORE', KEYS[9], field))
  redis.call('HDEL', KEYS[8], field)
  redis.call('ZREM', KEYS[9], field)
  if granted_at and granted_at > now - grant_ttl_us and redis.call('ZSCORE', KEYS[1], granted_slot) then
    count(kind, granted_slot)  -- from the real send now, later than the grant: conservative
    leave_queue(kind, waiter)  -- a duplicate of this request queued meanwhile is this request
    return 2
  end
end
local queue = KIND[kind].queue
local ahead = redis.call('ZRANK', queue, waiter)
local queued = ahead ~= false
if not queued then
  local order = ARGV[9] ~= '' and ARGV[9] or num(now)
  ahead = redis.call('ZCOUNT', queue, '-inf', order)
  if ahead > 0 or redis.call('ZCARD', KEYS[1]) >= limit or redis.call('ZCARD', KIND[kind].slots) >= cap(kind) then
    if ARGV[10] == '1' then
      redis.call('ZADD', queue, order, waiter)
      redis.call('ZADD', KIND[kind].since, num(now), waiter)
    end
    return 0
  end
elseif ahead > 0 or redis.call('ZCARD', KEYS[1]) >= limit or redis.call('ZCARD', KIND[kind].slots) >= cap(kind) then
  return 0
end
add_slot(kind)
if queued then leave_queue(kind, waiter) end
return 1
"""

# ARGV 7 most grants (0 = as many as are free). Returns {granted kind, waiter, ...}, {expired
# 'kind:waiter', ...}, us until the window's oldest slot frees (0 when one is free), waiters left,
# grants not yet used.
_RELEASE = _PRELUDE + """
trim()
-- Grants nobody came back for: forgotten, their slots still counted until the window passes them.
local cutoff = num(now - grant_ttl_us)
local expired = redis.call('ZRANGEBYSCORE', KEYS[9], '-inf', cutoff)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', cutoff)
  for _, field in ipairs(expired) do redis.call('HDEL', KEYS[8], field) end
end
local used = redis.call('ZCARD', KEYS[1])
local free = limit - used
if tonumber(ARGV[7]) > 0 then free = math.min(free, tonumber(ARGV[7])) end
local in_use = {submit = redis.call('ZCARD', KEYS[2]), poll = redis.call('ZCARD', KEYS[3])}
local waiting = {submit = redis.call('ZCARD', KEYS[4]), poll = redis.call('ZCARD', KEYS[5])}
local function head(kind) return tonumber(redis.call('ZRANGE', KIND[kind].queue, 0, 0, 'WITHSCORES')[2]) end
local granted = {}
while free > 0 and (waiting.submit > 0 or waiting.poll > 0) do
  local kind
  if waiting.submit == 0 then
    kind = 'poll'
  elseif waiting.poll == 0 then
    kind = 'submit'
  else
    -- Both wait: the kind using less of its share; on a tie, the older head.
    local s = in_use.submit / KIND.submit.share
    local p = in_use.poll / KIND.poll.share
    if s < p or (s == p and head('submit') <= head('poll')) then kind = 'submit' else kind = 'poll' end
    if in_use[kind] >= KIND[kind].share then break end  -- only when limit is 1: both shares are the slot
  end
  local waiter = redis.call('ZPOPMIN', KIND[kind].queue)[1]
  redis.call('ZREM', KIND[kind].since, waiter)
  local slot = add_slot(kind)
  redis.call('HSET', KEYS[8], kind .. ':' .. waiter, slot)
  redis.call('ZADD', KEYS[9], num(now), kind .. ':' .. waiter)
  granted[#granted + 1] = kind
  granted[#granted + 1] = waiter
  waiting[kind] = waiting[kind] - 1
  in_use[kind] = in_use[kind] + 1
  used = used + 1
  free = free - 1
end
local next_free = 0
if used >= limit then
  next_free = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]) + window_us - now
end
return {granted, expired, next_free, waiting.submit + waiting.poll, redis.call('ZCARD', KEYS[9])}
"""

# ARGV 7 waiter, 8.. kinds. Drops the waiter from those wait lists and its unused grants (freeing
# their slots: no request went out on them, and a late task now needs a new slot). Returns how many.
_CANCEL = _PRELUDE + """
local waiter = ARGV[7]
local dropped = 0
for i = 8, #ARGV do
  local kind = ARGV[i]
  dropped = dropped + redis.call('ZREM', KIND[kind].queue, waiter)
  redis.call('ZREM', KIND[kind].since, waiter)
  local slot = redis.call('HGET', KEYS[8], kind .. ':' .. waiter)
  if slot then
    redis.call('HDEL', KEYS[8], kind .. ':' .. waiter)
    redis.call('ZREM', KEYS[9], kind .. ':' .. waiter)
    redis.call('ZREM', KEYS[1], slot)
    redis.call('ZREM', KIND[kind].slots, slot)
    dropped = dropped + 1
  end
end
return dropped
"""

# KEYS 11 planned; ARGV 7 how long a plan outlives its time us. Returns used, submits waiting,
# polls waiting, requests planned up to a period ahead (those already due but not yet made
# included), grants outstanding, us since the oldest waiter's first refusal (-1: nobody waits),
# us until the window's oldest slot frees (0 when one is free).
_LOAD = _PRELUDE + """
trim()
redis.call('ZREMRANGEBYSCORE', KEYS[11], '-inf', num((now - tonumber(ARGV[7])) / 1000000))
local oldest = -1
for _, key in ipairs({KEYS[6], KEYS[7]}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
  if first then oldest = math.max(oldest, now - tonumber(first)) end
end
local used = redis.call('ZCARD', KEYS[1])
local next_free = 0
if used >= limit then
  next_free = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]) + window_us - now
end
return {used, redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5]),
        redis.call('ZCOUNT', KEYS[11], '-inf', num((now + window_us) / 1000000)),
        redis.call('ZCOUNT', KEYS[9], '(' .. num(now - grant_ttl_us), '+inf'), oldest, next_free}
"""


@dataclass(frozen=True)
class Load(WindowLoad):
    """The window's state, as ``ratelimit.Load`` (same ``slack``), plus what ``status`` shows of the waits."""

    granted: int = 0  # slots granted to waiters whose tasks have not sent yet (counted in ``used``)
    oldest_wait_s: float = 0.0  # since the oldest waiter's first refusal; 0.0 when nobody waits
    next_free_in_s: float = 0.0  # until the window's oldest slot frees; 0.0 when one is free now


@dataclass(frozen=True)
class Release:
    """What one ``release`` did: the waiters to wake now, the grants given up on, when to look again."""

    granted: list[tuple[str, str]]  # (kind, waiter), in grant order: enqueue their tasks
    expired: list[tuple[str, str]]  # (kind, waiter) whose grant outlived its ttl unused: their task is lost
    next_free_in_s: float  # until the window's oldest slot frees; 0.0 when one is free now
    waiting: int  # waiters still waiting, both kinds
    outstanding: int  # grants not yet used (these included): a later release may find them expired

    def wake_in_s(self, tick_s: float = 1.0, min_s: float = 0.05) -> float:
        """How long a dispatcher may sleep: until the next slot frees while anyone waits, else a tick."""
        if self.waiting == 0:
            return tick_s
        return min(max(self.next_free_in_s, min_s), tick_s)


class Budget:
    """The fleet-wide budget of ``rate`` requests, shared by every worker through Redis under ``key``."""

    def __init__(self, redis: Any, rate: Rate, *, key: str, safety_s: float = SAFETY_S,
                 submit_share: float = DEFAULT_SUBMIT_SHARE, grant_ttl_s: float = GRANT_TTL_S) -> None:
        if not 0.0 < submit_share < 1.0:
            raise ValueError(f"submit_share must be between 0 and 1, got {submit_share}")
        self.rate = rate
        self.redis = redis
        self.window_us = int((rate.period_s + safety_s) * 1_000_000)
        # A grant must be used while its slot is still in the window: that is what it reserved.
        self.grant_ttl_us = int(min(grant_ttl_s, rate.period_s) * 1_000_000)
        # How long a plan outlives its time before load() forgets it.
        self.plan_ttl_us = 2 * self.window_us + 30_000_000
        if rate.limit == 1:
            self.shares = {SUBMIT: 1, POLL: 1}  # one slot: the older waiter of either kind
        else:
            submits = min(max(math.floor(rate.limit * submit_share), 1), rate.limit - 1)
            self.shares = {SUBMIT: submits, POLL: rate.limit - submits}
        self.keys = [key, f"{key}:slots:{SUBMIT}", f"{key}:slots:{POLL}", f"{key}:waiting:{SUBMIT}",
                     f"{key}:waiting:{POLL}", f"{key}:since:{SUBMIT}", f"{key}:since:{POLL}", f"{key}:grants",
                     f"{key}:granted", f"{key}:seq", f"{key}:planned"]
        self._take = redis.register_script(_TAKE)
        self._release = redis.register_script(_RELEASE)
        self._cancel = redis.register_script(_CANCEL)
        self._load = redis.register_script(_LOAD)

    def _args(self, now_us: int | None, *rest: Any) -> list[Any]:
        return ["" if now_us is None else int(now_us), self.rate.limit, self.window_us, self.shares[SUBMIT],
                self.shares[POLL], self.grant_ttl_us, *rest]

    def take(self, kind: str, waiter: str, *, order: float | None = None, queue: bool = True,
             now_us: int | None = None) -> bool:
        """Take a slot for ``waiter``'s request of ``kind``: True, send it now; False, it waits in Redis.

        True when the waiter holds a grant (its slot now counts from this moment), or when a slot is
        free, its kind is within its share and nobody of its kind is ahead. False records it in its
        kind's wait list, keeping its place if already there: end the task, ``release`` wakes it.
        ``order`` places a new waiter (lower first; default its first refusal time, us on Redis's clock).
        With ``queue=False`` a refused caller is not written down (one with no task to wake: a script).
        """
        _check_kind(kind)
        order_arg = "" if order is None else repr(float(order))
        return int(self._take(keys=self.keys[:10],
                              args=self._args(now_us, kind, waiter, order_arg, "1" if queue else "0"))) > 0

    def release(self, *, max_grants: int | None = None, now_us: int | None = None) -> Release:
        """Grant every free slot (at most ``max_grants``) to the next waiters, shares kept; enqueue their tasks."""
        granted, expired, next_free_us, waiting, outstanding = self._release(keys=self.keys[:10],
                                                                args=self._args(now_us, max_grants or 0))
        pairs = [(_text(granted[i]), _text(granted[i + 1])) for i in range(0, len(granted), 2)]
        lost = [(kind, waiter) for kind, _, waiter in (_text(field).partition(":") for field in expired)]
        return Release(pairs, lost, int(next_free_us) / 1_000_000, int(waiting), int(outstanding))

    def cancel(self, waiter: str, kind: str | None = None, *, now_us: int | None = None) -> bool:
        """Drop ``waiter`` from the wait list of ``kind`` (both when None) and its unused grant: True if any."""
        kinds = KINDS if kind is None else (_check_kind(kind),)
        return int(self._cancel(keys=self.keys[:10], args=self._args(now_us, waiter, *kinds))) > 0

    def position(self, waiter: str, kind: str) -> int | None:
        """How many waiters of its kind go before ``waiter`` (0: next); None when it is not waiting."""
        rank = self.redis.zrank(self.keys[3 if _check_kind(kind) == SUBMIT else 4], waiter)
        return None if rank is None else int(rank)

    def holds(self, waiter: str) -> str | None:
        """The kind ``waiter`` waits for or holds an unused grant of; None when neither (sent, or lost)."""
        pipe = self.redis.pipeline(transaction=False)
        for kind in KINDS:
            pipe.zscore(self.keys[3 if kind == SUBMIT else 4], waiter)
            pipe.hexists(self.keys[7], f"{kind}:{waiter}")
        answers = pipe.execute()
        for i, kind in enumerate(KINDS):
            if answers[2 * i] is not None or answers[2 * i + 1]:
                return kind
        return None

    def next_free_in_s(self, *, now_us: int | None = None) -> float:
        """Seconds until the window's oldest slot frees (0.0 when a slot is free now)."""
        return self.load(now_us=now_us).next_free_in_s

    def load(self, *, now_us: int | None = None) -> Load:
        """The window's state now, for ``status`` and for callers that plan requests ahead."""
        used, submits, polls, planned, granted, oldest_us, next_free_us = self._load(
            keys=self.keys, args=self._args(now_us, self.plan_ttl_us))
        return Load(self.rate.limit, int(used), int(submits), int(polls), int(planned), granted=int(granted),
                    oldest_wait_s=max(int(oldest_us), 0) / 1_000_000, next_free_in_s=int(next_free_us) / 1_000_000)

    def plan(self, request: str, at_s: float, *, instead_of: tuple[str, ...] = ()) -> None:
        """A request named ``request`` will be made at ``at_s`` (epoch seconds), replacing its earlier
        plan and those of ``instead_of`` (requests it stands for that will not be made)."""
        pipe = self.redis.pipeline(transaction=False)  # one round trip: this runs at every poll
        if instead_of:
            pipe.zrem(self.keys[10], *instead_of)
        pipe.zadd(self.keys[10], {request: at_s})
        pipe.expire(self.keys[10], int(self.plan_ttl_us / 1_000_000) + 86400)
        pipe.execute()

    def unplan(self, *requests: str) -> None:
        """These requests will not be made (any more)."""
        if requests:
            self.redis.zrem(self.keys[10], *requests)


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be {SUBMIT!r} or {POLL!r}, got {kind!r}")
    return kind


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
