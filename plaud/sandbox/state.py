"""The sandbox's memory: uploads in progress, stored files, transcriptions and the counters.

Everything here is touched only from the server's event loop thread, so it needs no locks;
blocking work (merging parts, decoding audio) runs in an executor and hands results back.
"""

from __future__ import annotations

import asyncio
import collections
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from ..transcriptions import TranscriptionStatus as Status
from .audio import Analysis
from .transcripts import build_result

# How many Transcription API arrival times the stats keep (the latest); older ones are counted, not kept.
TX_ARRIVALS_KEPT = 50_000

# Where in its processing time a task reports each in-progress status.
_PROGRESSION = ((0.10, Status.PENDING), (0.20, Status.RECEIVED), (0.30, Status.STARTED), (1.0, Status.PROGRESS))


@dataclass
class Part:
    size: int
    md5_hex: str


@dataclass
class Upload:
    upload_id: str
    file_id: str
    client_id: str
    user_id: str
    filesize: int
    filetype: str
    chunk_size: int
    parts: dict[int, Part] = field(default_factory=dict)
    completing: bool = False

    @property
    def part_count(self) -> int:
        return -(-self.filesize // self.chunk_size)

    def expected_size(self, part_number: int) -> int:
        if part_number < self.part_count:
            return self.chunk_size
        return self.filesize - self.chunk_size * (self.part_count - 1)


@dataclass(frozen=True)
class StoredFile:
    file_id: str
    filetype: str
    path: str
    size: int
    md5_hex: str


@dataclass
class Transcription:
    transcription_id: str
    client_id: str
    file_url: str
    params: dict[str, Any]
    created_at: float
    forced_failure: bool
    speed_factor: float = 1.0
    analyzed_at: float | None = None  # a task cannot finish before its audio is decoded
    md5_hex: str | None = None
    analysis: Analysis | None = None
    error: str | None = None
    _data: dict[str, Any] | None = None

    def processing_s(self, base_s: float, rtf: float) -> float | None:
        """How long this task takes, once its audio is decoded (None before)."""
        if self.analysis is None:
            return None
        return (base_s + rtf * self.analysis.duration_s) * self.speed_factor

    def view(self, now: float, base_s: float, rtf: float) -> dict[str, Any]:
        """The GET response at time ``now``: status from elapsed time, data once SUCCESS."""
        elapsed = now - self.created_at
        if self.error is not None and elapsed >= base_s:
            return self._response(Status.FAILURE, message=self.error)
        if self.analysis is None or self.error is not None:
            return self._response(_in_progress(elapsed / base_s if base_s else 0.99))
        processing_s = self.processing_s(base_s, rtf) or 0.0
        if elapsed < processing_s:
            return self._response(_in_progress(elapsed / processing_s))
        if self.forced_failure:
            return self._response(Status.FAILURE, message="transcription failed (sandbox fault injection)")
        if self._data is None:
            self._data = build_result(self.analysis, self.params, self.md5_hex or "")
        return self._response(Status.SUCCESS, data=self._data)

    def _response(self, status: str, *, data: dict[str, Any] | None = None,
                  message: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"transcription_id": self.transcription_id, "status": status, "data": data or {}}
        if message is not None:
            body["message"] = message
        return body


def _in_progress(fraction: float) -> str:
    for upto, status in _PROGRESSION:
        if fraction < upto:
            return status
    return Status.PROGRESS


class Stats:
    """Counters for tests and benchmarks, served at ``GET /_sandbox/stats``."""

    def __init__(self) -> None:
        self.requests: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.partner_tokens_issued = 0
        self.user_tokens_issued = 0
        self.uploads_started = 0
        self.uploads_completed = 0
        self.part_uploads = 0
        self.part_bytes_received = 0
        self.transcriptions_created = 0
        self.transcriptions_per_md5: collections.Counter[str] = collections.Counter()
        self.bytes_stored = 0
        self.concurrent_part_uploads = 0
        self.peak_concurrent_part_uploads = 0
        # Transcription API requests as they arrive (any outcome), for the most seen in one window.
        self._tx_arrivals: collections.deque[float] = collections.deque()
        self.peak_tx_requests_per_minute = 0
        # Every Transcription API request's arrival, in seconds since these stats began (bounded), and
        # whether the budget refused it: what a benchmark needs for the busiest and idlest minute.
        self.started_at = time.time()
        self._started_monotonic = time.monotonic()
        self.tx_arrivals_s: collections.deque[tuple[float, bool]] = collections.deque(maxlen=TX_ARRIVALS_KEPT)
        self.tx_arrivals_total = 0

    def count_request(self, endpoint: str, status: int | str) -> None:
        self.requests[endpoint][str(status)] += 1

    def part_upload_started(self) -> None:
        self.concurrent_part_uploads += 1
        self.peak_concurrent_part_uploads = max(self.peak_concurrent_part_uploads, self.concurrent_part_uploads)

    def tx_request_arrived(self, now: float) -> None:
        self._tx_arrivals.append(now)
        while self._tx_arrivals[0] <= now - 60.0:
            self._tx_arrivals.popleft()
        self.peak_tx_requests_per_minute = max(self.peak_tx_requests_per_minute, len(self._tx_arrivals))
        self.tx_arrivals_s.append((round(now - self._started_monotonic, 3), False))
        self.tx_arrivals_total += 1

    def tx_request_refused(self) -> None:
        """The request that arrived last was refused by the budget (429)."""
        if self.tx_arrivals_s:
            self.tx_arrivals_s[-1] = (self.tx_arrivals_s[-1][0], True)

    def tx_arrivals_json(self) -> dict[str, Any]:
        """Arrival times (s since ``started_at``, a Unix time) of the latest Transcription API requests."""
        return {"started_at": self.started_at, "total": self.tx_arrivals_total,
                "dropped": self.tx_arrivals_total - len(self.tx_arrivals_s),
                "arrivals_s": [t for t, _ in self.tx_arrivals_s],
                "refused_s": [t for t, refused in self.tx_arrivals_s if refused]}

    def part_upload_ended(self) -> None:
        self.concurrent_part_uploads -= 1

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": {endpoint: dict(counts) for endpoint, counts in sorted(self.requests.items())},
            "partner_tokens_issued": self.partner_tokens_issued,
            "user_tokens_issued": self.user_tokens_issued,
            "uploads_started": self.uploads_started,
            "uploads_completed": self.uploads_completed,
            "part_uploads": self.part_uploads,
            "part_bytes_received": self.part_bytes_received,
            "transcriptions_created": self.transcriptions_created,
            "transcriptions_per_md5": dict(self.transcriptions_per_md5),
            "bytes_stored": self.bytes_stored,
            "concurrent_part_uploads": self.concurrent_part_uploads,
            "peak_concurrent_part_uploads": self.peak_concurrent_part_uploads,
            "peak_tx_requests_per_minute": self.peak_tx_requests_per_minute,
        }


