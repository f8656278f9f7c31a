"""Stage 2: submit the transcription, once. The transcription_id is saved before anything else."""

from __future__ import annotations

import time

from celery import shared_task

from plaud.budget import SUBMIT

from . import names
from .cancel import AFTER_SUBMIT_NOTE
from .failures import StageName
from .records import Record, RecordingState, StageLease
from .redis_connection import through_failover
from .runtime import Runtime
from .stage import StageTask, budget_place
from .timing import TimingEstimate
from .upload import has_usable_download_url, run_upload


@shared_task(name=names.SUBMIT, base=StageTask, bind=True, stage=StageName.SUBMIT)
def submit(self: StageTask, recording_id: str) -> None:
    rt = self.rt
    with self.errors_handled(recording_id), self.leased(recording_id, done=has_submitted) as (record, done, lease):
        if done:
            return already_submitted(self, record)  # never a second Plaud task for one recording
        if not has_usable_download_url(record, time.time()):
            # Plaud's DownloadUrl lives ~24 h and cannot be re-signed: upload again. That takes a
            # while: a slot granted meanwhile goes back, and the submit takes one when it is ready.
            if record.get("waiting_for") == SUBMIT:
                self.give_back_grant(recording_id, SUBMIT)
            run_upload(rt, record)
            record = self.load(recording_id)

        fleet: TimingEstimate | None = None  # the fleet's timing estimate, read with the count

        def count_request() -> None:
            # Counted as it goes out, not before the budget allows it: a submit that waited
            # for budget never reached Plaud and cannot have created a task.
            nonlocal fleet
            if record.get("waiting_for"):
                rt.store.stop_waiting(recording_id)
            sent, timing_reply = rt.store.increment_with(recording_id, "submit_requests", rt.timing.ask)
            fleet = rt.timing.estimate_from(timing_reply)
            if sent > 1:
                # An earlier request may have reached Plaud without us learning its id.
                rt.store.update(recording_id, {"possible_duplicate_submit": 1})

        transcription_id = rt.client.submit(record.get("download_url"), record.get("params"), waiter=recording_id,
                                            **budget_place(record), before_send=count_request)
        # Plaud has the job now. Should Redis fail over before its id is saved, this stage would be
        # retried and submit (and be billed) again: ride out the failover instead.
        through_failover(lambda: submitted(rt, record, transcription_id, lease=lease, estimate=fleet),
                         wait_s=rt.settings.redis_failover_wait_s,
                         what=f"saving the transcription id of recording {recording_id}")


def has_submitted(record: Record) -> bool:
    return bool(record.get("transcription_id"))


def submitted(rt: Runtime, record: Record, transcription_id: str, *, lease: StageLease | None = None,
              estimate: TimingEstimate | None = None) -> None:
    """Save the transcription id and plan the first poll from the fleet's timing ``estimate``; safe
    to run again (the state moves once). The write that saves it gives back the submit stage's
    ``lease`` too, when given."""
    recording_id = record.recording_id
    now = time.time()
    # Read with the count of requests as the submit went out. Should a client path ever send
    # without that count, read it now: failing here, after Plaud took the job, would submit again.
    estimate = estimate or rt.timing.current()
    expected_s = estimate.expected_s(record.number("audio_duration_s") or None)
    first_poll = now + rt.schedule.next_delay_s(0.0, expected_s, rt.budget_slack())
    rt.plan_poll(recording_id, first_poll)
    previous = rt.store.transition(recording_id, RecordingState.SUBMITTED, {
        "transcription_id": transcription_id, "submitted_at": now, "next_poll_at": first_poll,
        "expected_s": round(expected_s, 3), **estimate.as_fields(),
    }, due_at=first_poll + rt.settings.reconcile_grace_s, lease=lease)
    if rt.upload_slots is not None:
        rt.upload_slots.done(recording_id)  # submitted: the next recording in line may upload
    if previous is RecordingState.CANCELLED:
        # Cancelled while the request was on its way: Plaud has the job now, and will bill it.
        rt.plan_nothing_more(recording_id)
        now_record = rt.store.get(recording_id) or record
        cancelled = {**(now_record.get("cancelled") or {}), "after_submit": True, "note": AFTER_SUBMIT_NOTE}
        rt.store.update(recording_id, {"transcription_id": transcription_id, "cancelled": cancelled})


def already_submitted(task: StageTask, record: Record) -> None:
    """A redelivered or woken submit of a recording submitted already: leave nothing held."""
    if record.get("waiting_for") == SUBMIT:
        task.give_back_grant(record.recording_id, SUBMIT)
    if task.rt.upload_slots is not None:
        task.rt.upload_slots.done(record.recording_id)
