"""What every sandbox handler shares: the context, faults and counters, errors, and auth.

API routes answer errors as JSON ``{"code", "message"}`` (the Plaud shape); storage routes
answer S3-style XML. Both inject the configured faults before doing any work.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any, cast
from xml.sax.saxutils import escape

import tornado.web
from tornado.http1connection import HTTP1Connection

from .faults import FaultInjector, KeyedLimiter
from .settings import SandboxSettings
from .signing import Signer, TokenError
from .state import SandboxState

JSON_BODY_MAX_BYTES = 1024 * 1024


@dataclass
class SandboxContext:
    """Everything the handlers of one sandbox share."""

    settings: SandboxSettings
    state: SandboxState
    signer: Signer = field(default_factory=Signer.random)
    executor: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="sandbox-io"))
    faults: FaultInjector = field(init=False)
    token_limiter: KeyedLimiter = field(init=False)
    tx_limiter: KeyedLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.apply(self.settings)

    def apply(self, settings: SandboxSettings) -> None:
        """Install new settings; the fault stream and the rate windows start afresh."""
        self.settings = settings
        self.faults = FaultInjector(settings)
        self.token_limiter = KeyedLimiter(settings.rate("token_rate_limit"))
        self.tx_limiter = KeyedLimiter(settings.rate("tx_rate_limit"))

    def reset(self) -> None:
        self.state.reset()
        self.apply(self.settings)


class ApiError(tornado.web.HTTPError):
    """Raised by a handler to answer with an error: JSON ``{code, message}`` on API routes, S3 XML on storage."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.code = code
        self.message = message
        self.headers = headers or {}


class BaseHandler(tornado.web.RequestHandler):
    endpoint = "unknown"
    faultable = True

    def initialize(self, ctx: SandboxContext) -> None:
        self.ctx = ctx
        self.dropped = False

    @property
    def settings_(self) -> SandboxSettings:
        return self.ctx.settings

    @property
    def state(self) -> SandboxState:
        return self.ctx.state

    async def prepare(self) -> None:
        if not self.faultable:
            return
        fault = self.ctx.faults.decide()
        if fault.latency_s:
            await asyncio.sleep(fault.latency_s)
        if fault.kind == "drop":
            self.dropped = True
            # Tornado's HTTPServer hands handlers an HTTP1Connection; its annotation is the abstract base.
            cast(HTTP1Connection, self.request.connection).close()
            self._finished = True  # nothing more is written: the client sees a dropped connection
            self.on_finish()
            raise tornado.web.Finish()
        if fault.kind == "5xx":
            raise self.fault_error(fault.status, "INTERNAL_ERROR", "injected server error (sandbox fault)")
        if fault.kind in ("429", "429_bare"):
            headers = {"Retry-After": str(fault.retry_after_s)} if fault.retry_after_s else {}
            raise self.fault_error(429, "RATE_LIMITED", "injected rate limit (sandbox fault)", headers)

    def fault_error(self, status: int, code: str, message: str,
                    headers: dict[str, str] | None = None) -> Exception:
        return ApiError(status, code, message, headers=headers)

    def on_finish(self) -> None:
        if getattr(self, "_counted", False):
            return
        self._counted = True
        self.state.stats.count_request(self.endpoint, "dropped" if self.dropped else self.get_status())


