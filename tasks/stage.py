"""The base class of the pipeline's stages (upload, submit, poll): what every stage shares.

A stage task owns loading its recording under the stage lease, and deciding what an exception
means — a wait for budget (as data in Redis: the task ends), a retry, or the end of the
recording — so that each stage module
keeps only what is its own. A stage's own retries count in the record (``<stage>_attempts``),
not in Celery's retry count, so that a poll's "not done yet" re-enqueue never spends the error
budget: only ``outcome_of`` counts attempts, and only for errors.

Helpers that end the task return the exception for the caller to raise (``raise
self.retry_in(5.0)``, ``raise self.failed(...)``), so every exit reads as one at the call site.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import redis
from celery import Task
from celery.exceptions import Retry

from plaud import retry as retry_policy
from plaud.budget import Budget
from plaud.errors import BudgetQueued, BudgetSpent, FatalError, PlaudError, RateLimited

from . import metrics
from .cancel import RecordingCancelled, cancelled_message
from .errors import RecordingFailed
from .failures import Failure, FailureKind, StageName, classify
from .followers import followers_of, tell_followers
from .names import DEFAULT_PRIORITY, DEFAULT_TENANT
from .notify import announce
from .records import Record, RecordingState, StageLease
from .runtime import Runtime, runtime
from .settings import PipelineSettings

log = logging.getLogger("plaud.pipeline")

STAGE_BACKOFF_BASE_S = 2.0
STAGE_BACKOFF_CAP_S = 120.0
BUDGET_WAIT_MIN_S = 0.5
LEASE_WAIT_MIN_S = 1.0
# A failover takes seconds to a minute: look again soon (Celery's retry count also counts a
# poll's "not done yet", so it cannot pace this).
REDIS_AWAY_RETRY_S = 2.0
# What redis-py raises when Redis does not answer (MasterNotFoundError and a demoted master are
# ConnectionErrors too): an outage, not a fault of the recording.
REDIS_AWAY = (redis.ConnectionError, redis.TimeoutError)


class NothingFollows(Exception):  # noqa: N818 (an outcome, not an error)
    """This run of a stage ends here and its chain does not go on: the recording waits as data
    (the dispatcher enqueues the stage again when its turn comes) or another run took it over.

    ``StageTask`` ends the task with a plain return of ``outcome`` rather than Celery's ``Ignore``.
    For ``Ignore`` Celery builds an exception report of the whole call stack in the process that ran
    the task (CPU on every wait, and copies of code objects that a worker keeps growing into) and
    sends no final event, so Flower shows the task as started for ever. A return is acknowledged
    the same way, stores nothing (a stage ignores its result) and shows as succeeded with the
    outcome as its result.
    """

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def load(rt: Runtime, recording_id: str, stage: StageName, *, backend: Any = None) -> Record:
    """The recording's record; raises RecordingFailed when it is gone or has failed already.

    With the result ``backend``, a recording found ended tells its followers again first: the
    stage that ended it may have died before it told them (this run may be its redelivery).
    """
    return still_live(rt.store.get(recording_id), recording_id, stage, backend=backend)


def still_live(record: Record | None, recording_id: str, stage: StageName, *, backend: Any = None) -> Record:
    """``record`` as read; raises RecordingFailed when it is gone or has failed already (``load``)."""
    if record is None:
        raise RecordingFailed(f"recording {recording_id} is unknown or expired (at {stage.value})")
    error: RecordingFailed | None = None
    if record.state is RecordingState.FAILED:
        error = RecordingFailed(Failure.from_record(record).describe(recording_id))
    elif record.state is RecordingState.CANCELLED:
        error = RecordingCancelled(cancelled_message(recording_id, record.get("cancelled") or {}))
    if error is not None:
        if backend is not None:
            tell_followers(backend, followers_of(record), error=error)
        raise error
    return record


def wait_as_data(rt: Runtime, recording_id: str, what: str) -> str:
    """Mark the recording as waiting in Redis (for budget, or for its upload slot), in the line it
    has joined; returns the outcome for the task that ends here.

    The record says what it waits for (``status`` shows it); its due time stays a grace period
    ahead, so the reconciler looks at it and re-drives it only if the wait itself was lost.
    """
    now = time.time()
    rt.store.mark_waiting(recording_id, what, now=now, due_at=now + rt.settings.reconcile_grace_s)
    return f"waits as data for {what}"


def budget_place(record: Record) -> dict[str, str]:
    """Where the recording's requests stand in the budget's lines: its tenant and priority."""
    return {"tenant": record.get("tenant") or DEFAULT_TENANT, "priority": record.get("priority") or DEFAULT_PRIORITY}


def record_failure(rt: Runtime, recording_id: str, failure: Failure, *, backend: Any) -> RecordingFailed:
    """Mark the recording FAILED and tell whoever waits (its followers' results are written to
    ``backend``); returns the exception for the caller to raise."""
    ended = rt.store.end(recording_id, RecordingState.FAILED, {"failure": failure.to_dict()})
    previous = ended.previous
    rt.plan_nothing_more(recording_id)
    rt.leave_lines(recording_id)
    rt.store.stop_waiting(recording_id)
    log.warning("recording %s FAILED at %s (%s): %s", recording_id, failure.stage.value, failure.kind.value,
                failure.reason)
    error = RecordingFailed(failure.describe(recording_id))
    if previous is not None and not previous.is_terminal:
        metrics.count(rt.redis, metrics.FAILURES, failure.stage.value, failure.kind.value)
        announce(rt, recording_id, "recording.failed")
        tell_followers(backend, ended.followers, error=error)
    return error


class StageTask(Task):
    """A stage of the chain; ``stage`` is set by each task (``@shared_task(base=StageTask, stage=...)``)."""

    stage: ClassVar[StageName]
    # An intermediate link of the chain: no result of its own. Failures are stored all the same
    # (store_errors_even_if_ignored, below), so a failure still reaches the entry task's id at the
    # end of the chain. max_retries=None here, on the class, because Celery reads
    # retry(max_retries=None) as "the task's default" (3): the record's own counters and the poll
    # deadline bound the retries instead.
    ignore_result = True
    max_retries = None

    @property
    def store_errors_even_if_ignored(self) -> bool:  # type: ignore[override]
        """Whether Celery stores the error being handled: a failure, not a retry.

        A stage's RETRY state would go under the stage's own task id, which nobody reads (callers
        watch the entry's id, Flower the task events), with the whole traceback, kept for
        ``result_expires``: a read and a write each time a poll asks again, and a key of a few
        KiB per recording for a week. Celery asks while it handles the exception, in the
        ``except`` clause that caught it, as its own ``handle_retry`` relies on.
        """
        return not isinstance(sys.exc_info()[1], Retry)

    @property
    def rt(self) -> Runtime:
        return runtime()

    def __call__(self, *args: object, **kwargs: object) -> object:
        try:
            return super().__call__(*args, **kwargs)
        except NothingFollows as end:
            request = self.request
            request.chain = request.callbacks = None  # what Celery would send on after a return
            return end.outcome
        except REDIS_AWAY as exc:
            # Outside errors_handled too (a stage's first read of its record): Redis being away
            # is a retry, not a failed task that only the reconciler would pick up again.
            recording_id = kwargs.get("recording_id", args[0] if args else "(unknown)")
            raise self.retry_while_redis_away(str(recording_id), exc) from None

    def attempt_limit(self, settings: PipelineSettings) -> int:
        """How many failed attempts of this stage a recording gets before it fails."""
        return settings.stage_attempts

    def load(self, recording_id: str) -> Record:
        return load(self.rt, recording_id, self.stage, backend=self.backend)

    @contextmanager
    def leased(self, recording_id: str, *, done: Callable[[Record], bool]
               ) -> Iterator[tuple[Record, bool, StageLease]]:
        """Run the body only if no other live run of a stage holds this recording, else retry later.

        Yields the record, read in the same round trip that takes the lease; whether ``done``
        finds this stage's work done already (a redelivered message, or another run finished it):
        then the body runs without the lease (given back at once) and must only return; and the
        lease, which the body's last write may give back itself (``StageLease``).
        """
        rt = self.rt
        holder = self.request.id or "local"
        held, found = rt.store.take_lease_and_get(recording_id, holder, rt.settings.lease_ttl_s)
        lease = StageLease(holder, held)
        try:
            record = still_live(found, recording_id, self.stage, backend=self.backend)
            finished = done(record)
            if finished and lease.held:
                # Taken only because one round trip reads and takes at once: give it back before the
                # body runs, so a next stage trying for it now does not wait out its whole TTL.
                lease.held = False
                self.let_go(recording_id, holder)
            if not finished and not held:
                wait_s = max(rt.store.lease_left_s(recording_id), LEASE_WAIT_MIN_S)
                if rt.in_line_for(recording_id):
                    # Woken with a grant while the run that queued it lets go of the lease: look
                    # again soon, before the grant lapses, not when the lease would.
                    wait_s = LEASE_WAIT_MIN_S
                raise self.retry_in(wait_s)
            yield record, finished, lease
        finally:
            if lease.held:
                self.let_go(recording_id, holder)

    def let_go(self, recording_id: str, holder: str) -> None:
        """Release the lease; with Redis away (a failover) it lapses by itself after PLAUD_LEASE_TTL_S.
        Raising here would hide the body's own outcome, such as a retry already sent."""
        try:
            self.rt.store.release_lease(recording_id, holder)
        except REDIS_AWAY:
            log.info("recording %s: lease not released, Redis unavailable; it lapses in %d s", recording_id,
                     self.rt.settings.lease_ttl_s)

    @contextmanager
    def errors_handled(self, recording_id: str) -> Iterator[None]:
        """Turn any error in the body into this stage's retry or the recording's failure."""
        try:
            yield
        except (Retry, NothingFollows, RecordingFailed):
            raise
        except Exception as exc:
            raise self.outcome_of(recording_id, exc) from None

    def give_back_grant(self, recording_id: str, kind: str) -> None:
        """A woken stage that will not send after all: its slot goes back to the budget at once."""
        if isinstance(self.rt.client.budget, Budget):
            self.rt.client.budget.cancel(recording_id, kind)

    def retry_in(self, countdown_s: float) -> Retry:
        """This same task (chain and all) again in ``countdown_s``, spending nothing of the error budget."""
        return self.retry(countdown=countdown_s, max_retries=None, throw=False)

    def failed(self, recording_id: str, kind: FailureKind, reason: str, error: PlaudError | None = None
               ) -> RecordingFailed:
        """Mark the recording FAILED at this stage; returns the exception to raise."""
        return record_failure(self.rt, recording_id, Failure.now(self.stage, kind, reason, error),
                              backend=self.backend)

    def waits_as_data(self, recording_id: str, what: str) -> NothingFollows:
        """The recording now waits in Redis (``wait_as_data``) and this task ends; the dispatcher
        enqueues the stage again when its turn comes. Returns the exception to raise."""
        return NothingFollows(wait_as_data(self.rt, recording_id, what))

    def outcome_of(self, recording_id: str, exc: Exception) -> Retry | RecordingFailed | NothingFollows:
        """What an exception in this stage means: a wait, the retry or the failure to raise."""
        rt = self.rt
        if isinstance(exc, REDIS_AWAY):
            return self.retry_while_redis_away(recording_id, exc)
        if isinstance(exc, BudgetQueued):
            return self.waits_as_data(recording_id, exc.kind)
        if isinstance(exc, BudgetSpent):
            # Not an error: the fleet's request budget is spent for now. Wait without counting.
            return self.retry_in(max(exc.retry_after_s or 1.0, BUDGET_WAIT_MIN_S))
        kind = classify(self.stage, exc)
        if isinstance(exc, RateLimited):  # Plaud's own 429 (the fleet's budget waits above, as data)
            metrics.count(rt.redis, metrics.RATE_LIMITED, self.stage.value)
        if isinstance(exc, FatalError):
            reason = f"Plaud refused it ({exc.code}): {exc.message}" if exc.code else exc.message
            return self.failed(recording_id, kind, reason, exc)
        if isinstance(exc, PlaudError):
            reason = str(exc)
        else:
            log.exception("unexpected error in %s of recording %s", self.stage.value, recording_id)
            reason = f"internal error: {type(exc).__name__}"
        attempts = rt.store.increment(recording_id, f"{self.stage.value}_attempts")
        limit = self.attempt_limit(rt.settings)
        error = exc if isinstance(exc, PlaudError) else None
        if attempts >= limit:
            return self.failed(recording_id, kind, f"gave up after {attempts} attempts: {reason}", error)
        retry_after = error.retry_after_s if error is not None else None
        countdown = retry_after if retry_after is not None else retry_policy.jittered(
            retry_policy.backoff_s(attempts, base_s=STAGE_BACKOFF_BASE_S, cap_s=STAGE_BACKOFF_CAP_S))
        log.info("%s of recording %s failed (%s); retry %d/%d in %.1f s", self.stage.value, recording_id, reason,
                 attempts, limit - 1, countdown)
        return self.retry_in(countdown)

    def retry_while_redis_away(self, recording_id: str, exc: Exception) -> Retry:
        """Redis itself did not answer (a failover, a partition): try the stage again, counting nothing.

        No attempt is counted, because counting needs Redis; the retry goes to the broker, which
        follows the new master too. When the broker is away as well, the retry cannot be sent and
        the reconciler re-drives the recording once Redis is back.
        """
        countdown = retry_policy.jittered(REDIS_AWAY_RETRY_S)
        log.warning("%s of recording %s: Redis unavailable (%s: %s); retry in %.1f s", self.stage.value, recording_id,
                    type(exc).__name__, exc, countdown)
        return self.retry_in(countdown)
