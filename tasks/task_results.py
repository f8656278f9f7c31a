"""A task's state in Celery's result backend, written in the round trip of the record's own write.

The entry stores STARTED under its id when it creates its recording's record, and deliver stores
the transcript (SUCCESS) under that id when it moves the record to SUCCEEDED. Celery's backend
takes two round trips for each, besides the record's: ``_store_result`` reads the stored state,
then writes, so that a lost or redelivered task never overwrites a SUCCESS. When the results are
kept in the records' Redis (``CELERY_RESULT_BACKEND`` unset, or the same URL as ``REDIS_URL``), a
script sent in the record write's pipeline does that read and write instead: one round trip in
all, with nothing between the check and the write. Otherwise ``along`` gives None, and the
caller stores through Celery's backend as before.

What the script writes is Celery's own: the state its backend builds and encodes, at the key and
with the expiry it uses, published on that key for callers waiting on the result.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend

from .names import record_key
from .records import RecordingState
from .redis_connection import ScriptCall

# Celery's rule, in one step: never over a stored SUCCESS. With a state to require, only while the
# record is in it (deliver's SUCCESS only with a record that succeeded, not one cancelled meanwhile).
# KEYS: 1 the task's result key, 2 its recording's record. ARGV: 1 the encoded state, 2 its expiry
# in seconds ('': none), 3 the state the record must be in ('': any). Returns 1 when written.
_STORE_UNLESS_SUCCESS = """
if ARGV[3] ~= '' and redis.call('HGET', KEYS[2], 'state') ~= ARGV[3] then return 0 end
local stored = redis.call('GET', KEYS[1])
if stored then
  local ok, meta = pcall(cjson.decode, stored)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return 0 end
end
if ARGV[2] == '' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class TaskResults:
    """Writes of a task's state that travel with a record's write (``in_records_redis``: whether
    Celery keeps its results in the Redis ``redis`` is)."""

    def __init__(self, redis: Any, *, in_records_redis: bool) -> None:
        self.in_records_redis = in_records_redis
        self._store = redis.register_script(_STORE_UNLESS_SUCCESS)

    def along(self, backend: Any, task_id: str, result: Any, state: str, *, recording_id: str, request: Any = None,
              only_if: RecordingState | None = None) -> ScriptCall | None:
        """Storing ``result`` in ``state`` under ``task_id``, as ``backend.store_result`` would, as a call
        to send after the record's write (``only_if``: while the record is in that state); None when
        ``backend`` keeps results elsewhere."""
        kept_in_redis = isinstance(backend, RedisBackend)  # Sentinel's too; not a cache, a database, ...
        if not (self.in_records_redis and kept_in_redis):
            return None
        meta = backend._get_result_meta(result=backend.encode_result(result, state), state=state, traceback=None,
                                        request=request)
        meta["task_id"] = task_id
        return ScriptCall(self._store, [backend.get_key_for_task(task_id), record_key(recording_id)],
                          [backend.encode(meta), backend.expires or "", "" if only_if is None else only_if.value])
