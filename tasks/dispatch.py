"""The dispatcher: whoever finds capacity wakes the recordings that wait for it.

Recordings wait as data, not as tasks: for the fleet's Transcription API budget (``plaud.budget``),
for an upload slot (``tasks.upload_slots``), or for the time of their next poll
(``tasks.sleeping_polls``). ``dispatch_once`` takes every free budget slot and every free upload
slot, hands them to the next waiters in order, and enqueues each one's stage again — the rest of
its chain, ending in a deliver that carries the entry task's id, as the reconciler does — so free
budget and a waiting request never coexist for more than a moment. It also takes the sleeping
polls that wake within the hold horizon and enqueues each with the countdown left, on time.
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
IDLE_TICK_S = 5.0  # no budget and no upload slots to hand out: only sleeping polls wait, look rarely
# Sleeping polls taken in one pass; a pass that takes this many looks again at once.
WAKE_BATCH = 500


@dataclass(frozen=True)
class Dispatched:
    """What one pass did, and how long the dispatcher may sleep before the next."""

    woken: int
    sleep_s: float


def dispatch_once(rt: Runtime) -> Dispatched:
    """Hand out the free budget and upload slots to the waiters next in line, and wake the polls
    due within the hold horizon; enqueue their stages."""
    woken, sleep_s = wake_sleeping_polls(rt)
    budget = rt.client.budget
    if not isinstance(budget, Budget):
        return Dispatched(woken, sleep_s)
    release = budget.release()
    # A lost grant's waiter is woken again: its task will take a slot, or wait in line anew.
    due = [(STAGE_OF_KIND[kind], recording_id) for kind, recording_id in (*release.granted, *release.expired)]
    if rt.upload_slots is not None:
        due += [(StageName.UPLOAD, recording_id) for recording_id in rt.upload_slots.release(now=time.time())]
    for stage, recording_id in due:
        woken += wake_safely(rt, stage, recording_id)
    return Dispatched(woken, min(sleep_s, release.wake_in_s(rt.settings.dispatch_tick_s)))


def wake_sleeping_polls(rt: Runtime) -> tuple[int, float]:
    """Enqueue the sleeping polls that wake within the hold horizon, each with the countdown left;
    returns how many, and how long until the next one comes within the horizon."""
    horizon_s = rt.settings.poll_hold_horizon_s
    now = time.time()
    due = rt.sleeping_polls.take_due(now + horizon_s, WAKE_BATCH)
    woken = sum(wake_safely(rt, StageName.POLL, recording_id, countdown=max(wake_at - now, 0.0))
                for recording_id, wake_at in due)
    if len(due) == WAKE_BATCH:
        return woken, 0.0
    # A poll put to sleep during the pass wakes at least a horizon later: looking again within half
    # of one finds it in time.
    sleep_s = min(IDLE_TICK_S, horizon_s / 2)
    next_wake = rt.sleeping_polls.next_wake_s()
    if next_wake is not None:
        sleep_s = min(sleep_s, max(next_wake - horizon_s - time.time(), 0.0))
    return woken, sleep_s


def wake_safely(rt: Runtime, stage: StageName, recording_id: str, countdown: float = 0.0) -> int:
    try:
        return wake(rt, stage, recording_id, countdown)
    except Exception:
        # One recording that cannot be woken (a broker error, a bad record) must not hold up the
        # rest; the reconciler finds it once its due time passes.
        log.exception("could not wake recording %s for %s", recording_id, stage.value)
        return 0


def wake(rt: Runtime, stage: StageName, recording_id: str, countdown: float = 0.0) -> int:
    """Enqueue ``stage`` (and the rest of the chain), ``countdown`` s from now, for a recording whose
    wait is over; 1 if enqueued."""
    state = rt.store.state_of(recording_id)
    if state is None or state.is_terminal:
        rt.leave_lines(recording_id)  # ended (or expired) while it waited: its place is not needed
        return 0
    task_id = rt.store.field(recording_id, "task_id")
    # The first link only goes to the polls queue (later links keep their routes), so a granted
    # request never waits behind a backlog of new work; an upload goes where uploads go.
    options: dict[str, Any] = {} if stage is StageName.UPLOAD else {"queue": POLLS_QUEUE}
    if countdown > 0:
        options["countdown"] = countdown
    redrive(rt, recording_id, task_id=task_id, start=stage, **options)
    log.debug("woke recording %s for %s", recording_id, stage.value)
    return 1

