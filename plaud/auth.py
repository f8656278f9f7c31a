"""Partner and user tokens, shared by every process of the fleet.

Plaud allows 10 partner-token requests per minute per client, so a fleet must not have each
process mint its own. Tokens live in Redis (sealed: see ``sealing``), are reused until a
margin before they expire, and are fetched under a single-flight lock: one process mints, the
others wait for the cache to fill. Without Redis an in-process store does the same within the
process. A process also remembers the user token it last read for ``READ_AGAIN_AFTER_S``.

A 401 from an endpoint that took a token drops that token (only if it is still the cached
one: another process may have replaced it already) and the call is made once more with a
fresh one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import AuthError, FatalError, PlaudTimeout
from .keys import TOKEN_PREFIX
from .sealing import Sealer

log = logging.getLogger("plaud.auth")

EXPIRY_MARGIN_S = 120.0
EXPIRY_MARGIN_FRACTION = 0.1
LOCK_TTL_S = 30.0
WAIT_POLL_S = 0.05
# How long a process uses the user token it last read before reading the fleet's cache again:
# spares a Redis round trip and an unsealing per request. A token another process replaced is
# still refused by Plaud with a 401 at worst, which drops it here and reads the new one.
READ_AGAIN_AFTER_S = 30.0
MAX_REMEMBERED = 1024  # user tokens a process keeps in memory (one per user); never unbounded

# Delete a key only if it still holds what we read: releases our lock, or drops a token that
# no other process has replaced in the meantime.
DELETE_IF_EQUAL = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # unix seconds, already shortened by the refresh margin

    def fresh(self, now: float) -> bool:
        return now < self.expires_at


def usable_until(issued_at: float, expires_in_s: float) -> float:
    """When to stop using a token: a margin before it expires, never less than half its life."""
    margin = min(EXPIRY_MARGIN_S, max(expires_in_s * EXPIRY_MARGIN_FRACTION, 1.0), expires_in_s / 2)
    return issued_at + expires_in_s - margin


class TokenStore(Protocol):
    def get(self, key: str) -> Token | None: ...

    def put(self, key: str, token: Token) -> None: ...

    def drop(self, key: str, token: Token) -> None: ...

    def single_flight(self, key: str, fetch: Callable[[], Token]) -> Token: ...


class MemoryTokenStore:
    """Tokens for one process (plain library use, no Redis)."""

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: str) -> Token | None:
        token = self._tokens.get(key)
        return token if token and token.fresh(time.time()) else None

    def put(self, key: str, token: Token) -> None:
        self._tokens[key] = token

    def drop(self, key: str, token: Token) -> None:
        with self._guard:
            if self._tokens.get(key) == token:
                del self._tokens[key]

    def single_flight(self, key: str, fetch: Callable[[], Token]) -> Token:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            return self.get(key) or self._fetch_and_put(key, fetch)

    def _fetch_and_put(self, key: str, fetch: Callable[[], Token]) -> Token:
        token = fetch()
        self.put(key, token)
        return token


class RedisTokenStore:
    """Tokens shared through Redis, sealed at rest, fetched by one process at a time."""

    def __init__(self, redis: Any, sealer: Sealer, *, prefix: str = TOKEN_PREFIX,
                 lock_ttl_s: float = LOCK_TTL_S) -> None:
        self.redis = redis
        self.sealer = sealer
        self.prefix = prefix
        self.lock_ttl_s = lock_ttl_s
        self._delete_if_equal = redis.register_script(DELETE_IF_EQUAL)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def get(self, key: str) -> Token | None:
        raw = self.redis.get(self._key(key))
        opened = self.sealer.open(raw, context=self._key(key))
        if opened is None:
            return None
        data = json.loads(opened)
        token = Token(data["value"], data["expires_at"])
        return token if token.fresh(time.time()) else None

    def put(self, key: str, token: Token) -> None:
        ttl_ms = int((token.expires_at - time.time()) * 1000)
        if ttl_ms <= 0:
            return
        sealed = self.sealer.seal(json.dumps({"value": token.value, "expires_at": token.expires_at}),
                                  context=self._key(key))
        self.redis.set(self._key(key), sealed, px=ttl_ms)

    def drop(self, key: str, token: Token) -> None:
        raw = self.redis.get(self._key(key))
        opened = self.sealer.open(raw, context=self._key(key))
        if opened is not None and json.loads(opened)["value"] == token.value:
            self._delete_if_equal(keys=[self._key(key)], args=[raw])

    def single_flight(self, key: str, fetch: Callable[[], Token]) -> Token:
        lock_key = self._key(key) + ":lock"
        owner = uuid.uuid4().hex
        give_up = time.monotonic() + self.lock_ttl_s * 2
        while True:
            token = self.get(key)
            if token is not None:
                return token
            if self.redis.set(lock_key, owner, nx=True, px=int(self.lock_ttl_s * 1000)):
                try:
                    token = self.get(key)  # filled while we were taking the lock
                    if token is None:
                        token = fetch()
                        self.put(key, token)
                    return token
                finally:
                    self._delete_if_equal(keys=[lock_key], args=[owner])
            if time.monotonic() > give_up:
                raise PlaudTimeout("waited too long for another process to fetch a token", request_sent=False)
            time.sleep(WAIT_POLL_S)


class TokenProvider:
    """Mints, caches and renews the partner token and per-user tokens."""

    def __init__(self, *, store: TokenStore, client_id: str, mint_partner: Callable[[], dict[str, Any]],
                 mint_user: Callable[[str, str], dict[str, Any]]) -> None:
        self.store = store
        self.client_id = client_id
        self._mint_partner = mint_partner
        self._mint_user = mint_user
        self._remembered: dict[str, tuple[Token, float]] = {}  # key -> (token, read again after)

    def _partner_key(self) -> str:
        return f"partner:{self.client_id}"

    def _user_key(self, user_id: str) -> str:
        return f"user:{self.client_id}:{hashlib.sha256(user_id.encode()).hexdigest()[:24]}"

    def partner_token(self) -> Token:
        return self.store.single_flight(self._partner_key(), self._fetch_partner)

    def user_token(self, user_id: str) -> Token:
        key = self._user_key(user_id)
        now = time.time()
        remembered = self._remembered.get(key)
        if remembered is not None and now < remembered[1] and remembered[0].fresh(now):
            return remembered[0]
        token = self.store.single_flight(key, lambda: self._fetch_user(user_id))
        if len(self._remembered) >= MAX_REMEMBERED:
            self._remembered.clear()
        self._remembered[key] = (token, now + READ_AGAIN_AFTER_S)
        return token

    def drop_user_token(self, user_id: str, token: Token) -> None:
        key = self._user_key(user_id)
        self._remembered.pop(key, None)
        self.store.drop(key, token)

    def with_user_token(self, user_id: str, call: Callable[[str], Any]) -> Any:
        """Run ``call(token)``; on a 401, drop the token and run it once more with a fresh one."""
        token = self.user_token(user_id)
        try:
            return call(token.value)
        except AuthError as exc:
            if exc.status != 401:
                raise
            log.info("user token refused (%s); minting a fresh one", exc.code)
            self.drop_user_token(user_id, token)
            return call(self.user_token(user_id).value)

    def _fetch_partner(self) -> Token:
        issued_at = time.time()
        body = self._mint_partner()
        log.info("minted a partner token for client %s (expires in %s s)", self.client_id, body.get("expires_in"))
        return Token(_access_token(body), usable_until(issued_at, float(body.get("expires_in") or 3600)))

    def _fetch_user(self, user_id: str) -> Token:
        issued_at = time.time()
        partner = self.partner_token()
        try:
            body = self._mint_user(partner.value, user_id)
        except AuthError as exc:
            if exc.status != 401:
                raise
            # The partner token was revoked or expired early: replace it once, as Plaud's own broker does.
            log.info("partner token refused (%s); minting a fresh one", exc.code)
            self.store.drop(self._partner_key(), partner)
            body = self._mint_user(self.partner_token().value, user_id)
        return Token(_access_token(body), usable_until(issued_at, float(body.get("expires_in") or 86400)))


def _access_token(body: dict[str, Any]) -> str:
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise FatalError("the token response has no access_token")
    return token
