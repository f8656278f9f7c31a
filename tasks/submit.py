"""Stage 2: submit the transcription, once. The transcription_id is saved before anything else."""

from __future__ import annotations

import time

from celery import shared_task

from . import names
from .failures import StageName
from .records import RecordingState
from .stage import StageTask
from .upload import has_usable_download_url, run_upload


@shared_task(name=names.SUBMIT, base=StageTask, bind=True, stage=StageName.SUBMIT)
def submit(self: StageTask, recording_id: str) -> None:
    if self.load(recording_id).get("transcription_id"):
        return  # never a second Plaud task for one recording
    rt = self.rt
    with self.errors_handled(recording_id), self.leased(recording_id) as record:
        if record.get("transcription_id"):
            return  # another run submitted while we waited for the lease
        if not has_usable_download_url(record, time.time()):
            # Plaud's DownloadUrl lives ~24 h and cannot be re-signed: upload again.
            run_upload(rt, record)
            record = self.load(recording_id)

        def count_request() -> None:
            # Counted as it goes out, not before the budget allows it: a submit that waited
            # for budget never reached Plaud and cannot have created a task.
            if record.get("waiting_for"):
                rt.store.clear(recording_id, "waiting_for", "waiting_since")
            if rt.store.increment(recording_id, "submit_requests") > 1:
                # An earlier request may have reached Plaud without us learning its id.
                rt.store.update(recording_id, {"possible_duplicate_submit": 1})

        transcription_id = rt.client.submit(record.get("download_url"), record.get("params"), waiter=recording_id,
                                            before_send=count_request)
        now = time.time()
        estimate = rt.timing.current()
        expected_s = estimate.expected_s(record.number("audio_duration_s") or None)
        first_poll = now + rt.schedule.next_delay_s(0.0, expected_s, rt.budget_slack())
        rt.plan_poll(recording_id, first_poll)
        rt.store.transition(recording_id, RecordingState.SUBMITTED, {
            "transcription_id": transcription_id, "submitted_at": now, "next_poll_at": first_poll,
            "expected_s": round(expected_s, 3), **estimate.as_fields(),
        }, due_at=first_poll + rt.settings.reconcile_grace_s)
        if rt.upload_slots is not None:
            rt.upload_slots.done(recording_id)  # submitted: the next recording in line may upload
