"""A task's state in Celery's result backend, written in the round trip of the record's own write.

The entry stores STARTED under its id when it creates its recording's record, and deliver stores
the transcript (SUCCESS) under that id when it moves the record to SUCCEEDED. Celery's backend
takes two round trips for each, besides the record's: ``_store_result`` reads the stored state,
then writes, so that a lost or redelivered task never overwrites a SUCCESS. When the results are
kept in the records' Redis (``CELERY_RESULT_BACKEND`` unset, or the same URL as ``REDIS_URL``, as
written) and encoded as JSON, a script sent in the record write's pipeline does that read and
write instead: one round trip in all, with nothing between the check and the write. Otherwise
``store_with_record`` gives None, and Celery's backend stores the state as before.

What the script writes is what Celery's backend would: the state it builds from the same request
and encodes, at its key, with its expiry, published on that key for callers waiting on the
result. One difference: the state is written before the task's return, so its ``children`` do
not list what Celery sends after a return (a link callback) or the task sends later (deliver's
webhook).
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.backends.redis import RedisBackend

from .names import record_key
from .records import RecordingState
from .redis_connection import ScriptCall

# Celery's rule, in one step: never over a stored SUCCESS, nor over a value that is not a state it
# can read. With a record state to require, only while the record is in it (deliver's SUCCESS
# only with a record that succeeded, not one cancelled meanwhile).
# KEYS: 1 the task's result key, 2 its recording's record. ARGV: 1 the encoded state, 2 its expiry
# in seconds ('': none), 3 the state the record must be in ('': any). Returns 1 when written.
_STORE_UNLESS_SUCCESS = """
if ARGV[3] ~= '' and redis.call('HGET', KEYS[2], 'state') ~= ARGV[3] then return 0 end
local stored = redis.call('GET', KEYS[1])
if stored then
  local ok, meta = pcall(cjson.decode, stored)
  if not ok or type(meta) ~= 'table' or meta['status'] == 'SUCCESS' then return 0 end
end
if ARGV[2] == '' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""

# The states written this way. A failure keeps Celery's own path (its expiry and traceback).
WRITTEN_STATES = frozenset({states.STARTED, states.SUCCESS})


class TaskResults:
    """Task states written with a record's write, when Celery keeps its results in the records'
    Redis ``redis`` (``in_records_redis``)."""

    def __init__(self, redis: Any, *, in_records_redis: bool) -> None:
        self.in_records_redis = in_records_redis
        self._store = redis.register_script(_STORE_UNLESS_SUCCESS)

    def store_with_record(self, backend: Any, request: Any, result: Any, state: str, *, recording_id: str,
                          only_if: RecordingState | None = None) -> ScriptCall | None:
        """Storing ``result`` in ``state`` (STARTED or SUCCESS) for the task of ``request``, as
        ``backend.store_result`` would, as a call to send after the record's write (``only_if``:
        while the record is in that state). None when the script cannot stand in for ``backend``:
        results kept elsewhere or not as JSON, or an eager run."""
        assert state in WRITTEN_STATES, state
        in_redis = isinstance(backend, RedisBackend)  # a bool apart: Celery's stubs lack what is read next
        kept_as_json_in_redis = in_redis and backend.serializer == "json" and not backend.compression
        if not (self.in_records_redis and kept_as_json_in_redis) or request.is_eager or not request.id:
            return None
        meta = backend._get_result_meta(result=backend.encode_result(result, state), state=state, traceback=None,
                                        request=request)
        meta["task_id"] = request.id
        return ScriptCall(self._store, [backend.get_key_for_task(request.id), record_key(recording_id)],
                          [backend.encode(meta), backend.expires or "", "" if only_if is None else only_if.value])
