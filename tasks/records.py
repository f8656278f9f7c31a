"""The recording record: one Redis hash per recording, the pipeline's source of truth.

State machine: ``QUEUED → UPLOADING → UPLOADED → SUBMITTED → PROCESSING → SUCCEEDED | FAILED``,
and ``CANCELLED`` from any live state,
each transition timestamped (``at_<STATE>``). The record holds what resumes the work (upload
progress, Plaud ids, the DownloadUrl and its expiry, the transcription id, the next poll time,
attempts) and, on failure, its kind and a reason a person can act on (``tasks.failures``).

Values that may be secret (the source, which may be a presigned URL; the webhook URL; upload
progress with presigned URLs; the DownloadUrl) are sealed before they reach Redis. Two indexes serve the
reconciler (``due``: when each live recording's next step is due) and listings (``recent``).
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plaud.auth import DELETE_IF_EQUAL
from plaud.keys import text
from plaud.sealing import Sealer

from .metrics import OBSERVE_LUA, Observations, observation_arguments
from .names import (
    DEFAULT_TENANT,
    DUE_INDEX,
    ENDED_BY_TENANT,
    IN_STATE_PREFIX,
    LIVE_BY_TENANT,
    RECENT_INDEX,
    lease_key,
    record_key,
)
from .redis_connection import ScriptCall, run_in_order

SEALED_FIELDS = ("source", "webhook_url", "upload_progress", "download_url")
JSON_FIELDS = ("params", "metadata", "failure", "transcript", "result", "transcoded", "cancelled")


# Not StrEnum: that would change str() and f-strings of a member from 'RecordingState.X' to 'X'.
class RecordingState(str, enum.Enum):  # noqa: UP042
    QUEUED = "QUEUED"
    UPLOADING = "UPLOADING"
    UPLOADED = "UPLOADED"
    SUBMITTED = "SUBMITTED"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({RecordingState.SUCCEEDED, RecordingState.FAILED, RecordingState.CANCELLED})


# Create only if absent; returns 1 when created, else the existing state.
# KEYS: 1 the record, 2 the due index, 3 the recent index, 4 the prefix of the live-state sets, 5
# live counts by state and tenant. ARGV: 1 due at, 2 recording id, 3 the default tenant, 4.. fields.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HGET', KEYS[1], 'state') end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
local tenant = redis.call('HGET', KEYS[1], 'tenant') or ARGV[3]
redis.call('ZADD', KEYS[4] .. 'QUEUED', redis.call('HGET', KEYS[1], 'created_at'), ARGV[2])
redis.call('HINCRBY', KEYS[5], 'QUEUED|' .. tenant, 1)
return 1
"""

# Move to a new state unless the record is already terminal (or missing); returns the old state,
# and the followers to tell when this move ended the recording.
# Keeps the metrics' view of it in the same step: which live state it is in since when, the live
# counts by state and tenant, and the count of recordings that ended in each state. A record that
# ends gets its expiry, one that is reopened loses it, and fields named to clear go, all in the
# same step (one round trip).
# A stage's last write also gives back its stage lease (if still its holder's), and records the
# histograms' observations of what the stage measured, so that the stage ends in one round trip
# rather than three. The lease goes whether or not the move applies; the observations count only
# with a move that changes the state (once per recording, not again on a redelivered stage).
# KEYS: 1-5 as for create, 6 ended counts by state and tenant, 7 the stage lease, 8.. histograms.
# ARGV: 1 state, 2 now, 3 due at ('': none), 4 '1' to reopen a terminal record, 5 recording id, 6
# the default tenant, 7 the expiry (s) of an ended record, 8 the lease holder to release ('':
# none), 9 how many fields to clear, 10.. their names, then a (bucket field, value) pair for each
# histogram, then the fields to set.
_TRANSITION = OBSERVE_LUA + """
local function terminal(s) return s == 'SUCCEEDED' or s == 'FAILED' or s == 'CANCELLED' end
if ARGV[8] ~= '' and redis.call('GET', KEYS[7]) == ARGV[8] then redis.call('DEL', KEYS[7]) end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if terminal(state) and ARGV[4] ~= '1' then return {state, false} end
local cleared = tonumber(ARGV[9])
local observed = 10 + cleared  -- the first observation's bucket field
local first = observed + 2 * (#KEYS - 7)
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'at_' .. ARGV[1], ARGV[2], 'updated_at', ARGV[2], unpack(ARGV, first))
if cleared > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 10, observed - 1)) end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[5])
if ARGV[3] == '' then redis.call('ZREM', KEYS[2], ARGV[5]) else redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5]) end
if terminal(ARGV[1]) then
  redis.call('EXPIRE', KEYS[1], ARGV[7])
elseif terminal(state) then
  redis.call('PERSIST', KEYS[1])  -- live again (a deliberate retry): no expiry until it ends
end
if state ~= ARGV[1] then
  local tenant = redis.call('HGET', KEYS[1], 'tenant') or ARGV[6]
  if not terminal(state) then
    redis.call('ZREM', KEYS[4] .. state, ARGV[5])
    redis.call('HINCRBY', KEYS[5], state .. '|' .. tenant, -1)
  end
  if terminal(ARGV[1]) then
    redis.call('HINCRBY', KEYS[6], ARGV[1] .. '|' .. tenant, 1)
  else
    redis.call('ZADD', KEYS[4] .. ARGV[1], ARGV[2], ARGV[5])
    redis.call('HINCRBY', KEYS[5], ARGV[1] .. '|' .. tenant, 1)
  end
  for i = 8, #KEYS do observe(KEYS[i], ARGV[observed + 2 * (i - 8)], ARGV[observed + 2 * (i - 8) + 1]) end
end
if terminal(ARGV[1]) then return {state, redis.call('HGET', KEYS[1], 'followers')} end
return {state, false}
"""

