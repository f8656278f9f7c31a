"""The client's exceptions: one tree, split into what may succeed if tried again and what will not.

::

    PlaudError
    ├── RetryableError                  try again later (``retry_after_s`` when the server said)
    │   ├── PlaudConnectionError        no answer; ``request_sent`` says whether it may have applied
    │   │   └── PlaudTimeout
    │   ├── RateLimited                 HTTP 429
    │   │   └── BudgetSpent             the fleet-wide budget has no slot (never retried in-process)
    │   │       └── BudgetQueued        ... and the request now waits in the budget's wait list
    │   ├── ServerError                 HTTP 5xx
    │   └── UploadRestartNeeded         the upload must start over (expired URLs, spent upload id)
    └── FatalError                      the same request will fail again; a person must act
        ├── ConfigError                 bad or missing settings (names the variable)
        ├── BadRequest                  HTTP 400, with Plaud's ``code``
        ├── AuthError                   HTTP 401/403 after one re-authentication
        ├── NotFound                    HTTP 404
        ├── SourceError                 the recording cannot be read (missing, empty, unreachable)
        ├── UnsupportedAudio            a format that cannot be transcoded here
        └── IntegrityError              Plaud's MD5 of the upload is not ours

Every error carries the HTTP ``status``, Plaud's ``code`` and the request ``path`` (never the
query, which may hold a presigned signature) when it has them, and never a credential.
"""

from __future__ import annotations


class PlaudError(Exception):
    """Raised for anything that goes wrong talking to Plaud or preparing a recording for it."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 path: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.path = path
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        where = " ".join(str(p) for p in (self.status, self.code, self.path) if p)
        return f"{self.message} [{where}]" if where else self.message

    def to_dict(self) -> dict[str, object]:
        """A JSON-safe description for records and task results."""
        return {"error": type(self).__name__, "message": self.message, "status": self.status,
                "code": self.code, "path": self.path, "retryable": self.retryable}


class RetryableError(PlaudError):
    """Raised when the same request may succeed later."""

    retryable = True


class PlaudConnectionError(RetryableError):
    """Raised when no HTTP answer arrived; ``request_sent`` tells whether Plaud may have acted on it."""

    def __init__(self, message: str, *, request_sent: bool, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.request_sent = request_sent


class PlaudTimeout(PlaudConnectionError):
    """Raised when a request timed out."""


class RateLimited(RetryableError):
    """Raised on HTTP 429, or when the fleet-wide limiter has no budget left."""


class BudgetSpent(RateLimited):
    """Raised when the fleet-wide Transcription API budget has no slot; ``retry_after_s`` says when."""


class BudgetQueued(BudgetSpent):
    """Raised when a request was written into the fleet's wait list instead of sent: end the task;
    the dispatcher enqueues it again when the budget grants it a slot. ``kind`` is submit or poll."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class ServerError(RetryableError):
    """Raised on HTTP 5xx."""


class UploadRestartNeeded(RetryableError):
    """Raised when an upload cannot go on under its upload id and must be started again."""


class FatalError(PlaudError):
    """Raised when trying again will not help without a change by a person."""


class ConfigError(FatalError):
    """Raised when a setting is missing or invalid; the message names the variable."""


class BadRequest(FatalError):
    """Raised on HTTP 400 (and other 4xx without a class of their own)."""


class AuthError(FatalError):
    """Raised on HTTP 401/403 that one re-authentication did not cure."""


class NotFound(FatalError):
    """Raised on HTTP 404."""


class SourceError(FatalError):
    """Raised when a recording's source cannot be read: missing, a directory, empty, unreachable."""


class UnsupportedAudio(FatalError):
    """Raised when a recording's format cannot be uploaded and cannot be transcoded here."""


class IntegrityError(FatalError):
    """Raised when Plaud's MD5 of an uploaded file differs from the one computed while sending it."""
