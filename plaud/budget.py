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
waiters (by the policy below) and returns them, so the caller can enqueue their tasks. Capacity that frees is
used within a tick whatever the waiters are doing, so free budget and a waiting request never
coexist for more than a moment.

The window is paced: besides it, a GCRA (one time in Redis: when the pace's next request is due)
lets one request go every ``window / limit`` on average and at most ``ceil(limit / slices)`` at
once. That is the window's own rate, so while requests wait the pace costs no throughput; what it
changes is that a burst no longer takes the whole window in a moment. Unpaced, whoever came after
such a burst (a high request, the poll of a job that just finished) waited for its slots to free a
whole period later, all at once, and be handed out again at once; paced, room comes back every
``window / limit`` and the policy below decides who takes it. A slot freed unused (an expired or
cancelled grant) gives its time back to the pace as well as to the window.

A grant reserves its slot at grant time. When the granted waiter comes back (``take`` again) the
slot's time moves to the actual send, so the window counts from when the request really leaves:
never less than the truth. A grant nobody comes back for (its task lost) is given up by the first
``release`` after ``grant_ttl_s`` (or the period, if shorter: the slot must still be in the
window when it is used), which frees its slot — no request went out on it, since a grant is
deleted in the same step that uses it — and reports it, so its recording can be woken again.

Two kinds share the window. While both have waiters, each keeps its share (``submit_share`` for
submits, the rest for polls) and the next free slot goes to the kind using less of its share, the
older waiter on a tie (always, for a budget of one request); a kind waiting alone may use the
whole window. So neither starves: a flood of polls cannot hold back
new work, nor a flood of submits keep every finished job from being noticed.

Who goes next among waiting *submits* is a policy, decided in the same scripts:

- **Between tenants, weighted fair queuing** (start-time fair queuing on a virtual clock). Each
  tenant with submits waiting has a tag: the virtual time of its next grant. The next submit goes
  to the tenant with the lowest tag (the lower name on a tie); the virtual time becomes that tag and
  the tenant's tag moves on by ``1 / weight`` (in integers, ``VIRTUAL_GRANT / weight``). So while
  several tenants wait, grants split in proportion to their weights (``tenant_weights``, else
  ``default_weight``), and a tenant waiting alone takes them all. A tenant that starts waiting
  joins at the current virtual time, or where it left off if that is later and others kept
  waiting: idle time banks no credit, and leaving to come back gains nothing. Once no submit waits
  at all, every tenant starts even.
- **Within a tenant, priorities with aging.** Its submits go in order of ``order`` (the first
  refusal's time in us on Redis's clock, by default) shifted by their priority: ``high`` by
  ``-aging_s``, ``normal`` not at all, ``low`` by ``+aging_s``. So ``high`` goes before ``normal``
  before ``low`` among requests that came within ``aging_s`` of each other, and a request that has
  waited ``aging_s`` longer than another ranks as if one class higher (a low one, ``2 * aging_s``
  longer than a high one, goes first). That is what keeps a low request from starving: no request
  that comes more than ``2 * aging_s`` after it goes before it, so under any stream of high
  requests it is served once the ones that came before then are. ``aging_s``: three periods unless
  told.
- **Polls stand in no tenant's line**: a poll of a submitted job completes billed work, so the
  shares between tenants never hold it back. Among polls, each is placed by its recording's
  priority with the same aging as a tenant's submits (across tenants): a high recording's poll
  need not wait behind a low backlog's, and no poll starves. (``poll_priorities=False``: first
  come, first served.)

A submit takes a free slot at once only when no submit waits (else it joins its tenant's line, and
goes at once only if the policy picks it next); release grants the policy's picks.

``position`` of a waiting poll is its place in the poll line; of a waiting submit, how many submit
grants come before it under the policy if nobody else joined: its rank in its tenant's line plus,
for every other waiting tenant, how many of its waiters' tags fall before this waiter's (at most
how many it has waiting). O(log n + tenants waiting). Newcomers can still go before it (another
tenant starting to wait, a higher priority of its own tenant): an estimate for ``status``, not a
promise.