# A second caller of a live recording: its task id joins the record's followers (comma-separated),
# whom the recording's end tells (``RecordStore.end``). Checked and added in one step, so a
# recording that ends meanwhile is seen ended rather than leaving its follower untold.
# KEYS: 1 the record. ARGV: 1 the task id, 2 the most followers kept. Returns {state, 1 if the
# task id is (now) a follower}; false when there is no record.
_FOLLOW = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state == 'SUCCEEDED' or state == 'FAILED' or state == 'CANCELLED' then return {state, 0} end
local followers = redis.call('HGET', KEYS[1], 'followers')
if not followers then
  redis.call('HSET', KEYS[1], 'followers', ARGV[1])
  return {state, 1}
end
if string.find(',' .. followers .. ',', ',' .. ARGV[1] .. ',', 1, true) then return {state, 1} end
local _, commas = string.gsub(followers, ',', '')
if commas + 1 >= tonumber(ARGV[2]) then return {state, 0} end
redis.call('HSET', KEYS[1], 'followers', followers .. ',' .. ARGV[1])
return {state, 1}
"""

# An upload's checkpoint, unless the recording was cancelled meanwhile: its progress, its due time
# and its stage lease renewed, in one step. Returns the state it found (false: no record; nothing
# is written to a cancelled record).
# KEYS: 1 the record, 2 the due index, 3 the lease. ARGV: 1 due at, 2 recording id, 3 lease ttl
# (ms), 4.. fields.
_CHECKPOINT = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'CANCELLED' then return state end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return state
"""


def followers_in(kept: bytes | str | None) -> tuple[str, ...]:
    """The task ids in a record's ``followers`` field (comma-separated, as ``_FOLLOW`` keeps them)."""
    return tuple(text(kept).split(",")) if kept else ()


@dataclass(frozen=True)
class Ended:
    """What a move to a terminal state found: the previous state (None: no record) and, when this
    move ended the recording, the task ids of its followers (the callers who enqueued it again)."""

    previous: RecordingState | None
    followers: tuple[str, ...] = ()


@dataclass
class StageLease:
    """A stage run's hold on its recording's lease (``holder`` is the task id), as
    ``StageTask.leased`` took it. The stage's last write may give it back in the same round trip
    (``RecordStore.transition(lease=...)``); ``leased`` releases whatever is still held."""

    holder: str
    held: bool


@dataclass
class Record:
    recording_id: str
    state: RecordingState
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    def number(self, name: str, default: float = 0.0) -> float:
        value = self.fields.get(name)
        return float(value) if value not in (None, "") else default

    def public(self) -> dict[str, Any]:
        """What may be shown to a person or a caller: no sealed value, no progress internals."""
        hidden = set(SEALED_FIELDS) | {"result", "transcript", "poll_token", "task_id", "followers"}
        data = {k: v for k, v in self.fields.items() if k not in hidden}
        data.update(recording_id=self.recording_id, state=self.state.value)
        if self.fields.get("source_shown"):
            data["source"] = self.fields["source_shown"]
        return data


