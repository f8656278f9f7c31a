"""Cancelling recordings, and re-driving failed ones in bulk: for callers (``plaud.cancel``,
``plaud.retry`` by name) and operators (``plaud-workers cancel`` / ``retry``).

A cancelled recording is ``CANCELLED`` (terminal) at once: it gives up its place in every line
(budget, upload slot) and whatever runs for it stops at its next step — a stage reads the record
first, an upload checks between parts, a poll on waking. Before its submit it costs Plaud
nothing: no Plaud task is created. After the submit Plaud offers no way to cancel: the job still
runs and is billed; its result is neither fetched nor delivered, and the record says so. The
entry task's result becomes a failure that says the recording was cancelled, whether or not a
task of its chain is alive to carry it, and a webhook or callback gets ``recording.cancelled``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from celery import shared_task

from . import names
from .errors import RecordingFailed
from .failures import Failure, FailureKind, StageName
from .followers import tell_followers
from .names import DEFAULT_TENANT
from .notify import announce
from .records import Record, RecordingState
from .runtime import Runtime, runtime

log = logging.getLogger("plaud.cancel")

AFTER_SUBMIT_NOTE = ("Plaud offers no way to cancel a submitted job: it still runs and is billed; its result is "
                     "not fetched or delivered")
BEFORE_SUBMIT_NOTE = "cancelled before its submit: no Plaud task was created"

# Where a live recording is, for the record of its cancellation.
STAGE_BY_STATE = {
    RecordingState.QUEUED: StageName.UPLOAD,
    RecordingState.UPLOADING: StageName.UPLOAD,
    RecordingState.UPLOADED: StageName.SUBMIT,
    RecordingState.SUBMITTED: StageName.POLL,
    RecordingState.PROCESSING: StageName.POLL,
}


class RecordingCancelled(RecordingFailed):
    """Raised in a stage of a recording that was cancelled meanwhile: it stops there."""


def cancelled_message(recording_id: str, info: dict[str, Any]) -> str:
    return f"recording {recording_id} was cancelled at {info.get('stage')} ({info.get('note')})"


@dataclass(frozen=True)
class CancelOutcome:
    recording_id: str
    cancelled: bool
    state: str  # the state after the call: CANCELLED, or the terminal state it already had
    message: str
    after_submit: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cancel_recording(rt: Runtime, recording_id: str, *, backend: Any) -> CancelOutcome:
    """Cancel one recording; ``backend`` is the Celery result backend the entry task's result is in."""
    record = rt.store.get(recording_id)
    if record is None:
        return CancelOutcome(recording_id, False, "UNKNOWN",
                             f"no recording {recording_id} (unknown, or its record expired): nothing changed")
    if record.state.is_terminal:
        return CancelOutcome(recording_id, False, record.state.value,
                             f"recording {recording_id} is {record.state.value} already: nothing changed")
    after_submit = bool(record.get("transcription_id"))
    info = {"at": time.time(), "stage": STAGE_BY_STATE[record.state].value, "after_submit": after_submit,
            "note": AFTER_SUBMIT_NOTE if after_submit else BEFORE_SUBMIT_NOTE}
    ended = rt.store.end(recording_id, RecordingState.CANCELLED, {"cancelled": info})
    previous = ended.previous
    if previous is None or previous.is_terminal:  # it ended a moment ago
        state = previous.value if previous is not None else "UNKNOWN"
        return CancelOutcome(recording_id, False, state, f"recording {recording_id} is {state} already: "
                                                         f"nothing changed")
    rt.leave_lines(recording_id)
    rt.plan_nothing_more(recording_id)
    message = cancelled_message(recording_id, info)
    # The chain may have no live task to carry the news (the recording waited as data): the first
    # caller and every follower are told here.
    callers = ((record.get("task_id"),) if record.get("task_id") else ()) + ended.followers
    tell_followers(backend, callers, error=RecordingCancelled(message))
    announce(rt, recording_id, "recording.cancelled")
    log.warning("%s", message)
    return CancelOutcome(recording_id, True, RecordingState.CANCELLED.value, message, after_submit)


def live_recordings(rt: Runtime, *, tenant: str | None = None,
                    states: Iterable[RecordingState] = ()) -> list[Record]:
    """Recordings not yet ended, of ``tenant`` and in ``states`` when given."""
    wanted = set(states)
    found = []
    for recording_id in rt.store.live():
        record = rt.store.get(recording_id)
        if record is None or record.state.is_terminal:
            continue
        if tenant is not None and record.get("tenant", DEFAULT_TENANT) != tenant:
            continue
        if wanted and record.state not in wanted:
            continue
        found.append(record)
    return found


def failed_recordings(rt: Runtime, *, tenant: str | None = None, stage: StageName | None = None,
                      kind: FailureKind | None = None, since_s: float | None = None) -> list[Record]:
    """FAILED recordings matching every filter given; ``since_s``: that failed within that many seconds."""
    since = time.time() - since_s if since_s is not None else 0.0
    found = []
    for recording_id in rt.store.changed_since(since):
        record = rt.store.get(recording_id)
        if record is None or record.state is not RecordingState.FAILED:
            continue
        failure = Failure.from_record(record, poll_deadline_s=rt.settings.poll_deadline_s)
        if tenant is not None and record.get("tenant", DEFAULT_TENANT) != tenant:
            continue
        if (stage is not None and failure.stage is not stage) or (kind is not None and failure.kind is not kind):
            continue
        found.append(record)
    return found


@shared_task(name=names.CANCEL, bind=True)
def cancel(self: Any, recording_id: str | None = None, tenant: str | None = None,
           states: list[str] | None = None) -> list[dict[str, Any]]:
    """Cancel one recording, or every live one of ``tenant`` (in ``states`` if given); returns the outcomes."""
    rt = runtime()
    if (recording_id is None) == (tenant is None):
        raise ValueError("plaud.cancel takes recording_id or tenant (with optional states), not both or neither")
    ids = [recording_id] if recording_id is not None else [
        r.recording_id for r in live_recordings(rt, tenant=tenant, states=[RecordingState(s) for s in states or ()])]
    return [cancel_recording(rt, i, backend=self.app.backend).to_dict() for i in ids]