class JsonHandler(BaseHandler):
    """API routes: JSON in, JSON out, Plaud-style errors."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(payload))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            for name, value in exc.headers.items():
                self.set_header(name, value)
            body = {"code": exc.code, "message": exc.message}
        elif status_code == 405:
            body = {"code": "METHOD_NOT_ALLOWED", "message": f"{self.request.method} is not allowed here"}
        elif status_code == 404:
            body = {"code": "NOT_FOUND", "message": f"no such endpoint: {self.request.path}"}
        else:
            body = {"code": "INTERNAL_ERROR", "message": self._reason}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def json_body(self) -> dict[str, Any]:
        if len(self.request.body) > JSON_BODY_MAX_BYTES:
            raise ApiError(413, "PARAMS_INVALID", "the request body is too large")
        try:
            body = json.loads(self.request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "PARAMS_INVALID", "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "PARAMS_INVALID", "the request body must be a JSON object")
        return body

    # -- auth --------------------------------------------------------------------------

    def basic_client(self) -> str:
        """The client_id of a valid ``Authorization: Basic base64(client_id:secret_key)``."""
        header = self.request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            raise ApiError(401, "UNAUTHORIZED", "HTTP Basic credentials (client_id:secret_key) are required",
                           headers={"WWW-Authenticate": 'Basic realm="plaud-partner"'})
        try:
            client_id, sep, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(401, "UNAUTHORIZED", "the Basic credentials are not valid base64") from None
        s = self.settings_
        if not sep or not (_same(client_id, s.client_id) and _same(secret, s.secret_key)):
            raise ApiError(401, "INVALID_CLIENT", "client_id or secret_key is wrong")
        return client_id

    def bearer(self, kind: str) -> dict[str, Any]:
        """The claims of a valid ``Authorization: Bearer <token>`` of the given kind."""
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "UNAUTHORIZED", f"a Bearer {kind} access token is required")
        return self.verify_token(token.strip(), kind)

    def verify_token(self, token: str, kind: str) -> dict[str, Any]:
        try:
            return self.ctx.signer.verify_token(token, kind)
        except TokenError as exc:
            raise ApiError(401, exc.code, exc.message) from None

    def api_key_client(self) -> str:
        """The client_id of valid ``X-Client-Id`` + ``X-Client-Api-Key`` headers."""
        client_id = self.request.headers.get("X-Client-Id", "")
        api_key = self.request.headers.get("X-Client-Api-Key", "")
        if not client_id or not api_key:
            raise ApiError(401, "UNAUTHORIZED", "X-Client-Id and X-Client-Api-Key headers are required")
        if not (_same(client_id, self.settings_.client_id) and _same(api_key, self.settings_.api_key)):
            raise ApiError(401, "API_KEY_INVALID", "X-Client-Id or X-Client-Api-Key is wrong")
        return client_id

    def limit_tx(self, client_id: str) -> None:
        """The Transcription API's budget; every request that reaches it counts in the stats' peak."""
        self.state.stats.tx_request_arrived(time.monotonic())
        try:
            self.limit(self.ctx.tx_limiter, client_id, "transcription API")
        except ApiError:
            self.state.stats.tx_request_refused()
            raise

    def limit(self, limiter: KeyedLimiter, key: str, what: str) -> None:
        wait_s = limiter.acquire(key, time.monotonic())
        if wait_s is not None:
            raise ApiError(429, "RATE_LIMITED", f"{what} rate limit exceeded ({limiter.rate})",
                           headers={"Retry-After": str(max(1, round(wait_s + 0.5)))})


class XmlHandler(BaseHandler):
    """Storage routes: S3-style XML errors."""

    def fault_error(self, status: int, code: str, message: str,
                    headers: dict[str, str] | None = None) -> Exception:
        return ApiError(status, "SlowDown" if status == 429 else "InternalError", message, headers=headers)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            code, message = exc.code, exc.message
            for name, value in exc.headers.items():
                self.set_header(name, value)
        else:
            code, message = ("MethodNotAllowed" if status_code == 405 else "InternalError"), self._reason
        self.set_header("Content-Type", "application/xml")
        self.finish(s3_error_xml(code, message, self.request.path))


def s3_error_xml(code: str, message: str, resource: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"<Resource>{escape(resource)}</Resource></Error>")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class NotFoundHandler(JsonHandler):
    endpoint = "not_found"
    faultable = False

    def prepare(self) -> None:  # type: ignore[override]
        raise ApiError(404, "NOT_FOUND", f"no such endpoint: {self.request.method} {self.request.path}")
