"""One place that masks secrets in text: tokens, credentials and presigned-URL signatures.

Used by the logging filter (``install_log_redaction``: the workers put it on the handlers of
the loggers Celery sets up, so every record that reaches a handler is masked) and wherever an
error message quotes something that came over the wire.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "***"

_PATTERNS = (
    # Signatures and credentials in presigned URLs (S3 v2/v4 and generic names).
    re.compile(r"(?i)((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId|"
               r"access_token|refresh_token|token|api_key|apikey|secret)=)[^&\s\"'<>]+"),
    # Authorization headers and JSON token fields.
    re.compile(r"(?i)(\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(\"(?:access_token|refresh_token|secret_key|api_key|X-Client-Api-Key|Authorization)\"\s*:\s*\")"
               r"[^\"]+"),
    re.compile(r"(?i)((?:X-Client-Api-Key|Authorization)['\"]?\s*[:=]\s*['\"]?)[^'\",\s}]+"),
    # Anything shaped like a JWT.
    re.compile(r"()\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
)

_known_secrets: set[str] = set()
_lock = threading.Lock()


def register_secrets(values: Iterable[str | None]) -> None:
    """Add configured secrets (keys, tokens) to mask wherever they appear verbatim."""
    with _lock:
        _known_secrets.update(v for v in values if v and len(v) >= 6)


def url_without_query(url: str) -> str:
    """An http(s) URL as it may be shown: without its query, which may carry a signature.
    Anything else (a local path) comes back as it is."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return url
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


# The password in a URL's userinfo (``redis://:password@host``, ``sentinel://user:password@host``):
# Celery prints a broker URL that fails to connect, and a Sentinel list has several.
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s:@/;'\"]*:)[^\s@/;'\"]+(?=@)")


def mask_url_passwords(text: str) -> str:
    """Mask the password of every URL in ``text`` (``redis://:***@host:6379/0``)."""
    return _URL_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


_URL_QUERY = re.compile(r"(https?://[^\s'\"?#]+)\?[^\s'\"#]*")


def mask_url_queries(text: str) -> str:
    """Drop the query of every URL in ``text``: any parameter name may carry a signature."""
    return _URL_QUERY.sub(lambda m: m.group(1) + "?" + MASK, text)


def redact(text: str) -> str:
    text = mask_url_passwords(text)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's final message and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Attach the filter to every handler of ``logger`` (default: root), idempotently."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
