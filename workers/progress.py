"""The live view of recordings in flight, for ``plaud-workers transcribe --wait``.

On a terminal the table is redrawn in place twice a second; otherwise (a pipe, CI) a line is
printed whenever a recording's state changes, so logs stay readable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

ENDED = ("SUCCEEDED", "FAILED", "CANCELLED")
MIB = 1024 * 1024


@dataclass
class Row:
    recording_id: str
    label: str
    state: str = "PENDING"
    detail: str = ""
    bytes_seen: list[tuple[float, int]] = field(default_factory=list)


def describe(record: dict[str, Any] | None, row: Row, now: float) -> tuple[str, str]:
    """(state, detail) for one recording, from its public record."""
    if record is None:
        return "PENDING", "waiting for a worker"
    state = record.get("state", "PENDING")
    if state == "UPLOADING":
        sent, total = int(float(record.get("bytes_sent", 0))), int(float(record.get("bytes_total", 0) or 0))
        row.bytes_seen = [(t, b) for t, b in row.bytes_seen if now - t < 5] + [(now, sent)]
        first_t, first_b = row.bytes_seen[0]
        rate = (sent - first_b) / (now - first_t) if now > first_t else 0.0
        return state, f"{sent / MIB:.1f}/{total / MIB:.1f} MiB at {rate / MIB:.1f} MiB/s" if total else "starting"
    if state in ("SUBMITTED", "PROCESSING"):
        submitted = float(record.get("submitted_at") or now)
        return state, f"in Plaud {now - submitted:.0f} s, {record.get('plaud_status', 'PENDING')}, " \
                      f"{record.get('polls', 0)} poll(s)"
    if state == "FAILED":
        failure = record.get("failure") or {}
        return state, f"{failure.get('stage')}: {failure.get('reason')}"
    if state == "CANCELLED":
        cancelled = record.get("cancelled") or {}
        return state, f"at {cancelled.get('stage')}: {cancelled.get('note')}"
    if state == "SUCCEEDED":
        return state, "done"
    if record.get("waiting_for"):
        return state, f"waiting for {'its upload slot' if record['waiting_for'] == 'upload' else 'budget'}"
    return state, ""


class ProgressView:
    def __init__(self, rows: list[Row], out: TextIO, *, live: bool) -> None:
        self.rows = rows
        self.out = out
        self.live = live
        self._drawn = 0

    def update(self, fetch: Callable[[str], dict[str, Any] | None]) -> None:
        now = time.time()
        for row in self.rows:
            state, detail = describe(fetch(row.recording_id), row, now)
            if not self.live and state != row.state:
                self.out.write(f"{row.label}: {state}" + (f" ({detail})" if detail else "") + "\n")
            row.state, row.detail = state, detail
        if self.live:
            self._draw()
        self.out.flush()

    def _draw(self) -> None:
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F")  # back to the first line of the table
        width = max(len(r.label) for r in self.rows)
        for row in self.rows:
            self.out.write(f"\x1b[2K{row.label:<{width}}  {row.state:<10}  {row.detail}"[:200] + "\n")
        self._drawn = len(self.rows)

    @property
    def finished(self) -> bool:
        return all(r.state in ENDED for r in self.rows)
