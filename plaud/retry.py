"""Retry decisions for single HTTP calls: whether, how long, with the randomness kept apart.

Backoff is a small pure function; jitter takes its random source as an argument so tests can
pin it. A server's ``Retry-After`` wins over our own schedule.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import BudgetSpent, PlaudConnectionError, PlaudError, RetryableError

log = logging.getLogger("plaud.retry")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_s: float = 0.25
    cap_s: float = 10.0
    retry_after_cap_s: float = 60.0


def backoff_s(attempt: int, *, base_s: float = 0.25, cap_s: float = 10.0) -> float:
    """Exponential delay before retry number ``attempt`` (1-based), capped."""
    return min(cap_s, base_s * (2 ** (attempt - 1)))


def jittered(delay_s: float, rng: random.Random | None = None) -> float:
    """'Equal jitter': half fixed, half random, so retries spread out but never come at once."""
    uniform = rng.uniform if rng is not None else random.uniform
    return delay_s / 2 + uniform(0, delay_s / 2)


def should_retry(exc: BaseException, *, idempotent: bool = True) -> bool:
    if not isinstance(exc, RetryableError) or isinstance(exc, BudgetSpent):
        return False  # a spent budget is for the caller to schedule around, not to sleep on here
    if not idempotent and isinstance(exc, PlaudConnectionError) and exc.request_sent:
        return False  # it may have been applied; the caller decides what a second one costs
    return True


def delay_s(exc: PlaudError, attempt: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    if exc.retry_after_s is not None:
        return min(exc.retry_after_s, policy.retry_after_cap_s)
    return jittered(backoff_s(attempt, base_s=policy.base_s, cap_s=policy.cap_s), rng)


def call(fn: Callable[[], T], policy: RetryPolicy, *, what: str, idempotent: bool = True,
         sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``fn``, retrying retryable failures up to ``policy.attempts`` times in all."""
    attempt = 1
    while True:
        try:
            return fn()
        except PlaudError as exc:
            if attempt >= policy.attempts or not should_retry(exc, idempotent=idempotent):
                raise
            wait = delay_s(exc, attempt, policy)
            log.info("%s failed (%s); retry %d/%d in %.2f s", what, exc, attempt, policy.attempts - 1, wait)
            sleep(wait)
            attempt += 1
