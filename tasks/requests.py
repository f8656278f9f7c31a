"""The worker-side request of ``plaud.transcribe``: what it shows of its kwargs is redacted.

Callers may pass a presigned ``source`` URL. The worker repeats a task's kwargs in its events
(``task-received``, which Flower shows) and in ``inspect`` replies; this request masks URL
queries and known secrets there. The task itself still gets the kwargs as sent.
"""

from __future__ import annotations

from typing import Any

from celery.worker.request import Request

from plaud.redact import mask_url_queries, redact


class RedactingRequest(Request):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argsrepr: str = redact(mask_url_queries(getattr(self, "_argsrepr", None) or ""))
        self._kwargsrepr: str = redact(mask_url_queries(getattr(self, "_kwargsrepr", None) or ""))



class EntryRequest(RedactingRequest):
    """The request of ``plaud.transcribe``: redacted, and its hand-over is not a success.

    The entry task returns once it has handed its id to its chain (``tasks.transcribe.hand_over``);
    the transcript, or the failure, comes at the chain's end. So no task-succeeded event goes out
    for it, as none does for a task that Celery's ``replace`` ended: Flower would show it as the
    entry's final state, before the chain has even started. (Celery builds its own subclass of
    this class for each task type, with its own ``on_success``: the event is the place to act.)
    """

    def send_event(self, type: str, **fields: Any) -> None:
        if type == "task-succeeded":
            return
        super().send_event(type, **fields)