class RecordStore:
    def __init__(self, redis: Any, sealer: Sealer, *, ttl_s: int) -> None:
        self.redis = redis
        self.sealer = sealer
        self.ttl_s = ttl_s
        self._create = redis.register_script(_CREATE)
        self._transition = redis.register_script(_TRANSITION)
        self._checkpoint = redis.register_script(_CHECKPOINT)
        self._follow = redis.register_script(_FOLLOW)
        self._delete_if_equal = redis.register_script(DELETE_IF_EQUAL)

    @staticmethod
    def key(recording_id: str) -> str:
        return record_key(recording_id)

    def _encode(self, recording_id: str, values: dict[str, Any]) -> list[str]:
        flat: list[str] = []
        for name, value in values.items():
            if value is None:
                continue
            if name in JSON_FIELDS:
                value = json.dumps(value)
            elif name in SEALED_FIELDS:
                value = self.sealer.seal(value if isinstance(value, str) else json.dumps(value),
                                         context=f"{self.key(recording_id)}:{name}")
            flat += [name, str(value)]
        return flat

    def create(self, recording_id: str, values: dict[str, Any], *, due_at: float,
               also_run: ScriptCall | None = None) -> RecordingState | None:
        """Create a QUEUED record; None when created, else the state of the one already there. The
        script call ``also_run`` runs right after, in the same round trip."""
        now = time.time()
        fields = {"state": RecordingState.QUEUED.value, "created_at": now, "updated_at": now,
                  f"at_{RecordingState.QUEUED.value}": now, **values}
        outcome = self._run(ScriptCall(
            self._create, [self.key(recording_id), DUE_INDEX, RECENT_INDEX, IN_STATE_PREFIX, LIVE_BY_TENANT],
            [due_at, recording_id, DEFAULT_TENANT, *self._encode(recording_id, fields)]), also_run)
        if outcome == 1:
            return None
        return RecordingState(text(outcome))

    def _run(self, call: ScriptCall, also_run: ScriptCall | None) -> Any:
        """``call``'s reply; ``also_run`` (if any) runs after it in the same round trip."""
        if also_run is None:
            return call.run(self.redis)
        return run_in_order(self.redis, [call, also_run])[0]

    def get(self, recording_id: str) -> Record | None:
        return self._decoded(recording_id, self.redis.hgetall(self.key(recording_id)))

    def get_with(self, recording_id: str, ask: Callable[[Any], None]) -> tuple[Record | None, Any]:
        """``get``, and the one read ``ask`` queues on the same pipeline (one round trip): the record
        and that read's reply."""
        raw, reply = self._along(lambda pipe: pipe.hgetall(self.key(recording_id)), ask)
        return self._decoded(recording_id, raw), reply

    def _along(self, command: Callable[[Any], None], ask: Callable[[Any], None]) -> tuple[Any, Any]:
        """The replies of ``command`` and of the read ``ask`` queues after it, sent on one pipeline."""
        pipe = self.redis.pipeline(transaction=False)
        command(pipe)
        ask(pipe)
        first, reply = pipe.execute()
        return first, reply

    def _decoded(self, recording_id: str, raw: dict[bytes, bytes]) -> Record | None:
        if not raw:
            return None
        fields: dict[str, Any] = {}
        for name_b, value_b in raw.items():
            name, value = name_b.decode(), value_b.decode()
            if name in JSON_FIELDS:
                fields[name] = json.loads(value)
            elif name in SEALED_FIELDS:
                opened = self.sealer.open(value, context=f"{self.key(recording_id)}:{name}")
                fields[name] = json.loads(opened) if name == "upload_progress" and opened else opened
            else:
                fields[name] = value
        return Record(recording_id, RecordingState(fields.pop("state")), fields)

    def update(self, recording_id: str, values: dict[str, Any]) -> None:
        """Set fields without a state change (progress, counters)."""
        self.redis.hset(self.key(recording_id), mapping=self._mapping(recording_id, values, time.time()))

    def mark_waiting(self, recording_id: str, what: str, *, now: float, due_at: float) -> None:
        """The recording waits as data for ``what``: say so, count the wait and move its due time, in
        one round trip (behind a deep backlog every recording does this once)."""
        key = self.key(recording_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping=self._mapping(recording_id, {"waiting_for": what, "waiting_since": now}, now))
        pipe.hincrby(key, "waits", 1)
        pipe.zadd(DUE_INDEX, {recording_id: due_at})
        pipe.execute()

    def _mapping(self, recording_id: str, values: dict[str, Any], now: float) -> dict[str, Any]:
        flat = self._encode(recording_id, {**values, "updated_at": now})
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def clear(self, recording_id: str, *names: str) -> None:
        """Remove fields (spent progress, a transcript copied into the result, an old failure)."""
        if names:
            self.redis.hdel(self.key(recording_id), *names)

    def increment(self, recording_id: str, name: str) -> int:
        return int(self.redis.hincrby(self.key(recording_id), name, 1))

    def increment_with(self, recording_id: str, name: str, ask: Callable[[Any], None]) -> tuple[int, Any]:
        """``increment``, and the one read ``ask`` queues on the same pipeline (one round trip): the
        counter's new value and that read's reply."""
        value, reply = self._along(lambda pipe: pipe.hincrby(self.key(recording_id), name, 1), ask)
        return int(value), reply

    def increment_all(self, recording_id: str, *names: str, also_set: dict[str, Any] | None = None,
                      also_run: ScriptCall | None = None) -> list[int]:
        """Several counters up by one, the fields ``also_set`` written (as ``update``) and the script
        call ``also_run`` run, in one round trip; the counters' new values, in order."""
        key = self.key(recording_id)
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hincrby(key, name, 1)
        if also_set:
            pipe.hset(key, mapping=self._mapping(recording_id, also_set, time.time()))
        if also_run is not None:
            also_run.queue(pipe)
        replies = pipe.execute(raise_on_error=False)
        if also_run is not None:
            replies[-1] = also_run.settle(replies[-1], self.redis)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [int(value) for value in replies[:len(names)]]

    def transition(self, recording_id: str, state: RecordingState, values: dict[str, Any] | None = None, *,
                   due_at: float | None = None, reopen: bool = False, clear: tuple[str, ...] = (),
                   lease: StageLease | None = None, observe: Observations = ()) -> RecordingState | None:
        """Move to ``state``, set ``values`` and remove the ``clear`` fields; returns the previous state
        (None if no record).

        A terminal record is left alone unless ``reopen`` (a deliberate retry). ``due_at`` is
        when the reconciler should look again; terminal states leave the due index. A ``lease``
        still held is given back too (if its holder still has it in Redis); the histogram
        observations ``observe`` are recorded if the move changes the state. One round trip.
        """
        moved = self._move(recording_id, state, values, due_at=due_at, reopen=reopen, clear=clear,
                           release_lease=lease.holder if lease is not None and lease.held else None, observe=observe)
        if lease is not None:
            lease.held = False
        return moved.previous

    def end(self, recording_id: str, state: RecordingState, values: dict[str, Any] | None = None, *,
            clear: tuple[str, ...] = (), observe: Observations = (), also_run: ScriptCall | None = None) -> Ended:
        """``transition`` to a terminal ``state``; also returns the followers to tell, when this ended it.
        The script call ``also_run`` runs right after the move, in the same round trip."""
        assert state.is_terminal, state
        return self._move(recording_id, state, values, due_at=None, reopen=False, clear=clear, observe=observe,
                          also_run=also_run)

    def _move(self, recording_id: str, state: RecordingState, values: dict[str, Any] | None, *,
              due_at: float | None, reopen: bool, clear: tuple[str, ...], release_lease: str | None = None,
              observe: Observations = (), also_run: ScriptCall | None = None) -> Ended:
        now = time.time()
        histograms, observations = observation_arguments(observe)
        outcome = self._run(ScriptCall(
            self._transition,
            [self.key(recording_id), DUE_INDEX, RECENT_INDEX, IN_STATE_PREFIX, LIVE_BY_TENANT, ENDED_BY_TENANT,
             lease_key(recording_id), *histograms],
            [state.value, now, "" if due_at is None else due_at, "1" if reopen else "0", recording_id,
             DEFAULT_TENANT, self.ttl_s, release_lease or "", len(clear), *clear, *observations,
             *self._encode(recording_id, values or {})]), also_run)
        if outcome is None:
            return Ended(None)
        previous, followers = outcome
        return Ended(RecordingState(text(previous)), followers_in(followers))

    def follow(self, recording_id: str, task_id: str, *, most: int) -> tuple[RecordingState | None, bool]:
        """Make ``task_id`` a follower of a live recording (at most ``most`` of them): the state found,
        and whether the recording's end will tell this task id (False: ended, unknown, or too many)."""
        outcome = self._follow(keys=[self.key(recording_id)], args=[task_id, most])
        if outcome is None:
            return None, False
        state, added = outcome
        return RecordingState(text(state)), added == 1

    def checkpoint(self, recording_id: str, values: dict[str, Any], *, due_at: float,
                   lease_ttl_s: float) -> RecordingState | None:
        """Save progress, move the due time and renew the stage lease, in one round trip; unless
        the recording is CANCELLED, which is returned with nothing written (else the state found)."""
        flat = self._encode(recording_id, {**values, "updated_at": time.time()})
        state = self._checkpoint(keys=[self.key(recording_id), DUE_INDEX, lease_key(recording_id)],
                                 args=[due_at, recording_id, int(lease_ttl_s * 1000), *flat])
        if state is None:
            return None
        return RecordingState(text(state))

    def set_due(self, recording_id: str, due_at: float) -> None:
        self.redis.zadd(DUE_INDEX, {recording_id: due_at})

    def overdue(self, now: float, limit: int = 500) -> list[str]:
        return [m.decode() for m in self.redis.zrangebyscore(DUE_INDEX, "-inf", now, start=0, num=limit)]

    def recent(self, limit: int = 50) -> list[str]:
        return [m.decode() for m in self.redis.zrevrange(RECENT_INDEX, 0, limit - 1)]

    def live(self) -> list[str]:
        """Every recording not yet ended (the reconciler's index holds exactly those)."""
        return [m.decode() for m in self.redis.zrange(DUE_INDEX, 0, -1)]

    def changed_since(self, since: float) -> list[str]:
        """Recordings whose last change was at or after ``since`` (epoch seconds), newest first."""
        return [m.decode() for m in self.redis.zrevrangebyscore(RECENT_INDEX, "+inf", since)]

    def field(self, recording_id: str, name: str) -> str | None:
        """One plain (not sealed, not JSON) field, without reading the rest of the record."""
        raw = self.redis.hget(self.key(recording_id), name)
        return None if raw is None else raw.decode()

    def stop_waiting(self, recording_id: str) -> None:
        """The recording no longer waits in a line (it goes on, or it ended)."""
        self.redis.hdel(self.key(recording_id), "waiting_for", "waiting_since")

    def state_of(self, recording_id: str) -> RecordingState | None:
        """Just the state: one field, for checks made often (an upload between parts)."""
        state = self.field(recording_id, "state")
        return None if state is None else RecordingState(state)

    def drop_due(self, recording_id: str) -> None:
        """Take a recording out of the reconciler's index (ended, or expired), and the metrics' live sets."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(DUE_INDEX, recording_id)
        for state in RecordingState:
            if not state.is_terminal:
                pipe.zrem(IN_STATE_PREFIX + state.value, recording_id)
        pipe.execute()

    # -- leases: one live run of a stage per recording --------------------------------------

    def take_lease(self, recording_id: str, holder: str, ttl_s: float) -> bool:
        if self.redis.set(lease_key(recording_id), holder, nx=True, px=int(ttl_s * 1000)):
            return True
        return self._renewed_if_ours(recording_id, holder, ttl_s)

    def _renewed_if_ours(self, recording_id: str, holder: str, ttl_s: float) -> bool:
        """Whether the lease someone holds is ``holder``'s own (a redelivered run): then it is renewed."""
        key = lease_key(recording_id)
        current = self.redis.get(key)
        if current is not None and current.decode() == holder:
            self.redis.pexpire(key, int(ttl_s * 1000))
            return True
        return False

    def take_lease_and_get(self, recording_id: str, holder: str, ttl_s: float) -> tuple[bool, Record | None]:
        """``take_lease`` and then ``get``, in one round trip when the lease is free (every stage's
        first step): whether the lease is held, and the record as it is under it."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(lease_key(recording_id), holder, nx=True, px=int(ttl_s * 1000))
        pipe.hgetall(self.key(recording_id))
        taken, raw = pipe.execute()
        return bool(taken) or self._renewed_if_ours(recording_id, holder, ttl_s), self._decoded(recording_id, raw)

    def lease_left_s(self, recording_id: str) -> float:
        return max(self.redis.pttl(lease_key(recording_id)), 0) / 1000

    def renew_lease(self, recording_id: str, ttl_s: float) -> None:
        self.redis.pexpire(lease_key(recording_id), int(ttl_s * 1000))

    def release_lease(self, recording_id: str, holder: str) -> None:
        self._delete_if_equal(keys=[lease_key(recording_id)], args=[holder])

    def has_lease(self, recording_id: str) -> bool:
        return bool(self.redis.exists(lease_key(recording_id)))
