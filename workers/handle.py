"""For Python services that import this project: enqueue a recording, get a handle.

    from workers.handle import transcribe
    handle = transcribe("/data/call.mp3", params={"diarization": {"enabled": True}})
    handle.status()            # {"state": "PROCESSING", ...} from the recording record
    handle.result(timeout_s=600)  # the transcript dict, or raises RecordingFailed / TimeoutError
    handle.cancel()            # stop it: {"cancelled": True, "message": ...}

Services that do not import it use ``send_task("plaud.transcribe", kwargs=...)`` (see README).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery

from plaud.redact import mask_url_queries, redact
from tasks import names
from tasks.errors import RecordingFailed
from tasks.runtime import runtime

from .celery_app import app as default_app

POLL_INTERVAL_S = 0.25


@dataclass
class RecordingHandle:
    recording_id: str
    task_id: str
    app: Celery

    def status(self) -> dict[str, Any]:
        """The recording's public record (state, timestamps, progress, failure), or PENDING if not yet made."""
        record = runtime().store.get(self.recording_id)
        return record.public() if record else {"recording_id": self.recording_id, "state": "PENDING"}

    def cancel(self) -> dict[str, Any]:
        """Cancel the recording (see ``tasks.cancel``): what happened, as ``plaud.cancel`` returns it."""
        from tasks.cancel import cancel_recording

        return cancel_recording(runtime(), self.recording_id, backend=self.app.backend).to_dict()

    def result(self, timeout_s: float) -> dict[str, Any]:
        """Wait at most ``timeout_s``: the transcript, or RecordingFailed; TimeoutError when still running."""
        return wait_result(self.app.AsyncResult(self.task_id), timeout_s)


def wait_result(async_result: Any, timeout_s: float) -> dict[str, Any]:
    """A task's result by checking its state with timeouts: never an unbounded ``get()``, which can
    miss a result published between its GET and its SUBSCRIBE. Raises RecordingFailed or TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while not async_result.ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no result after {timeout_s} s (state {async_result.state})")
        time.sleep(POLL_INTERVAL_S)
    try:
        return async_result.get(timeout=10)
    except RecordingFailed:
        raise
    except Exception as exc:  # a failure stored by a worker comes back as a rebuilt exception class
        raise RecordingFailed(str(exc)) from None


def transcribe(source: str, *, recording_id: str | None = None, app: Celery | None = None,
               **kwargs: Any) -> RecordingHandle:
    """Enqueue ``plaud.transcribe`` by name; kwargs as in the README (params, metadata, webhook_url, …)."""
    app = app or default_app
    recording_id = recording_id or uuid.uuid4().hex
    body = {"source": source, "recording_id": recording_id, **kwargs}
    sent = app.send_task(names.TRANSCRIBE, kwargs=body, kwargsrepr=redact(mask_url_queries(repr(body))))
    return RecordingHandle(recording_id, sent.id, app)
