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