Every step that decides is one Lua script, atomic across the fleet, reading Redis's own clock so
skewed worker clocks still share one exact window; the scripts take an optional ``now_us`` instead,
which is how the simulation in the tests drives a fake clock through the very scripts the fleet
runs. A waiting poll costs two sorted-set entries (its place, and its first refusal for the oldest
wait's age): under 300 bytes of Redis with uuid-sized ids; a waiting submit one hash entry more
(its tenant, so that ``cancel`` and ``position`` find it by id alone): about 370 bytes. A tenant
costs a tag while it waits, and a small hash entry (where it left off) after, until no submit
waits. The per-tenant lines are keys the scripts name from ``key``: one Redis, as the fleet runs
(not a cluster, where the budget's keys never shared a slot anyway).

Callers that know they will ask (a recording on its way to a submit, a poll's next request) say so
with ``plan``: ``load`` counts those requests, so "slack" means budget nobody needs in the coming
period, not just budget unused so far.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .keys import text
from .ratelimit import DEFAULT_SUBMIT_SHARE, POLL, SAFETY_S, SUBMIT
from .ratelimit import Load as WindowLoad
from .rates import Rate

__all__ = ["DEFAULT_PRIORITY", "DEFAULT_TENANT", "KINDS", "POLL", "PRIORITIES", "SUBMIT", "Budget", "Load", "Release",
           "parse_tenant_weights"]

KINDS = (SUBMIT, POLL)
PRIORITIES = ("high", "normal", "low")
DEFAULT_PRIORITY = "normal"
DEFAULT_TENANT = "default"
GRANT_TTL_S = 30.0
AGING_PERIODS = 3.0  # aging_s unless told: this many of the rate's periods
# Unless told, the pace lets at most this share of the limit go at once: a burst spreads over the
# window, so a request that comes later (a high one, a poll) finds room within a second or so, not a
# whole period later.
PACE_SLICES = 8
VIRTUAL_GRANT = 1_000_000  # a weight-1 tenant's grant in virtual time (integers: exact ties, no drift)
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")  # a recording id's charset

# Shared by every script. KEYS: 1 window (all slots), 2-3 the slots of each kind, 4 the prefix of
# each tenant's submit line ('<4>:<tenant>': waiter -> order shifted by priority; '<4>' itself, the
# one submit line of the version before tenants, is adopted by release), 5 the poll line
# (waiter -> order), 6-7 each waiter's first refusal by kind (every waiter of the kind is there),
# 8 grants (hash 'kind:waiter' -> slot), 9 grant times ('kind:waiter' -> us), 10 slot counter,
# 11 planned, 12 waiting tenants (tenant -> tag: the virtual time of its next grant), 13 virtual
# time (field '#vtime') and where tenants that stopped waiting left off (tenant -> tag), 14 each
# waiting submit's tenant (hash waiter -> tenant), 15 the pace (when its next request is due, us).
# ARGV: 1 now us ('' = Redis's clock), 2 limit, 3 window us, 4-5 submit and poll shares of the
# window while both kinds wait, 6 grant ttl us, 7 each weighted tenant's cost of a grant in
# virtual time (json), 8 the cost for other tenants, 9 the pace: us between requests on average (0:
# unpaced), 10 the most it lets go at once; the script's own arguments follow.
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
  submit = {slots = KEYS[2], since = KEYS[6], other = 'poll', share = tonumber(ARGV[4])},
  poll = {slots = KEYS[3], since = KEYS[7], other = 'submit', share = tonumber(ARGV[5])},
}
local TENANTS, TAGS, TENANT_OF, VTIME = KEYS[12], KEYS[13], KEYS[14], '#vtime'
local function num(x) return string.format('%.17g', x) end
local pace_us, pace_burst = tonumber(ARGV[9]), tonumber(ARGV[10])
local paced = pace_us > 0

-- The pace (a GCRA, its state one time in KEYS[15]: when the pace's next request is due): a request
-- every pace_us on average, at most pace_burst at once. It only spreads the window's limit over the
-- window (pace_us is the window over the limit), so a request that comes later finds room soon.
local function pace_due()
  return math.max(tonumber(redis.call('GET', KEYS[15]) or '0'), now)
end

local function set_pace(due)
  redis.call('SET', KEYS[15], num(due), 'PX', math.ceil(window_us / 1000) + 60000)
end

-- How many requests may go now: the window's room, and (paced) the pace's.
local function room()
  local free = limit - redis.call('ZCARD', KEYS[1])
  if paced then
    free = math.min(free, math.floor((now + (pace_burst - 1) * pace_us - pace_due()) / pace_us) + 1)
  end
  return free
end

-- us until a request may go (0 when one may now): the window's oldest slot leaving it, and the pace.
local function next_room_us()
  local wait = 0
  if redis.call('ZCARD', KEYS[1]) >= limit then
    wait = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]) + window_us - now
  end
  if paced then wait = math.max(wait, pace_due() - (pace_burst - 1) * pace_us - now) end
  return wait
end

-- A slot freed without a request on it (an unused grant) gives its time back to the pace too (a
-- pace already caught up with now has nothing to give back: its burst is whole).
local function free_slot(kind, slot)
  redis.call('ZREM', KEYS[1], slot)
  redis.call('ZREM', KIND[kind].slots, slot)
  if paced then set_pace(math.max(pace_due() - pace_us, now)) end
end

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
  if paced then set_pace(pace_due() + pace_us) end
  return count(kind, redis.call('INCR', KEYS[10]))
end

-- While the other kind has waiters, a kind keeps to its share; alone it may use the whole window.
local function cap(kind)
  if redis.call('EXISTS', KIND[KIND[kind].other].since) == 1 then return KIND[kind].share end
  return limit
end

local function full(kind)
  return room() <= 0 or redis.call('ZCARD', KIND[kind].slots) >= cap(kind)
end

local costs
local function cost(tenant)  -- of a grant in virtual time: VIRTUAL_GRANT / the tenant's weight, an integer
  if costs == nil then costs = cjson.decode(ARGV[7]) end
  return tonumber(costs[tenant]) or tonumber(ARGV[8])
end

local function line(tenant) return KEYS[4] .. ':' .. tenant end

-- Byte order, as a sorted set orders equal scores (Lua's '<' on strings follows the locale).
local function name_before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- A submit joins its tenant's line; a tenant that starts waiting joins at the virtual time now, or
-- where it left off if that is later: no credit banked while idle.
local function join(tenant, waiter, score)
  redis.call('ZADD', line(tenant), score, waiter)
  redis.call('ZADD', KEYS[6], 'NX', num(now), waiter)
  redis.call('HSET', TENANT_OF, waiter, tenant)
  if not redis.call('ZSCORE', TENANTS, tenant) then
    local vtime = tonumber(redis.call('HGET', TAGS, VTIME) or '0')
    local left = tonumber(redis.call('HGET', TAGS, tenant) or '0')
    redis.call('ZADD', TENANTS, num(math.max(vtime, left)), tenant)
    redis.call('HDEL', TAGS, tenant)
  end
end

-- A submit leaves its tenant's line; a tenant whose line empties stops waiting, its tag kept for
-- when it comes back while others still wait. Once no submit waits, every tenant starts even.
-- Returns 1 if it was in the line.
local function leave_line(tenant, waiter)
  redis.call('ZREM', KEYS[6], waiter)
  redis.call('HDEL', TENANT_OF, waiter)
  local removed = redis.call('ZREM', line(tenant), waiter)
  if redis.call('EXISTS', line(tenant)) == 0 then
    local tag = redis.call('ZSCORE', TENANTS, tenant)
    if tag then
      redis.call('HSET', TAGS, tenant, tag)
      redis.call('ZREM', TENANTS, tenant)
      if redis.call('EXISTS', TENANTS) == 0 then
        local vtime = redis.call('HGET', TAGS, VTIME)
        redis.call('DEL', TAGS)
        if vtime then redis.call('HSET', TAGS, VTIME, vtime) end
      end
    end
  end
  return removed
end

-- A submit leaves whatever line it is in (granted, cancelled, sent).
local function leave_submit(waiter)
  local tenant = redis.call('HGET', TENANT_OF, waiter)
  if not tenant then
    redis.call('ZREM', KEYS[6], waiter)
    return 0
  end
  return leave_line(tenant, waiter)
end

local function leave_queue(kind, waiter)
  if kind == 'submit' then return leave_submit(waiter) end
  redis.call('ZREM', KEYS[7], waiter)
  return redis.call('ZREM', KEYS[5], waiter)
end

-- The submit the policy serves next: the head of the line of the tenant with the lowest tag
-- (tenant, waiter, tag; nil when no submit waits).
local function pick_submit()
  while true do
    local first = redis.call('ZRANGE', TENANTS, 0, 0, 'WITHSCORES')
    if not first[1] then return nil, nil, nil end
    local waiter = redis.call('ZRANGE', line(first[1]), 0, 0)[1]
    if waiter then return first[1], waiter, tonumber(first[2]) end
    redis.call('ZREM', TENANTS, first[1])  -- not reached: a tenant waits while its line is not empty
  end
end

-- The pick is served: its tenant's tag moves on by its cost. Returns the tag served: the virtual
-- time now, which the caller stores (once per script).
local function serve_submit(tenant, waiter, tag)
  redis.call('ZADD', TENANTS, num(tag + cost(tenant)), tenant)
  leave_line(tenant, waiter)
  return tag
end

local function head(kind)
  if kind == 'submit' then
    local _, waiter = pick_submit()
    return waiter
  end
  return redis.call('ZRANGE', KEYS[5], 0, 0)[1]
end

-- Waiters of the version before tenants, in the one submit line: the default tenant's, in order.
local function adopt_untenanted()
  if redis.call('EXISTS', KEYS[4]) == 0 then return end
  local old = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
  for i = 1, #old, 2 do join('default', old[i], old[i + 1]) end
  redis.call('DEL', KEYS[4])
end
"""

# ARGV 11 kind, 12 waiter, 13 tenant, 14 order ('' = now), 15 priority shift us (0 for a poll unless
# poll_priorities), 16 '1' to join the wait list when refused. Returns 2 sent on a grant, 1 took a
# free slot, 0 refused (and waits, if it joined or was already waiting).
_TAKE = _PRELUDE + """
trim()
local kind, waiter = ARGV[11], ARGV[12]
local field = kind .. ':' .. waiter
local granted_slot = redis.call('HGET', KEYS[8], field)
if granted_slot then
  -- Its waiter is here, late or not: while release has not given the grant up (and its slot is
  -- still in the window), it is this request's to use.
  redis.call('HDEL', KEYS[8], field)
  redis.call('ZREM', KEYS[9], field)
  if redis.call('ZSCORE', KEYS[1], granted_slot) then
    count(kind, granted_slot)  -- from the real send now, later than the grant: conservative
    leave_queue(kind, waiter)  -- a duplicate of this request queued meanwhile is this request
    return 2
  end
end
local order = (ARGV[14] ~= '' and tonumber(ARGV[14]) or now) + tonumber(ARGV[15])
if kind == 'poll' then
  local ahead = redis.call('ZRANK', KEYS[5], waiter)
  local queued = ahead ~= false
  if not queued then
    ahead = redis.call('ZCOUNT', KEYS[5], '-inf', num(order))
    if ahead > 0 or full(kind) then
      if ARGV[16] == '1' then
        redis.call('ZADD', KEYS[5], num(order), waiter)
        redis.call('ZADD', KEYS[7], num(now), waiter)
      end
      return 0
    end
  elseif ahead > 0 or full(kind) then
    return 0
  end
  add_slot(kind)
  if queued then leave_queue(kind, waiter) end
  return 1
end
-- A submit: at once only when no submit waits; else in its tenant's line, going now only as the pick.
if redis.call('HEXISTS', TENANT_OF, waiter) == 0 then
  if redis.call('EXISTS', KEYS[6]) == 0 then
    if full(kind) then
      if ARGV[16] == '1' then join(ARGV[13], waiter, num(order)) end
      return 0
    end
    add_slot(kind)
    return 1
  end
  if ARGV[16] ~= '1' then return 0 end
  join(ARGV[13], waiter, num(order))
end
if full(kind) then return 0 end
local tenant, pick, tag = pick_submit()
if pick ~= waiter then return 0 end
redis.call('HSET', TAGS, VTIME, num(serve_submit(tenant, waiter, tag)))
add_slot(kind)
return 1
"""

# ARGV 11 most grants (0 = as many as are free). Returns {granted kind, waiter, ...}, {expired
# 'kind:waiter', ...}, us until a request may go (0 when one may now), waiters left,
# grants not yet used.
_RELEASE = _PRELUDE + """
trim()
adopt_untenanted()
-- Grants nobody came back for: given up, and their slots freed. No request went out on them: a
-- grant is deleted in the same step that uses it, so one still here was never used.
local cutoff = num(now - grant_ttl_us)
local expired = redis.call('ZRANGEBYSCORE', KEYS[9], '-inf', cutoff)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', cutoff)
  for _, field in ipairs(expired) do
    local slot = redis.call('HGET', KEYS[8], field)
    redis.call('HDEL', KEYS[8], field)
    if slot then free_slot(string.match(field, '^(%a+):'), slot) end
  end
end
local free = room()
if tonumber(ARGV[11]) > 0 then free = math.min(free, tonumber(ARGV[11])) end
local in_use = {submit = redis.call('ZCARD', KEYS[2]), poll = redis.call('ZCARD', KEYS[3])}
local waiting = {submit = redis.call('ZCARD', KEYS[6]), poll = redis.call('ZCARD', KEYS[7])}
local granted = {}
local vtime
while free > 0 and (waiting.submit > 0 or waiting.poll > 0) do
  local kind
  if waiting.submit == 0 then
    kind = 'poll'
  elseif waiting.poll == 0 then
    kind = 'submit'
  else
    -- Both wait: the kind using less of its share; on a tie, the older first refusal of the two next.
    local s = in_use.submit / KIND.submit.share
    local p = in_use.poll / KIND.poll.share
    if s == p then
      local next_submit, next_poll = head('submit'), head('poll')
      local since_s = next_submit and tonumber(redis.call('ZSCORE', KEYS[6], next_submit)) or -math.huge
      local since_p = next_poll and tonumber(redis.call('ZSCORE', KEYS[7], next_poll)) or -math.huge
      if since_s <= since_p then kind = 'submit' else kind = 'poll' end
    elseif s < p then
      kind = 'submit'
    else
      kind = 'poll'
    end
    if in_use[kind] >= KIND[kind].share then break end  -- only when limit is 1: both shares are the slot
  end
  local waiter
  if kind == 'submit' then
    local tenant, tag
    tenant, waiter, tag = pick_submit()
    if waiter then vtime = serve_submit(tenant, waiter, tag) end
  else
    waiter = redis.call('ZPOPMIN', KEYS[5])[1]
    if waiter then redis.call('ZREM', KEYS[7], waiter) end
  end
  if waiter then
    local slot = add_slot(kind)
    redis.call('HSET', KEYS[8], kind .. ':' .. waiter, slot)
    redis.call('ZADD', KEYS[9], num(now), kind .. ':' .. waiter)
    granted[#granted + 1] = kind
    granted[#granted + 1] = waiter
    waiting[kind] = waiting[kind] - 1
    in_use[kind] = in_use[kind] + 1
    free = free - 1
  else
    waiting[kind] = 0  -- first refusals left without a line (not reached): none to grant
  end
end
if vtime then redis.call('HSET', TAGS, VTIME, num(vtime)) end
return {granted, expired, next_room_us(), waiting.submit + waiting.poll, redis.call('ZCARD', KEYS[9])}
"""

# ARGV 11 waiter, 12.. kinds. Drops the waiter from those wait lists and its unused grants (freeing
# their slots: no request went out on them, and a late task now needs a new slot). Returns how many.
_CANCEL = _PRELUDE + """
local waiter = ARGV[11]
local dropped = 0
for i = 12, #ARGV do
  local kind = ARGV[i]
  dropped = dropped + leave_queue(kind, waiter)
  local slot = redis.call('HGET', KEYS[8], kind .. ':' .. waiter)
  if slot then
    redis.call('HDEL', KEYS[8], kind .. ':' .. waiter)
    redis.call('ZREM', KEYS[9], kind .. ':' .. waiter)
    free_slot(kind, slot)
    dropped = dropped + 1
  end
end
return dropped
"""

# ARGV 11 waiter. Returns how many submit grants come before the waiting submit ``waiter`` if nobody
# else joined (-1: it waits for no submit): its rank in its tenant's line, plus for every other
# waiting tenant its grants whose tags come before this waiter's, at most its waiters.
_POSITION = _PRELUDE + """
local waiter = ARGV[11]
local tenant = redis.call('HGET', TENANT_OF, waiter)
if not tenant then return -1 end
local rank = redis.call('ZRANK', line(tenant), waiter)
local tag = redis.call('ZSCORE', TENANTS, tenant)
if not rank or not tag then return -1 end
local due = tonumber(tag) + rank * cost(tenant)
local before = rank
local others = redis.call('ZRANGE', TENANTS, 0, -1, 'WITHSCORES')
for i = 1, #others, 2 do
  local other = others[i]
  if other ~= tenant then
    -- The other's j-th grant has tag t + j * cost: those before 'due', and on a tie the lower name's.
    local d, c = due - tonumber(others[i + 1]), cost(other)
    local n = 0
    if d > 0 then n = math.floor((d - 1) / c) + 1 end
    if d >= 0 and d % c == 0 and name_before(other, tenant) then n = n + 1 end
    if n > 0 then before = before + math.min(n, redis.call('ZCARD', line(other))) end
  end
end
return before
"""

# ARGV 11 how long a plan outlives its time us. Returns used, submits waiting, polls waiting,
# requests planned up to a period ahead (those already due but not yet made included), grants
# outstanding, us since the oldest waiter's first refusal (-1: nobody waits), us until a request
# may go (0 when one may now).
_LOAD = _PRELUDE + """
trim()
redis.call('ZREMRANGEBYSCORE', KEYS[11], '-inf', num((now - tonumber(ARGV[11])) / 1000000))
local oldest = -1
for _, key in ipairs({KEYS[6], KEYS[7]}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
  if first then oldest = math.max(oldest, now - tonumber(first)) end
end
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[6]), redis.call('ZCARD', KEYS[7]),
        redis.call('ZCOUNT', KEYS[11], '-inf', num((now + window_us) / 1000000)),
        redis.call('ZCOUNT', KEYS[9], '(' .. num(now - grant_ttl_us), '+inf'), oldest, next_room_us()}
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
    """The fleet-wide budget of ``rate`` requests, shared by every worker through Redis under ``key``.

    ``tenant_weights`` (tenant -> weight, else ``default_weight``) share the submits between waiting
    tenants; ``aging_s`` (three periods unless told) is how much longer a request must have waited
    to rank as one priority class higher within its tenant. The module's docstring has the policy.
    ``poll_priorities`` (on unless told) places polls by priority too, as a tenant's submits are but
    across all tenants (shifted by ``aging_s``); off, polls are first come, first served. ``slices``:
    the pace lets at most ``ceil(limit / slices)`` requests go at once (1: unpaced).
    """

    def __init__(self, redis: Any, rate: Rate, *, key: str, safety_s: float = SAFETY_S,
                 submit_share: float = DEFAULT_SUBMIT_SHARE, grant_ttl_s: float = GRANT_TTL_S,
                 tenant_weights: Mapping[str, float] | None = None, default_weight: float = 1.0,
                 aging_s: float | None = None, poll_priorities: bool = True, slices: int = PACE_SLICES) -> None:
        if not 0.0 < submit_share < 1.0:
            raise ValueError(f"submit_share must be between 0 and 1, got {submit_share}")
        self.tenant_weights = {_check_tenant(tenant): _check_weight(weight, f"the weight of tenant {tenant!r}")
                               for tenant, weight in (tenant_weights or {}).items()}
        self.default_weight = _check_weight(default_weight, "default_weight")
        self.aging_s = AGING_PERIODS * rate.period_s if aging_s is None else float(aging_s)
        if not 0.0 < self.aging_s < 10 * 365 * 86400:
            raise ValueError(f"aging_s must be positive and under ten years, got {aging_s}")
        aging_us = int(self.aging_s * 1_000_000)
        self.priority_shift_us = {"high": -aging_us, "normal": 0, "low": aging_us}
        self.poll_priorities = poll_priorities
        self.rate = rate
        self.redis = redis
        self.window_us = int((rate.period_s + safety_s) * 1_000_000)
        if not 1 <= slices <= 1000:
            raise ValueError(f"slices must be 1 to 1000, got {slices}")
        # The pace: one request every window / limit on average (the window's own rate, so it costs
        # no throughput while requests wait), at most ceil(limit / slices) at once; 1 slice: unpaced.
        self.slices = slices
        self.pace_burst = math.ceil(rate.limit / slices)
        self.pace_us = self.window_us // rate.limit if self.pace_burst < rate.limit else 0
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
                     f"{key}:granted", f"{key}:seq", f"{key}:planned", f"{key}:tenants", f"{key}:tags",
                     f"{key}:tenant-of", f"{key}:pace"]
        self._costs = json.dumps({tenant: _cost(weight) for tenant, weight in self.tenant_weights.items()},
                                 sort_keys=True)
        self._default_cost = _cost(self.default_weight)
        self._take = redis.register_script(_TAKE)
        self._release = redis.register_script(_RELEASE)
        self._cancel = redis.register_script(_CANCEL)
        self._position = redis.register_script(_POSITION)
        self._load = redis.register_script(_LOAD)

    def _args(self, now_us: int | None, *rest: Any) -> list[Any]:
        return ["" if now_us is None else int(now_us), self.rate.limit, self.window_us, self.shares[SUBMIT],
                self.shares[POLL], self.grant_ttl_us, self._costs, self._default_cost, self.pace_us, self.pace_burst,
                *rest]

    def weight(self, tenant: str) -> float:
        """``tenant``'s weight in the shares between waiting tenants."""
        return self.tenant_weights.get(tenant, self.default_weight)

    def take(self, kind: str, waiter: str, *, tenant: str = DEFAULT_TENANT, priority: str = "normal",
             order: float | None = None, queue: bool = True, now_us: int | None = None) -> bool:
        """Take a slot for ``waiter``'s request of ``kind``: True, send it now; False, it waits in Redis.

        True when the waiter holds a grant (its slot now counts from this moment), or when a slot is
        free, its kind is within its share and it goes next: a poll with no poll ahead of it, a
        submit when no submit waits or when the policy picks it next. False records it in its wait
        list (a submit in its ``tenant``'s, placed by ``priority``), keeping its place if already
        there (under the tenant and priority it first waited with): end the task, ``release`` wakes
        it. ``order`` places a new waiter among its tenant's same-priority ones, or among the polls
        (lower first; default its first refusal time, us on Redis's clock, the scale ``aging_s``
        shifts). With ``queue=False`` a refused caller is not written down (one with no task to wake).
        Polls are first come, first served whatever their ``tenant`` and (unless ``poll_priorities``)
        ``priority``.
        """
        _check_kind(kind)
        _check_tenant(tenant)
        shift_us = self.priority_shift_us.get(priority)
        if shift_us is None:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
        if kind == POLL and not self.poll_priorities:
            shift_us = 0
        order_arg = "" if order is None else repr(float(order))
        return int(self._take(keys=self.keys, args=self._args(now_us, kind, waiter, tenant, order_arg, shift_us,
                                                              "1" if queue else "0"))) > 0

    def release(self, *, max_grants: int | None = None, now_us: int | None = None) -> Release:
        """Grant every free slot (at most ``max_grants``) to the next waiters by the policy, shares kept;
        enqueue their tasks."""
        granted, expired, next_free_us, waiting, outstanding = self._release(keys=self.keys,
                                                                             args=self._args(now_us, max_grants or 0))
        pairs = [(text(granted[i]), text(granted[i + 1])) for i in range(0, len(granted), 2)]
        lost = [(kind, waiter) for kind, _, waiter in (text(field).partition(":") for field in expired)]
        return Release(pairs, lost, int(next_free_us) / 1_000_000, int(waiting), int(outstanding))

    def cancel(self, waiter: str, kind: str | None = None, *, now_us: int | None = None) -> bool:
        """Drop ``waiter`` from the wait list of ``kind`` (both when None; whatever its tenant and
        priority) and its unused grant: True if any."""
        kinds = KINDS if kind is None else (_check_kind(kind),)
        return int(self._cancel(keys=self.keys, args=self._args(now_us, waiter, *kinds))) > 0

    def position(self, waiter: str, kind: str) -> int | None:
        """How many grants of its kind come before ``waiter`` (0: next); None when it is not waiting.

        A poll: its place in the poll line. A submit: the grants before it under the policy if
        nobody else joined (its tenant's line, the other waiting tenants' by their weights): newcomers
        of an idle tenant or of a higher priority may still come first.
        """
        if _check_kind(kind) == POLL:
            rank = self.redis.zrank(self.keys[4], waiter)
            return None if rank is None else int(rank)
        place = int(self._position(keys=self.keys, args=self._args(None, waiter)))
        return None if place < 0 else place

    def holds(self, waiter: str) -> str | None:
        """The kind ``waiter`` waits for or holds an unused grant of; None when neither (sent, or lost)."""
        pipe = self.redis.pipeline(transaction=False)
        for kind in KINDS:
            pipe.zscore(self.keys[5 if kind == SUBMIT else 6], waiter)
            pipe.hexists(self.keys[7], f"{kind}:{waiter}")
        answers = pipe.execute()
        for i, kind in enumerate(KINDS):
            if answers[2 * i] is not None or answers[2 * i + 1]:
                return kind
        return None

    def tenant_of(self, waiter: str) -> str | None:
        """The tenant whose line the submit ``waiter`` waits in; None when it waits for no submit."""
        tenant = self.redis.hget(self.keys[13], waiter)
        return None if tenant is None else text(tenant)

    def tenants_waiting(self) -> dict[str, int]:
        """How many submits each waiting tenant has in line, the tenant due next first."""
        tenants = [text(t) for t in self.redis.zrange(self.keys[11], 0, -1)]
        pipe = self.redis.pipeline(transaction=False)
        for tenant in tenants:
            pipe.zcard(f"{self.keys[3]}:{tenant}")
        return {tenant: int(n) for tenant, n in zip(tenants, pipe.execute(), strict=True) if n}

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


def parse_tenant_weights(text: str) -> dict[str, float]:
    """``'acme=3,beta=1'`` (``PLAUD_TENANT_WEIGHTS``) as ``{'acme': 3.0, 'beta': 1.0}``; '' is ``{}``."""
    weights: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        tenant, sep, value = (s.strip() for s in item.partition("="))
        if not sep:
            raise ValueError(f"tenant weights are written 'tenant=weight,...', got {item!r}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"the weight of tenant {tenant!r} must be a number, got {value!r}") from None
        weights[_check_tenant(tenant)] = _check_weight(weight, f"the weight of tenant {tenant!r}")
    return weights


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be {SUBMIT!r} or {POLL!r}, got {kind!r}")
    return kind


def _check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
        raise ValueError(f"tenant must be 1-128 letters, digits, '.', '_', ':' or '-' (not first), got {tenant!r}")
    return tenant


def _check_weight(weight: float, what: str) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 1e-3 <= float(weight) <= 1e3:
        raise ValueError(f"{what} must be a number from 0.001 to 1000, got {weight!r}")
    return float(weight)


def _cost(weight: float) -> int:
    return max(round(VIRTUAL_GRANT / weight), 1)


