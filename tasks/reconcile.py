"""The reconciler: a periodic sweep that re-drives recordings whose next step is overdue.

Every live recording has a due time in Redis (``plaud:recs:due``): a while after its last
progress, or after its next poll. A recording past due with no stage holding its lease, and not
waiting in line (for budget or an upload slot: ``tasks.dispatch`` wakes those), has lost its
message or its place in line (a worker died with it, a re-publish failed, Redis lost the wait
list): the sweep enqueues the rest of its
chain, ending in a deliver that carries the entry task's id, so the original caller's result
still resolves. Stages are idempotent, and a replaced poll is retired by its token.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from celery import shared_task

from . import metrics, names
from .cancel import failed_recordings
from .failures import Failure, FailureKind, StageName
from .records import RecordingState
from .runtime import Runtime, runtime
from .transcribe import send_pipeline

log = logging.getLogger("plaud.reconcile")

START_BY_STATE = {
    RecordingState.QUEUED: StageName.UPLOAD,
    RecordingState.UPLOADING: StageName.UPLOAD,
    RecordingState.UPLOADED: StageName.SUBMIT,
    RecordingState.SUBMITTED: StageName.POLL,
    RecordingState.PROCESSING: StageName.POLL,
}


def redrive(rt: Runtime, recording_id: str, *, task_id: str | None, start: StageName,
            fields: dict[str, Any] | None = None, **options: Any) -> None:
    """Enqueue the recording's chain from ``start`` again, under a new poll token: a poll of an
    older chain that turns up later sees the token changed and stops instead of polling twice."""
    token = uuid.uuid4().hex[:12]
    rt.store.update(recording_id, {"poll_token": token, **(fields or {})})
    send_pipeline(recording_id, token, task_id=task_id, start=start, **options)


def sweep(rt: Runtime, now: float | None = None) -> list[str]:
    """Re-enqueue overdue recordings; returns their ids."""
    now = time.time() if now is None else now
    revived = []
    for recording_id in rt.store.overdue(now):
        record = rt.store.get(recording_id)
        if record is None or record.state.is_terminal:
            rt.store.drop_due(recording_id)
            rt.leave_lines(recording_id)  # ended or expired without giving up its place: give it up now
            continue
        if rt.store.has_lease(recording_id) or rt.in_line_for(recording_id):
            # A stage is at work, or the recording waits in line as data: the dispatcher wakes it.
            rt.store.set_due(recording_id, now + rt.settings.reconcile_grace_s)
            continue
        start = START_BY_STATE[record.state]
        if start is StageName.POLL and record.get("transcript") is not None:
            start = StageName.DELIVER
        rt.store.increment(recording_id, "reconciled")
        rt.store.set_due(recording_id, now + rt.settings.reconcile_grace_s)
        # A poll still asleep past its due time was missed by every dispatcher (none ran): the
        # chain enqueued now replaces it, so no dispatcher wakes a second one later.
        rt.sleeping_polls.forget(recording_id)
        metrics.count(rt.redis, metrics.REDRIVES, start.value)
        redrive(rt, recording_id, task_id=record.get("task_id"), start=start, fields={"reconciled_at": now})
        log.warning("recording %s was overdue in %s; re-enqueued from %s", recording_id, record.state.value,
                    start.value)
        revived.append(recording_id)
    return revived


# No task events: the tick comes every minute and would push the recordings' own tasks off Flower's
# list. What it re-drives shows there as the recording's stage tasks, and it logs each re-drive.
@shared_task(name=names.RECONCILE, ignore_result=True, send_events=False)
def reconcile() -> int:
    return len(sweep(runtime()))


class NotRetryable(Exception):
    """Raised when a recording cannot be re-driven (not FAILED, or refused at the door)."""


# Where a retry starts again, by what went wrong: the state it re-enters and the fields it clears.
# A job Plaud ran and failed (or never finished) is submitted anew; anything else resumes at the
# stage that failed — for a poll, asking again costs one request and the job may still be fine.
RESUBMIT = (StageName.SUBMIT, RecordingState.UPLOADED,
            ("transcription_id", "poll_attempts", "polls", "next_poll_at", "submitted_at", "plaud_status"))
RESUME_AT = {
    StageName.UPLOAD: (StageName.UPLOAD, RecordingState.QUEUED, ("upload_attempts",)),
    StageName.SUBMIT: (StageName.SUBMIT, RecordingState.UPLOADED, ("submit_attempts",)),
    StageName.POLL: (StageName.POLL, RecordingState.SUBMITTED, ("poll_attempts",)),
}
START_OVER_KINDS = (FailureKind.SOURCE,)  # the file was fixed or replaced: read it again


def restart_point(failure: Failure) -> tuple[StageName, RecordingState, tuple[str, ...]]:
    """Where a retry of this failure starts, the state it re-enters and the fields it clears."""
    if failure.kind in (FailureKind.PLAUD_FAILED, FailureKind.TIMED_OUT):
        return RESUBMIT
    if failure.kind in START_OVER_KINDS:
        return RESUME_AT[StageName.UPLOAD]
    return RESUME_AT.get(failure.stage, RESUBMIT)


def retry_failed(rt: Runtime, recording_id: str) -> tuple[str, str]:
    """Re-drive a FAILED recording from where its failure says; returns (new task id, stage)."""
    record = rt.store.get(recording_id)
    if record is None:
        raise NotRetryable(f"no recording {recording_id} (unknown, or its record expired)")
    if record.state is not RecordingState.FAILED:
        raise NotRetryable(f"recording {recording_id} is {record.state.value}, not FAILED")
    failure = Failure.from_record(record, poll_deadline_s=rt.settings.poll_deadline_s)
    if failure.kind is FailureKind.INVALID_REQUEST or not record.get("source"):
        raise NotRetryable(f"recording {recording_id} was refused at the door ({failure.reason}); "
                           f"enqueue a corrected request")
    start, state, cleared = restart_point(failure)
    task_id = str(uuid.uuid4())
    rt.store.clear(recording_id, "failure", *cleared)
    rt.store.transition(recording_id, state, {"task_id": task_id, "next_poll_at": time.time()},
                        due_at=time.time() + rt.settings.reconcile_grace_s, reopen=True)
    rt.store.increment(recording_id, "retried")
    redrive(rt, recording_id, task_id=task_id, start=start)
    log.info("recording %s re-driven from %s as task %s", recording_id, start.value, task_id)
    return task_id, start.value


@shared_task(name=names.RETRY, bind=True)
def retry(self: Any, recording_id: str | None = None, tenant: str | None = None, stage: str | None = None,
          kind: str | None = None, since_s: float | None = None) -> list[dict[str, Any]]:
    """Re-drive one FAILED recording, or every one matching the filters; returns what was done to each."""
    rt = runtime()
    if recording_id is not None:
        ids = [recording_id]
    else:
        ids = [r.recording_id for r in failed_recordings(
            rt, tenant=tenant, stage=StageName(stage) if stage else None, kind=FailureKind(kind) if kind else None,
            since_s=since_s)]
    outcomes = []
    for rid in ids:
        try:
            task_id, start = retry_failed(rt, rid)
            outcomes.append({"recording_id": rid, "retried": True, "from": start, "task_id": task_id})
        except NotRetryable as exc:
            outcomes.append({"recording_id": rid, "retried": False, "message": str(exc)})
    return outcomes
