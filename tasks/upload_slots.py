"""Just-in-time uploads: a recording is uploaded only when its submit is near enough that the
DownloadUrl Plaud gives it will still be valid then.

Plaud's DownloadUrl lives about a day and cannot be re-signed; the fleet submits at most the
submit share of its budget per period. So at most ``capacity`` recordings — what the budget can
submit within ``upload_lead_s`` — may be uploaded (or uploading) and not yet submitted: these
hold a slot, in the ``ahead`` set. A recording that finds no slot waits as data in the ``waiting``
list (first come, first served) and its task ends; the dispatcher (``tasks.dispatch``) pulls the
next ones as slots free, when their recordings are submitted or end. A deep backlog therefore
waits before its upload, not after it, and no DownloadUrl expires in the queue.

A slot is held until the recording's submit (or its end); one whose recording vanished without
either is dropped after ``stale_after_s`` (by then its URL has expired anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plaud.keys import text

from .names import UPLOADS_AHEAD, UPLOADS_WAITING

# KEYS: 1 ahead (id -> taken at), 2 waiting (id -> order). ARGV: 1 now s, 2 capacity, 3 id,
# 4 order, 5 stale before s. Returns 1 when the id holds a slot, else 0 (and it waits).
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[5])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 1 end
local first = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) and (first == nil or first == ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 1
end
redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[3])
return 0
"""

# KEYS as above. ARGV: 1 now s, 2 capacity, 3 stale before s. Moves the next waiters into free
# slots; returns their ids.
_RELEASE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free <= 0 then return {} end
local popped = redis.call('ZPOPMIN', KEYS[2], free)
local ids = {}
for i = 1, #popped, 2 do
  redis.call('ZADD', KEYS[1], ARGV[1], popped[i])
  ids[#ids + 1] = popped[i]
end
return ids
"""


@dataclass(frozen=True)
class UploadQueue:
    """How the upload wait looks now, for ``status``."""

    capacity: int
    ahead: int  # uploaded or uploading, not yet submitted
    waiting: int


class UploadSlots:
    def __init__(self, redis: Any, *, capacity: int, stale_after_s: float) -> None:
        self.redis = redis
        self.capacity = capacity
        self.stale_after_s = stale_after_s
        self.keys = [UPLOADS_AHEAD, UPLOADS_WAITING]
        self._take = redis.register_script(_TAKE)
        self._release = redis.register_script(_RELEASE)

    def take(self, recording_id: str, *, order: float, now: float) -> bool:
        """True: upload now (a slot is held until ``done``). False: it waits, in ``order``, for ``release``."""
        return bool(self._take(keys=self.keys, args=[now, self.capacity, recording_id, order,
                                                     now - self.stale_after_s]))

    def release(self, *, now: float) -> list[str]:
        """Give the free slots to the next waiters; returns their ids (enqueue their uploads)."""
        ids = self._release(keys=self.keys, args=[now, self.capacity, now - self.stale_after_s])
        return [text(i) for i in ids]

    def done(self, recording_id: str) -> None:
        """The recording was submitted or ended: its slot (or its place in line) is free."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(self.keys[0], recording_id)
        pipe.zrem(self.keys[1], recording_id)
        pipe.execute()

    def position(self, recording_id: str) -> int | None:
        """How many uploads wait before this one (0: next); None when it is not waiting."""
        rank = self.redis.zrank(self.keys[1], recording_id)
        return None if rank is None else int(rank)

    def queue(self) -> UploadQueue:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.keys[0])
        pipe.zcard(self.keys[1])
        ahead, waiting = pipe.execute()
        return UploadQueue(self.capacity, int(ahead), int(waiting))
