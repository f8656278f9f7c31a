"""What every stage shares: failing a recording, retrying a stage, holding a stage lease.

A stage's own retries count in the record (``<stage>_attempts``), not in Celery's retry count,
so that a poll's "not done yet" re-enqueue never spends the error budget.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Any, Iterator

from celery import Task

from plaud import retry as retry_policy
from plaud.errors import BudgetSpent, FatalError, PlaudError

from .errors import RecordingFailed
from .notify import announce
from .records import RecordingState
from .runtime import Runtime

log = logging.getLogger("plaud.pipeline")

# For the intermediate stages of the chain. max_retries=None here, on the task, because Celery
# reads retry(max_retries=None) as "the task's default" (3): the record's own counters and the
# poll deadline bound the retries instead. Errors are stored even though results are not, so a
# failure still reaches the entry task's id at the end of the chain.
STAGE_TASK_OPTIONS = {"bind": True, "ignore_result": True, "store_errors_even_if_ignored": True, "max_retries": None}

STAGE_BACKOFF_BASE_S = 2.0
STAGE_BACKOFF_CAP_S = 120.0


def fail(rt: Runtime, recording_id: str, stage: str, reason: str, error: PlaudError | None = None) -> RecordingFailed:
    """Mark the recording FAILED with ``reason``; returns the exception for the caller to raise."""
    failure: dict[str, Any] = {"stage": stage, "reason": reason, "at": time.time()}
    if error is not None:
        failure.update({k: v for k, v in error.to_dict().items() if k in ("status", "code", "error")})
    previous = rt.store.transition(recording_id, RecordingState.FAILED, {"failure": failure})
    rt.plan_nothing_more(recording_id)
    log.warning("recording %s FAILED at %s: %s", recording_id, stage, reason)
    if previous is not None and not previous.is_terminal:
        announce(rt, recording_id, "recording.failed")
    return RecordingFailed(f"recording {recording_id} failed at {stage}: {reason}")


def on_error(task: Task, rt: Runtime, recording_id: str, stage: str, exc: Exception) -> Exception:
    """Decide what an exception in a stage means: a retry (returned to raise) or a failure."""
    if isinstance(exc, BudgetSpent):
        # Not an error: the fleet's request budget is spent for now. Wait without counting.
        return task.retry(countdown=max(exc.retry_after_s or 1.0, 0.5), max_retries=None)
    if isinstance(exc, FatalError):
        reason = f"Plaud refused it ({exc.code}): {exc.message}" if exc.code else exc.message
        return fail(rt, recording_id, stage, reason, exc)
    if isinstance(exc, PlaudError):
        reason = str(exc)
    else:
        log.exception("unexpected error in %s of recording %s", stage, recording_id)
        reason = f"internal error: {type(exc).__name__}"
    attempts = rt.store.increment(recording_id, f"{stage}_attempts")
    limit = rt.settings.poll_error_attempts if stage == "poll" else rt.settings.stage_attempts
    if attempts >= limit:
        return fail(rt, recording_id, stage, f"gave up after {attempts} attempts: {reason}",
                    exc if isinstance(exc, PlaudError) else None)
    retry_after = exc.retry_after_s if isinstance(exc, PlaudError) else None
    countdown = retry_after if retry_after is not None else retry_policy.jittered(
        retry_policy.backoff_s(attempts, base_s=STAGE_BACKOFF_BASE_S, cap_s=STAGE_BACKOFF_CAP_S))
    log.info("%s of recording %s failed (%s); retry %d/%d in %.1f s", stage, recording_id, reason, attempts,
             limit - 1, countdown)
    return task.retry(countdown=countdown, max_retries=None)


@contextmanager
def lease(task: Task, rt: Runtime, recording_id: str, ttl_s: float) -> Iterator[None]:
    """Run the body only if no other live run of a stage holds this recording; else retry later."""
    holder = task.request.id or "local"
    if not rt.store.take_lease(recording_id, holder, ttl_s):
        raise task.retry(countdown=max(rt.store.lease_left_s(recording_id), 1.0), max_retries=None)
    try:
        yield
    finally:
        rt.store.release_lease(recording_id, holder)


def load(rt: Runtime, recording_id: str, stage: str):
    record = rt.store.get(recording_id)
    if record is None:
        raise RecordingFailed(f"recording {recording_id} is unknown or expired (at {stage})")
    if record.state is RecordingState.FAILED:
        reason = (record.get("failure") or {}).get("reason", "unknown reason")
        raise RecordingFailed(f"recording {recording_id} failed at {(record.get('failure') or {}).get('stage')}: "
                              f"{reason}")
    return record
