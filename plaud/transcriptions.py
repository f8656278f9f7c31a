"""Typed transcription states and one normalised transcript, whatever shape Plaud answers in.

Accepted shapes (docs/plaud-api.md, "Transcription results"): ``data.results[]`` or
``data.segments[]``; ``speaker_id`` or ``speaker``; ``data.text`` or, when absent, the segments'
text joined; the id and status at the top level or as ``data.task_id`` / ``data.task_status``; a
failure reason in ``message`` or ``data.error``. An empty transcript on SUCCESS is a valid result
(audio without speech).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any


# Not StrEnum: that would change str() and f-strings of a member from 'TranscriptionStatus.X' to 'X'.
class TranscriptionStatus(str, enum.Enum):  # noqa: UP042
    PENDING = "PENDING"
    RECEIVED = "RECEIVED"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"
    UNKNOWN = "UNKNOWN"  # a value not in the contract: keep polling, within the deadline

    @classmethod
    def parse(cls, value: Any) -> TranscriptionStatus:
        try:
            return cls(str(value).upper())
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_terminal(self) -> bool:
        return self in (TranscriptionStatus.SUCCESS, TranscriptionStatus.FAILURE, TranscriptionStatus.REVOKED)

    @property
    def is_failure(self) -> bool:
        return self in (TranscriptionStatus.FAILURE, TranscriptionStatus.REVOKED)


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    text: str
    speaker: str | None = None
    language: str | None = None
    language_probability: float | None = None


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None
    duration_s: float | None
    segments: tuple[Segment, ...] = ()
    embeddings: dict[str, list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["segments"] = [asdict(s) for s in self.segments]
        return data


@dataclass(frozen=True)
class TranscriptionState:
    transcription_id: str
    status: TranscriptionStatus
    raw_status: str
    transcript: Transcript | None = None
    message: str | None = None


def parse_state(body: Any, transcription_id: str = "") -> TranscriptionState:
    if not isinstance(body, dict):
        body = {}
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    tid = str(body.get("transcription_id") or data.get("task_id") or transcription_id)
    raw_status = str(body.get("status") or data.get("task_status") or "")
    status = TranscriptionStatus.parse(raw_status)
    message = body.get("message") or data.get("error")
    transcript = parse_transcript(data) if status is TranscriptionStatus.SUCCESS else None
    return TranscriptionState(tid, status, raw_status, transcript, str(message) if message else None)


def parse_transcript(data: dict[str, Any]) -> Transcript:
    items = data.get("results")
    if not isinstance(items, list):
        items = data.get("segments")
        if not isinstance(items, list):
            items = []
    segments = tuple(_segment(item) for item in items if isinstance(item, dict))
    text = data.get("text")
    if not isinstance(text, str):
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
    embeddings = data.get("embeddings") if isinstance(data.get("embeddings"), dict) else None
    return Transcript(text=text, language=_str(data.get("language")), duration_s=_float(data.get("duration")),
                      segments=segments, embeddings=embeddings)


def _segment(item: dict[str, Any]) -> Segment:
    probability = item.get("language_probability", item.get("language_probabilitiy"))
    return Segment(start_s=_float(item.get("start")) or 0.0, end_s=_float(item.get("end")) or 0.0,
                   text=str(item.get("text") or ""), speaker=_str(item.get("speaker_id", item.get("speaker"))),
                   language=_str(item.get("language")), language_probability=_float(probability))


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
