"""Why a recording failed, as data: a kind from a fixed set, beside a reason written for people.

The kind decides what a retry re-runs (and later, what operators filter on); the reason's
wording decides nothing, so it can be reworded freely. Records written before kinds existed
have none: ``Failure.from_record`` infers one from the record's data, never from its text.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any

from plaud.errors import (
    FatalError,
    IntegrityError,
    PlaudError,
    SourceError,
    UnsupportedAudio,
    UploadRestartNeeded,
)
from plaud.transcriptions import TranscriptionStatus

from .records import Record


class StageName(enum.StrEnum):
    """Where in the pipeline a recording was when it failed."""

    TRANSCRIBE = "transcribe"  # the entry task: the request itself
    UPLOAD = "upload"
    SUBMIT = "submit"
    POLL = "poll"
    DELIVER = "deliver"


class FailureKind(enum.StrEnum):
    """What went wrong, in terms of what a person (or a retry) can do about it."""

    INVALID_REQUEST = "invalid_request"  # the kwargs cannot be used: enqueue a corrected request
    SOURCE = "source"  # the audio cannot be read, or is not audio we can send
    UPLOAD = "upload"  # sending the file to Plaud's storage failed (integrity, errors until the attempts ran out)
    PLAUD_REFUSED = "plaud_refused"  # Plaud refused a request (4xx): credentials, parameters, an unknown id
    PLAUD_UNAVAILABLE = "plaud_unavailable"  # Plaud kept failing to answer (5xx, 429, network) until attempts ran out
    PLAUD_FAILED = "plaud_failed"  # Plaud ran the job and reported it failed or revoked
    TIMED_OUT = "timed_out"  # Plaud had not finished by the poll deadline
    INTERNAL = "internal"  # an unexpected error here: a bug to report


def classify(stage: StageName, exc: BaseException) -> FailureKind:
    """The kind of failure an exception that ended ``stage`` stands for."""
    if isinstance(exc, SourceError | UnsupportedAudio):
        return FailureKind.SOURCE
    if isinstance(exc, IntegrityError | UploadRestartNeeded):
        return FailureKind.UPLOAD
    if isinstance(exc, FatalError):
        return FailureKind.PLAUD_REFUSED
    if isinstance(exc, PlaudError):  # retryable, and retried until the stage's attempts ran out
        return FailureKind.UPLOAD if stage is StageName.UPLOAD else FailureKind.PLAUD_UNAVAILABLE
    return FailureKind.INTERNAL


@dataclass(frozen=True)
class Failure:
    """What the record keeps under ``failure``."""

    stage: StageName
    kind: FailureKind
    reason: str
    at: float
    # From the Plaud error, when there was one: HTTP status, Plaud's code, the error class.
    details: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def now(cls, stage: StageName, kind: FailureKind, reason: str, error: PlaudError | None = None) -> Failure:
        details = () if error is None else tuple(
            (k, v) for k, v in error.to_dict().items() if k in ("status", "code", "error") and v is not None)
        return cls(stage, kind, reason, time.time(), details)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage.value, "kind": self.kind.value, "reason": self.reason, "at": self.at,
                **dict(self.details)}

    def describe(self, recording_id: str) -> str:
        """The one sentence a caller sees: in the task's failure, the CLI and ``follow``."""
        return f"recording {recording_id} failed at {self.stage.value}: {self.reason}"

    @classmethod
    def from_record(cls, record: Record, *, poll_deadline_s: float | None = None) -> Failure:
        """The record's failure; for a record written before kinds, the kind its data implies."""
        data = record.get("failure") or {}
        try:
            stage = StageName(str(data.get("stage")))
        except ValueError:
            stage = StageName.POLL if record.get("transcription_id") else StageName.UPLOAD
        try:
            kind = FailureKind(str(data.get("kind")))
        except ValueError:
            kind = _infer_kind(record, stage, data, poll_deadline_s)
        details = tuple((k, v) for k, v in data.items() if k in ("status", "code", "error") and v is not None)
        return cls(stage, kind, str(data.get("reason") or "unknown reason"), float(data.get("at") or 0.0), details)


def _infer_kind(record: Record, stage: StageName, data: dict[str, Any], poll_deadline_s: float | None) -> FailureKind:
    """A kind for a failure recorded before kinds existed, from what else the record holds."""
    if stage is StageName.TRANSCRIBE:
        return FailureKind.INVALID_REQUEST
    if stage is StageName.UPLOAD:
        return FailureKind.UPLOAD
    if stage is StageName.POLL:
        if TranscriptionStatus.parse(record.get("plaud_status")).is_failure:
            return FailureKind.PLAUD_FAILED
        failed_after_s = float(data.get("at") or 0.0) - record.number("submitted_at")
        if poll_deadline_s is not None and record.get("submitted_at") and failed_after_s >= poll_deadline_s:
            return FailureKind.TIMED_OUT
        if not data.get("error"):
            # Errors reaching Plaud were always stored with their class; a poll failure without one
            # was Plaud's own verdict on the job (its status was not kept then).
            return FailureKind.PLAUD_FAILED
    return FailureKind.PLAUD_REFUSED if data.get("status") or data.get("code") else FailureKind.PLAUD_UNAVAILABLE
