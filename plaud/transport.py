"""The one place that talks HTTP: every request has a timeout, every failure becomes a PlaudError.

``requests`` exceptions are translated here and nowhere else; HTTP statuses map to exception
classes in ``error_for_response``. Messages quote at most a short, redacted piece of the body.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from .errors import (
    AuthError,
    BadRequest,
    FatalError,
    NotFound,
    PlaudConnectionError,
    PlaudError,
    PlaudTimeout,
    RateLimited,
    ServerError,
)
from .redact import redact

log = logging.getLogger("plaud.http")

BODY_EXCERPT_CHARS = 300
_XML_FIELD = re.compile(r"<(Code|Message)>([^<]*)</\1>")


class Transport:
    def __init__(self, session: requests.Session | None = None, *, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 30.0, user_agent: str = "plaud-workers") -> None:
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", user_agent)
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s

    def request(self, method: str, url: str, *, read_timeout_s: float | None = None,
                **kwargs: Any) -> requests.Response:
        """Send one request; returns a 2xx/3xx response or raises the matching PlaudError."""
        path = urlsplit(url).path
        timeout = (self.connect_timeout_s, read_timeout_s or self.read_timeout_s)
        try:
            response = self.session.request(method, url, timeout=timeout, **kwargs)
        except requests.exceptions.ConnectTimeout:
            raise PlaudTimeout("connecting timed out", path=path, request_sent=False) from None
        except requests.exceptions.Timeout:
            raise PlaudTimeout("no response in time", path=path, request_sent=True) from None
        except requests.exceptions.ConnectionError as exc:
            raise PlaudConnectionError(_connection_reason(exc), path=path,
                                       request_sent=not _never_connected(exc)) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise FatalError(f"invalid URL: {type(exc).__name__}", path=path) from None
        except requests.exceptions.RequestException as exc:
            raise PlaudConnectionError(f"request failed: {type(exc).__name__}", path=path,
                                       request_sent=True) from None
        if response.status_code >= 400:
            error = error_for_response(response.status_code, response.headers, response.text, path)
            log.debug("%s %s -> %s %s", method, path, response.status_code, error.code or "")
            raise error
        return response


def error_for_response(status: int, headers: Any, body: str, path: str) -> PlaudError:
    """Map an HTTP error answer to its exception class; the one place that decides."""
    code, message = _parse_error_body(body)
    message = redact(message or f"HTTP {status}")
    kwargs: dict[str, Any] = {"status": status, "code": code, "path": path}
    if status == 429:
        return RateLimited(message, retry_after_s=_retry_after(headers), **kwargs)
    if status >= 500:
        return ServerError(message, retry_after_s=_retry_after(headers), **kwargs)
    if status in (401, 403):
        return AuthError(message, **kwargs)
    if status == 404:
        return NotFound(message, **kwargs)
    return BadRequest(message, **kwargs)


def _parse_error_body(body: str) -> tuple[str | None, str | None]:
    text = (body or "").strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            code = data.get("code")
            message = next((data[k] for k in ("message", "detail", "error", "msg") if isinstance(data.get(k), str)),
                           None)
            return (str(code) if code is not None else None), message
    if text.startswith("<"):
        fields = dict(_XML_FIELD.findall(text))
        if fields:
            return fields.get("Code"), fields.get("Message")
    return None, text[:BODY_EXCERPT_CHARS] or None


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare enough to fall back to our own backoff


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    reason = exc.args[0] if exc.args else None
    inner = getattr(reason, "reason", reason)
    return isinstance(inner, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.NameResolutionError))


def _connection_reason(exc: requests.exceptions.ConnectionError) -> str:
    if _never_connected(exc):
        return "could not connect"
    return "the connection was closed before a response arrived"