class SandboxState:
    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.uploads: dict[str, Upload] = {}
        self.files: dict[str, StoredFile] = {}
        self.transcriptions: dict[str, Transcription] = {}
        self.analyses: dict[str, Analysis] = {}  # by file MD5: a file is decoded once
        self.analyses_pending: dict[str, asyncio.Future[Analysis]] = {}  # by file MD5: decodes under way
        self.stats = Stats()
        os.makedirs(self.uploads_dir, exist_ok=True)
        os.makedirs(self.files_dir, exist_ok=True)

    @property
    def uploads_dir(self) -> str:
        return os.path.join(self.data_dir, "uploads")

    @property
    def files_dir(self) -> str:
        return os.path.join(self.data_dir, "files")

    def reset(self) -> None:
        for directory in (self.uploads_dir, self.files_dir):
            shutil.rmtree(directory, ignore_errors=True)
            os.makedirs(directory, exist_ok=True)
        self.uploads.clear()
        self.files.clear()
        self.transcriptions.clear()
        self.analyses.clear()
        self.stats = Stats()

    # -- uploads ------------------------------------------------------------------------

    def start_upload(self, client_id: str, user_id: str, filesize: int, filetype: str, chunk_size: int) -> Upload:
        upload = Upload(upload_id=f"upload_{secrets.token_hex(12)}", file_id=f"file_{secrets.token_hex(12)}",
                        client_id=client_id, user_id=user_id, filesize=filesize, filetype=filetype,
                        chunk_size=chunk_size)
        os.makedirs(self.part_dir(upload.upload_id), exist_ok=True)
        self.uploads[upload.upload_id] = upload
        self.stats.uploads_started += 1
        return upload

    def part_dir(self, upload_id: str) -> str:
        return os.path.join(self.uploads_dir, upload_id)

    def part_path(self, upload_id: str, part_number: int) -> str:
        return os.path.join(self.part_dir(upload_id), f"part-{part_number:05d}")

    def record_part(self, upload: Upload, part_number: int, size: int, md5_hex: str) -> None:
        previous = upload.parts.get(part_number)
        self.stats.bytes_stored += size - (previous.size if previous else 0)
        upload.parts[part_number] = Part(size, md5_hex)
        self.stats.part_uploads += 1
        self.stats.part_bytes_received += size

    def finish_upload(self, upload: Upload, merged: StoredFile) -> None:
        """Swap the parts for the merged file; the upload id is spent, as in S3."""
        self.stats.bytes_stored += merged.size - sum(p.size for p in upload.parts.values())
        try:
            os.rmdir(self.part_dir(upload.upload_id))  # empty once its parts are merged: the usual case
        except OSError:
            shutil.rmtree(self.part_dir(upload.upload_id), ignore_errors=True)
        del self.uploads[upload.upload_id]
        self.files[merged.file_id] = merged
        self.stats.uploads_completed += 1

    def merged_path(self, upload: Upload) -> str:
        return os.path.join(self.files_dir, f"{upload.file_id}.{upload.filetype}")

    # -- transcriptions ----------------------------------------------------------------

    def create_transcription(self, client_id: str, file_url: str, params: dict[str, Any],
                             forced_failure: bool, now: float, speed_factor: float = 1.0) -> Transcription:
        tx = Transcription(transcription_id=f"task_exec_{secrets.token_hex(12)}", client_id=client_id,
                           file_url=file_url, params=params, created_at=now, forced_failure=forced_failure,
                           speed_factor=speed_factor)
        self.transcriptions[tx.transcription_id] = tx
        self.stats.transcriptions_created += 1
        return tx

    def file_identified(self, tx: Transcription, md5_hex: str) -> None:
        tx.md5_hex = md5_hex
        self.stats.transcriptions_per_md5[md5_hex] += 1
