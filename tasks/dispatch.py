"""The dispatcher: whoever finds capacity wakes the recordings that wait for it.

Recordings wait as data, not as tasks: for the fleet's Transcription API budget (``plaud.budget``)
or for an upload slot (``tasks.upload_slots``). ``dispatch_once`` takes every free budget slot and
every free upload slot, hands them to the next waiters in order, and enqueues each one's stage
again — the rest of its chain, ending in a deliver that carries the entry task's id, as the
reconciler does — so free budget and a waiting request never coexist for more than a moment.
Every worker runs it in a thread about every ``PLAUD_DISPATCH_TICK_S`` (``workers.dispatcher``);
the Lua scripts behind it are atomic, so any number of dispatchers grant each slot once.

Woken submits and polls go to the polls queue, never behind a backlog of new work: a grant is
held only ``plaud.budget.GRANT_TTL_S``, and a task that arrives later than that has to wait again.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from plaud.budget import POLL, SUBMIT, Budget

from .failures import StageName
from .names import POLLS_QUEUE
from .runtime import Runtime
from .transcribe import pipeline

log = logging.getLogger("plaud.dispatch")

STAGE_OF_KIND = {SUBMIT: StageName.SUBMIT, POLL: StageName.POLL}
IDLE_TICK_S = 5.0  # no budget and no upload slots to hand out: nothing can wait, look rarely


@dataclass(frozen=True)
class Dispatched:
    """What one pass did, and how long the dispatcher may sleep before the next."""

    woken: int
    sleep_s: float


def dispatch_once(rt: Runtime) -> Dispatched:
    """Hand out the free budget and upload slots to the waiters next in line; enqueue their stages."""
    budget = rt.client.budget
    if not isinstance(budget, Budget):
        return Dispatched(0, IDLE_TICK_S)
    tick_s = rt.settings.dispatch_tick_s
    release = budget.release()
    woken = 0
    # A lost grant's waiter is woken again: its task will take a slot, or wait in line anew.
    for kind, recording_id in (*release.granted, *release.expired):
        woken += wake(rt, STAGE_OF_KIND[kind], recording_id)
    if rt.upload_slots is not None:
        for recording_id in rt.upload_slots.release(now=time.time()):
            woken += wake(rt, StageName.UPLOAD, recording_id)
    return Dispatched(woken, release.wake_in_s(tick_s))


def wake(rt: Runtime, stage: StageName, recording_id: str) -> int:
    """Enqueue ``stage`` (and the rest of the chain) for a recording whose wait is over; 1 if enqueued."""
    record = rt.store.get(recording_id)
    if record is None or record.state.is_terminal:
        rt.leave_lines(recording_id)  # ended (or expired) while it waited: its place is not needed
        return 0
    token = uuid.uuid4().hex[:12]
    rt.store.update(recording_id, {"poll_token": token})
    chain = pipeline(recording_id, token, task_id=record.get("task_id"), start=stage)
    if stage is StageName.UPLOAD:
        chain.apply_async()
    else:
        chain.apply_async(queue=POLLS_QUEUE)  # the first link only: later links keep their routes
    log.debug("woke recording %s for %s", recording_id, stage.value)
    return 1

