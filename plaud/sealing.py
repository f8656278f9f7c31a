"""Seal secrets kept in Redis (tokens, presigned URLs) so a dump of Redis leaks none of them.

AES-GCM with a key derived from the partner secret key; the Redis key name is bound as
associated data, so a sealed value moved to another key does not open. A value sealed under
a rotated secret simply fails to open, which callers treat as absent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_KEY_LABEL = b"plaud-workers/redis-sealing/v1"
_PREFIX = "sealed:v1:"


class Sealer:
    def __init__(self, secret: str) -> None:
        key = hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, *, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str | bytes | None, *, context: str) -> str | None:
        """The plaintext, or None when absent, not sealed by us, or sealed under another key."""
        if sealed is None:
            return None
        if isinstance(sealed, bytes):
            sealed = sealed.decode("ascii", "replace")
        if not sealed.startswith(_PREFIX):
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_PREFIX):])
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (InvalidTag, ValueError):
            return None
