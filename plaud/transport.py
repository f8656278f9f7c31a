"""The one place that talks HTTP: every request has a timeout, every failure becomes a PlaudError.

``requests`` exceptions are translated here and nowhere else; HTTP statuses map to exception
classes in ``error_for_response``. Messages quote at most a short, redacted piece of the body.
"""

from __future__ import annotations

import json
import logging
import os
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


class EnvironmentOnceSession(requests.Session):
    """A ``requests.Session`` that looks up the proxy environment once per origin, not per request.

    ``requests`` reads every environment variable (``HTTPS_PROXY``, ``NO_PROXY``, …) on each
    request: about a quarter of its CPU per call here. A worker's environment does not change while
    it runs, so the answer for an origin (scheme and host) is kept; everything else ``requests``
    takes from the environment (CA bundle, netrc) is read as before.
    """

    MAX_ORIGINS = 256  # presigned part URLs may come from a few storage hosts; never an unbounded cache
    # Connections kept per host. requests keeps 10; a thread-pool worker runs 16 tasks at once (and
    # an upload sends parts in parallel), so beyond 10 each finished request's connection was
    # dropped with a warning and the next request opened a new one.
    CONNECTIONS_PER_HOST = 32

    def __init__(self) -> None:
        super().__init__()
        for prefix in ("https://", "http://"):
            self.mount(prefix, requests.adapters.HTTPAdapter(pool_maxsize=self.CONNECTIONS_PER_HOST))
        self._environment_proxies: dict[tuple[str, str, str | None], dict[str, str]] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
                                   ) -> dict[str, Any]:
        if not self.trust_env or proxies is None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        no_proxy = proxies.get("no_proxy")
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, no_proxy)
        found = self._environment_proxies.get(key)
        if found is None:
            if len(self._environment_proxies) >= self.MAX_ORIGINS:
                self._environment_proxies.clear()
            found = self._environment_proxies[key] = requests.utils.get_environ_proxies(url, no_proxy=no_proxy)
        for name, value in found.items():
            proxies.setdefault(name, value)
        # The rest as requests does it: the CA bundle from the environment, then the session's settings.
        if verify is True or verify is None:
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or verify
        return {"proxies": requests.sessions.merge_setting(proxies, self.proxies),
                "stream": requests.sessions.merge_setting(stream, self.stream),
                "verify": requests.sessions.merge_setting(verify, self.verify),
                "cert": requests.sessions.merge_setting(cert, self.cert)}


class Transport:
    def __init__(self, session: requests.Session | None = None, *, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 30.0, user_agent: str = "plaud-workers") -> None:
        self.session = session or EnvironmentOnceSession()
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
