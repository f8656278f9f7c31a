"""What a caller sees when a recording fails: one exception with a reason a person can act on."""

from __future__ import annotations


class RecordingFailed(Exception):
    """Raised (and stored as the task result) when a recording ends FAILED; the message says why."""


class InvalidRequest(RecordingFailed):
    """Raised when ``plaud.transcribe`` is called with kwargs it cannot use."""


class IdempotencyConflict(InvalidRequest):
    """Raised when a ``recording_id`` already in use is enqueued with a different request."""


class RejectedMessage(Exception):
    """Stored as the result of a message no worker can run (not JSON, malformed): it was dropped."""
