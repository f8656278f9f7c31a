"""HMAC signing for the sandbox: JWT-shaped bearer tokens and S3-style presigned URLs.

Tokens are HS256 JWTs, like the ones Plaud hands out, so a client that peeks at ``exp``
or ``client_id`` sees what it would see in production. Nothing is stored: a token or a URL
is valid when its signature matches and it has not expired.
"""

from __future__ import annotations

import base64
import calendar
import collections
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


class TokenError(Exception):
    """Raised when a bearer token is malformed, wrongly signed, expired or of the wrong kind."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SignatureError(Exception):
    """Raised when a presigned URL is unsigned, wrongly signed or expired."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Signer:
    key: bytes
    # The signature of every token and URL handed out, newest last: what a secrets audit looks for.
    issued: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=200_000), compare=False,
                                           repr=False)

    @classmethod
    def random(cls) -> Signer:
        return cls(secrets.token_bytes(32))

    def _mac(self, message: str) -> str:
        return hmac.new(self.key, message.encode(), hashlib.sha256).hexdigest()

    # -- bearer tokens ------------------------------------------------------------------

    def issue_token(self, kind: str, ttl_s: int, *, now: float | None = None, **claims: Any) -> str:
        now = time.time() if now is None else now
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = {"typ": kind, "iat": int(now), "exp": int(now) + int(ttl_s),
                   "jti": secrets.token_hex(8), **claims}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        signature = _b64(hmac.new(self.key, f"{header}.{body}".encode(), hashlib.sha256).digest())
        self.issued.append(signature)
        return f"{header}.{body}.{signature}"

    def verify_token(self, token: str, kind: str, *, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        try:
            header, body, signature = token.split(".")
            expected = _b64(hmac.new(self.key, f"{header}.{body}".encode(), hashlib.sha256).digest())
            if not hmac.compare_digest(signature, expected):
                raise TokenError("TOKEN_INVALID", "the token's signature does not match")
            claims = json.loads(_unb64(body))
        except TokenError:
            raise
        except (ValueError, UnicodeDecodeError):
            raise TokenError("TOKEN_INVALID", "the token is not a well-formed JWT") from None
        if claims.get("typ") != kind:
            raise TokenError("TOKEN_INVALID", f"a {kind} token is required here, got a {claims.get('typ')} token")
        if now >= claims.get("exp", 0):
            raise TokenError("TOKEN_EXPIRED", f"the {kind} token has expired")
        return claims

    # -- presigned URLs -----------------------------------------------------------------

    def presign(self, base_url: str, path: str, ttl_s: int, *, now: float | None = None) -> str:
        now = int(time.time() if now is None else now)
        date = time.strftime(AMZ_DATE_FORMAT, time.gmtime(now))
        query = {"X-Amz-Date": date, "X-Amz-Expires": str(int(ttl_s))}
        query["X-Amz-Signature"] = self._mac(f"{path}\n{date}\n{int(ttl_s)}")
        self.issued.append(query["X-Amz-Signature"])
        return f"{base_url}{path}?{urlencode(query)}"

    def verify_presigned(self, path: str, query: dict[str, str], *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        date, expires, signature = (query.get(k) for k in ("X-Amz-Date", "X-Amz-Expires", "X-Amz-Signature"))
        if not (date and expires and signature):
            raise SignatureError("AccessDenied", "Query-string authentication requires the X-Amz-Date, "
                                                 "X-Amz-Expires and X-Amz-Signature parameters")
        if not hmac.compare_digest(signature, self._mac(f"{path}\n{date}\n{expires}")):
            raise SignatureError("SignatureDoesNotMatch", "The request signature we calculated does not "
                                                          "match the signature you provided")
        try:
            issued = calendar.timegm(time.strptime(date, AMZ_DATE_FORMAT))
            expires_at = issued + int(expires)
        except ValueError:
            raise SignatureError("AccessDenied", "X-Amz-Date or X-Amz-Expires is malformed") from None
        if now >= expires_at:
            raise SignatureError("AccessDenied", "Request has expired")
