"""The dispatcher: whoever finds capacity wakes the recordings that wait for it.

Recordings wait as data, not as tasks: for the fleet's Transcription API budget (``plaud.budget``)
or for an upload slot (``tasks.upload_slots``). ``dispatch_once`` takes every free budget slot and
every free upload slot, hands them to the next waiters in order, and enqueues each one's stage
again — the rest of its chain, ending in a deliver that carries the entry task's id, as the
reconciler does — so free budget and a waiting request never coexist for more than a moment.
Every worker runs it in a thread about every ``PLAUD_DISPATCH_TICK_S`` (``workers.dispatcher``);
the Lua scripts behind it are atomic, so any number of dispatchers grant each slot once.

Woken submits and polls go to the polls queue, never behind a backlog of new work: a grant is
held only ``plaud.budget.GRANT_TTL_S`` (or the budget's period, if shorter). A grant not used by
then is given up and its recording woken again; should the first task still turn up, the new
chain's poll token retires it, and the stage lease keeps the two from sending twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from plaud.budget import POLL, SUBMIT, Budget

from .failures import StageName
from .names import POLLS_QUEUE
from .reconcile import redrive
from .runtime import Runtime

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
    due = [(STAGE_OF_KIND[kind], recording_id) for kind, recording_id in (*release.granted, *release.expired)]
    if rt.upload_slots is not None:
        due += [(StageName.UPLOAD, recording_id) for recording_id in rt.upload_slots.release(now=time.time())]
    for stage, recording_id in due:
        try:
            woken += wake(rt, stage, recording_id)
        except Exception:
            # One recording that cannot be woken (a broker error, a bad record) must not hold up the
            # rest; the reconciler finds it once its due time passes.
            log.exception("could not wake recording %s for %s", recording_id, stage.value)
    return Dispatched(woken, release.wake_in_s(tick_s))


def wake(rt: Runtime, stage: StageName, recording_id: str) -> int:
    """Enqueue ``stage`` (and the rest of the chain) for a recording whose wait is over; 1 if enqueued."""
    state = rt.store.state_of(recording_id)
    if state is None or state.is_terminal:
        rt.leave_lines(recording_id)  # ended (or expired) while it waited: its place is not needed
        return 0
    task_id = rt.store.field(recording_id, "task_id")
    # The first link only goes to the polls queue (later links keep their routes), so a granted
    # request never waits behind a backlog of new work; an upload goes where uploads go.
    options: dict[str, Any] = {} if stage is StageName.UPLOAD else {"queue": POLLS_QUEUE}
    redrive(rt, recording_id, task_id=task_id, start=stage, **options)
    log.debug("woke recording %s for %s", recording_id, stage.value)
    return 1

