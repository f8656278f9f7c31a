"""Stage 4: the final result, stored on the record and returned as the entry task's result."""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task, states

from . import metrics, names
from .failures import StageName
from .followers import followers_of, tell_followers
from .notify import announce
from .records import Record, RecordingState
from .runtime import runtime
from .stage import load


def build_result(record: Record) -> dict[str, Any]:
    transcript = record.get("transcript") or {}
    return {
        "recording_id": record.recording_id,
        "transcription_id": record.get("transcription_id"),
        "text": transcript.get("text", ""),
        "language": transcript.get("language"),
        "duration": transcript.get("duration_s"),
        "segments": transcript.get("segments", []),
        "embeddings": transcript.get("embeddings"),
        "metadata": record.get("metadata"),
        "file_md5": record.get("file_md5"),
        "completed_at": time.time(),
    }


# Ended otherwise before deliver's move: SUCCESS must not replace what the caller was told.
CALLER_TOLD_OTHERWISE = frozenset({RecordingState.CANCELLED, RecordingState.FAILED})


# track_started off: deliver runs under the entry task's id, which the entry marked STARTED already
# (tasks.transcribe); storing it again would cost a read, a write and a pub/sub message per
# recording for a state that does not change.
@shared_task(name=names.DELIVER, bind=True, track_started=False)
def deliver(self, recording_id: str) -> dict[str, Any]:
    rt = runtime()
    record = load(rt, recording_id, StageName.DELIVER, backend=self.backend)
    if record.state is RecordingState.SUCCEEDED:
        # Delivered already (this may be the redelivery of a run that died before telling its followers).
        tell_followers(self.backend, followers_of(record), result=record.get("result"))
        return record.get("result")  # the same answer again
    result = build_result(record)
    # SUCCESS in the round trip that ends the record, when Celery keeps its results there
    # (tasks.task_results), and only with a record that succeeded.
    stored = rt.task_results.store_with_record(self.backend, self.request, result, states.SUCCESS,
                                               recording_id=recording_id, only_if=RecordingState.SUCCEEDED)
    # The metrics' figures go with the move that ends it: recorded once, if this run ended it.
    ended = rt.store.end(recording_id, RecordingState.SUCCEEDED, {"result": result}, clear=("transcript",),
                         observe=success_observations(record, time.time()), also_run=stored)
    if (stored is not None and ended.previous is not None) or ended.previous in CALLER_TOLD_OTHERWISE:
        # Celery would store the return value after it: already written, or not the caller's outcome
        # (the recording was cancelled or failed meanwhile, and its caller was told so). On this
        # run's request, not as the task's ignore_result: that would travel in the messages this
        # release sends, and a worker of an older one, which does not write it itself, would store
        # no result at all.
        self.request.ignore_result = True
    if ended.previous is not None and not ended.previous.is_terminal:
        announce(rt, recording_id, "recording.succeeded", record)
        tell_followers(self.backend, ended.followers, result=result)
    return result


def success_observations(record: Record, now: float) -> metrics.Observations:
    """The figures of a recording that succeeds now, for the metrics' histograms."""
    observations = [(metrics.RECORDING_SECONDS, now - record.number("created_at", now)),
                    (metrics.POLLS_PER_RECORDING, record.number("polls"))]
    seen_at = record.number("done_seen_at")
    # From the last poll before it that found the job unfinished, else the submit.
    last_unfinished = max(record.number("at_PROCESSING"), record.number("submitted_at"))
    if seen_at and last_unfinished:
        observations.append((metrics.DETECTION_SECONDS, max(seen_at - last_unfinished, 0.0)))
    return observations
