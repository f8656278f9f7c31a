"""Stage 1: upload the recording to Plaud's storage; saves the DownloadUrl."""

from __future__ import annotations

import time

from celery import shared_task

from plaud.upload import UploadProgress

from . import metrics, names
from .cancel import RecordingCancelled, cancelled_message
from .failures import StageName
from .names import WAITING_FOR_UPLOAD
from .records import Record, RecordingState, StageLease
from .runtime import Runtime
from .stage import StageTask

# When the duration cannot be read (a URL streamed straight through), estimate it from the size
# at a typical speech bitrate: a guess within 2x beats assuming a 5-second job.
ASSUMED_BITRATE_KBPS = 48


def has_usable_download_url(record: Record, now: float) -> bool:
    return bool(record.get("download_url")) and record.number("download_url_expires_at") > now


def uploaded(record: Record) -> bool:
    return bool(record.get("transcription_id")) or has_usable_download_url(record, time.time())


def has_upload_slot(rt: Runtime, recording_id: str, created_at: float) -> bool:
    """Whether the recording may upload now: its submit is near enough for the DownloadUrl to last.
    If not, it has joined the upload line, in the order it was created."""
    if rt.upload_slots is None:
        return True
    return rt.upload_slots.take(recording_id, order=created_at, now=time.time())


def run_upload(rt: Runtime, record: Record, *, lease: StageLease | None = None) -> None:
    """Upload (or resume uploading) one recording and record where Plaud stored it; the write that
    records it gives back the upload stage's ``lease`` too, when given, and observes the upload's
    throughput (one round trip, not three)."""
    recording_id = record.recording_id
    grace = rt.settings.reconcile_grace_s
    if record.get("waiting_for"):
        rt.store.stop_waiting(recording_id)
    started = time.monotonic()
    rt.store.transition(recording_id, RecordingState.UPLOADING, due_at=time.time() + grace)
    saved = record.get("upload_progress")

    def checkpoint(progress: UploadProgress) -> None:
        state = rt.store.checkpoint(recording_id, {"upload_progress": progress.to_dict(),
                                                   "bytes_sent": progress.bytes_done, "bytes_total": progress.filesize},
                                    due_at=time.time() + grace, lease_ttl_s=rt.settings.lease_ttl_s)
        if state is RecordingState.CANCELLED:  # the upload stops between parts
            cancelled = rt.store.get(recording_id)
            raise RecordingCancelled(cancelled_message(recording_id, cancelled.get("cancelled") if cancelled else {}))

    result = rt.client.upload(record.get("source"), user_id=record.get("user_id"),
                              progress=UploadProgress.from_dict(saved) if saved else None, on_checkpoint=checkpoint)
    elapsed_s = time.monotonic() - started
    transcoded = result.transcoded
    duration_s = result.duration_s or result.filesize * 8 / (ASSUMED_BITRATE_KBPS * 1000)
    rt.store.transition(recording_id, RecordingState.UPLOADED, {
        "file_id": result.file_id, "download_url": result.download_url,
        "download_url_expires_at": time.time() + rt.settings.download_url_ttl_s, "file_md5": result.file_md5,
        "filesize": result.filesize, "filetype": result.filetype, "audio_duration_s": round(duration_s, 3),
        "audio_duration_estimated": 0 if result.duration_s else 1,
        "upload_restarts": result.restarts,
        "transcoded": None if transcoded is None else {
            "via": transcoded.via, "original_bytes": transcoded.original_bytes, "bytes": transcoded.bytes,
            "bytes_saved": transcoded.bytes_saved},
    }, due_at=time.time() + grace, clear=("upload_progress",), lease=lease,
        # A whole upload in this run: its rate means something.
        observe=[(metrics.UPLOAD_THROUGHPUT, result.filesize / elapsed_s)] if saved is None and elapsed_s > 0 else ())


@shared_task(name=names.UPLOAD, base=StageTask, bind=True, stage=StageName.UPLOAD)
def upload(self: StageTask, recording_id: str) -> None:
    with self.errors_handled(recording_id), self.leased(recording_id, done=uploaded) as (record, done, lease):
        if done:
            return  # a redelivered or reconciled message, or another run uploaded it meanwhile
        if not has_upload_slot(self.rt, recording_id, record.number("created_at")):
            raise self.waits_as_data(recording_id, WAITING_FOR_UPLOAD)
        run_upload(self.rt, record, lease=lease)
