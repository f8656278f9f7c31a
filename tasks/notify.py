"""Tell whoever waits that a recording ended: a signed webhook, and/or a Celery callback task.

Webhook (``webhook_url`` kwarg): POST of a JSON event with headers

    Plaud-Workers-Event-Id:   the event id (stable across retries: receivers dedupe on it)
    Plaud-Workers-Timestamp:  unix seconds when this attempt was signed
    Plaud-Workers-Signature:  v1=<hex HMAC-SHA256(PLAUD_WEBHOOK_SECRET, "<timestamp>.<body>")>

Delivery is at least once: retried with backoff while it fails (non-2xx, timeouts, refused
connections) for at most ``PLAUD_WEBHOOK_MAX_AGE_S``, every attempt recorded on the recording.
A failed delivery never changes the recording's outcome. URLs that resolve to loopback,
private, link-local or otherwise non-public addresses are refused unless
``PLAUD_WEBHOOK_ALLOW_PRIVATE`` (SSRF).

Callback (``callback_task`` kwarg): the same event is sent as ``kwargs={"event": ...}`` to that
task name on ``callback_queue`` (default ``plaud.callbacks``, never a queue these workers
consume) of this broker, for Python services that run a worker there.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from celery import current_app, shared_task

from plaud.errors import PlaudError

from . import metrics, names
from .names import DEFAULT_PRIORITY, DEFAULT_TENANT
from .records import Record
from .runtime import Runtime, runtime

RETRY_STEPS = (1, 3, 12, 60, 180)  # x PLAUD_WEBHOOK_RETRY_BASE_S (5 s): 5 s, 15 s, 1 min, 5 min, 15 min
log = logging.getLogger("plaud.notify")


class UnsafeWebhook(ValueError):
    """Raised when a webhook URL resolves to an address that must not be called."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance_s: float = 300,
           now: float | None = None) -> bool:
    """What a receiver runs: the signature matches and the timestamp is recent."""
    now = time.time() if now is None else now
    try:
        fresh = abs(now - float(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def check_destination(url: str, *, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeWebhook("the webhook URL must be http(s) with a host")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror:
        raise UnsafeWebhook(f"the webhook host {parts.hostname} does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise UnsafeWebhook(f"the webhook host {parts.hostname} resolves to {address}, a non-public address; "
                                f"set PLAUD_WEBHOOK_ALLOW_PRIVATE=true to allow it")


def event_for(record: Record, event_type: str) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": record.get("event_id") or uuid.uuid4().hex, "type": event_type,
                             "created_at": time.time(), "recording_id": record.recording_id,
                             "tenant": record.get("tenant", DEFAULT_TENANT),
                             "priority": record.get("priority", DEFAULT_PRIORITY), "metadata": record.get("metadata")}
    if event_type == "recording.succeeded":
        event["result"] = record.get("result")
    elif event_type == "recording.cancelled":
        event["cancelled"] = record.get("cancelled")
    else:
        event["failure"] = record.get("failure")
    return event


def announce(rt: Runtime, recording_id: str, event_type: str, record: Record | None = None) -> None:
    """After a recording ends: queue its webhook and send its callback, if it asked for them."""
    record = record or rt.store.get(recording_id)
    if record is None or not (record.get("webhook_url") or record.get("callback_task")):
        return  # nobody to tell: no extra Redis work on the hot path
    record = rt.store.get(recording_id) or record  # the final state, with result or failure
    event = event_for(record, event_type)
    rt.store.update(recording_id, {"event_id": event["event_id"]})
    if record.get("webhook_url"):
        rt.store.update(recording_id, {"webhook_status": "pending", "webhook_attempts": 0})
        webhook.apply_async((recording_id, event_type, event["event_id"]), queue=names.API_QUEUE)
    if record.get("callback_task"):
        current_app.send_task(record.get("callback_task"), kwargs={"event": event},
                              queue=record.get("callback_queue") or names.CALLBACKS_QUEUE)


@shared_task(name=names.WEBHOOK, bind=True, ignore_result=True, max_retries=None)
def webhook(self, recording_id: str, event_type: str, event_id: str) -> None:
    rt = runtime()
    record = rt.store.get(recording_id)
    if record is None or record.get("webhook_status") == "delivered":
        return
    event = {**event_for(record, event_type), "event_id": event_id}
    body = json.dumps(event, separators=(",", ":")).encode()
    first_at = record.number("webhook_first_attempt_at") or time.time()
    attempt = rt.store.increment(recording_id, "webhook_attempts")
    tried = deliver_once(rt, record.get("webhook_url"), body, event_id)
    metrics.count(rt.redis, metrics.WEBHOOK_ATTEMPTS, tried.outcome.value)
    now = time.time()
    rt.store.update(recording_id, {"webhook_first_attempt_at": first_at, "webhook_last_attempt_at": now,
                                   "webhook_last_status": tried.detail})
    if tried.outcome is Delivery.DELIVERED:
        rt.store.update(recording_id, {"webhook_status": "delivered", "webhook_delivered_at": now})
        return
    delay = rt.settings.webhook_retry_base_s * RETRY_STEPS[min(attempt - 1, len(RETRY_STEPS) - 1)]
    if tried.outcome is Delivery.REFUSED or now + delay - first_at > rt.settings.webhook_max_age_s:
        rt.store.update(recording_id, {"webhook_status": "failed"})
        metrics.count(rt.redis, metrics.WEBHOOK_ATTEMPTS, metrics.GIVEN_UP)
        log.warning("webhook for recording %s not delivered after %d attempt(s): %s", recording_id, attempt,
                    tried.detail)
        return
    log.info("webhook for recording %s failed (%s); attempt %d, next in %.1f s", recording_id, tried.detail, attempt,
             delay)
    raise self.retry(countdown=delay)


class Delivery(enum.Enum):
    DELIVERED = "delivered"  # a 2xx
    FAILED = "failed"  # an answer that is not 2xx, or none: worth another try
    REFUSED = "refused"  # the URL must not be called: no retry can help


@dataclass(frozen=True)
class Attempt:
    outcome: Delivery
    detail: str  # the HTTP status as text, or why there was none


def deliver_once(rt: Runtime, url: str, body: bytes, event_id: str) -> Attempt:
    """One POST, and what came of it."""
    try:
        check_destination(url, allow_private=rt.settings.webhook_allow_private)
    except UnsafeWebhook as exc:
        return Attempt(Delivery.REFUSED, f"refused: {exc}")
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "Plaud-Workers-Event-Id": event_id,
               "Plaud-Workers-Timestamp": timestamp,
               "Plaud-Workers-Signature": sign(rt.settings.webhook_secret, timestamp, body)}
    try:
        response = rt.client.transport.request("POST", url, data=body, headers=headers,
                                               read_timeout_s=rt.settings.webhook_timeout_s, allow_redirects=False)
    except PlaudError as exc:
        return Attempt(Delivery.FAILED, str(exc.status) if exc.status else f"error: {exc.message}")
    return Attempt(Delivery.DELIVERED if 200 <= response.status < 300 else Delivery.FAILED, str(response.status))
