"""Stage 3: one GET, then finish or re-enqueue itself with a countdown (keeping the chain).

``self.retry_in(countdown_s)`` re-sends this same task, chain and all, so the
worker slot is free while Plaud works. "Not done yet" is not an error: it spends nothing of the
error budget, which counts only failed requests. A poll carries the record's ``poll_token``; when
the reconciler replaces a lost poll it changes the token, and a stale poll that turns up later
stops its chain quietly instead of polling twice.
"""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task
from celery.exceptions import Retry

from plaud.budget import POLL
from plaud.transcriptions import TranscriptionStatus

from . import names
from .failures import FailureKind, StageName
from .records import Record, RecordingState
from .schedule import JITTER_MAX_S, ON_TIME_GUARD_S
from .settings import PipelineSettings
from .stage import NothingFollows, StageTask, budget_place, still_live
from .timing import TimingEstimate

EARLY_TOLERANCE_S = 0.5
# The on-time poll asks between guard and guard + jitter after the expected finish; an answer up
# to a second after that still came on time.
ON_TIME_WINDOW_S = ON_TIME_GUARD_S + JITTER_MAX_S + 1.0
REAIM_CHANGE = 0.1  # re-plan a waiting poll when the learned expectation moved by more than this share
REAIM_MIN_HOP_S = 5.0


class PollTask(StageTask):
    def attempt_limit(self, settings: PipelineSettings) -> int:
        # A poll asks after a job Plaud is already running (and billing): worth riding out a longer outage.
        return settings.poll_error_attempts


@shared_task(name=names.POLL, base=PollTask, bind=True, stage=StageName.POLL)
def poll(self: PollTask, recording_id: str, poll_token: str | None = None) -> None:
    rt = self.rt
    # The fleet's timing estimate is read with the record: the poll re-aims and learns from it.
    found, timing_reply = rt.store.get_with(recording_id, rt.timing.ask)
    record = still_live(found, recording_id, self.stage, backend=self.backend)
    fleet = rt.timing.estimate_from(timing_reply)
    woken = record.get("waiting_for") == POLL  # it waited for the budget, and may hold a grant now
    if record.state is RecordingState.SUCCEEDED or record.get("transcript") is not None:
        if woken:
            self.give_back_grant(recording_id, POLL)
        return  # seen done already: on to deliver
    if poll_token is not None and poll_token != record.get("poll_token"):
        raise NothingFollows("superseded by the reconciler's poll")
    now = time.time()
    submitted_at = record.number("submitted_at", now)
    waited_s = now - submitted_at
    audio_s = record.number("audio_duration_s") or None
    expected_s = record.number("expected_s") or fleet.expected_s(audio_s)
    next_poll_at = record.number("next_poll_at")
    if next_poll_at - now > EARLY_TOLERANCE_S:
        # Not yet time to ask Plaud. Before the expected finish, aim again: what the fleet has
        # learned since this was planned may move the on-time poll by a lot (a cold start).
        if waited_s < expected_s:
            fresh_s = fleet.expected_s(audio_s)
            if abs(fresh_s - expected_s) > REAIM_CHANGE * expected_s:
                at = now + rt.schedule.next_delay_s(waited_s, fresh_s, rt.budget_slack())
                raise wait_until(self, recording_id, record, at, {"expected_s": round(fresh_s, 3),
                                                                      **fleet.as_fields()})
        raise sleep_then_poll(self, recording_id, next_poll_at - now, waited_s, expected_s)
    late_s = now - next_poll_at  # how late this poll fires: a sign of a backlog on the polls queue
    if waited_s > rt.settings.poll_deadline_s:
        raise self.failed(recording_id, FailureKind.TIMED_OUT, f"timed out: Plaud had not finished after "
                                                               f"{rt.settings.poll_deadline_s} s (last status "
                                                               f"{record.get('plaud_status', 'unknown')})")
    # A slot granted to this recording is used, not given up for a probe rule (asked of the budget,
    # not of the record: its flag may be a moment stale).
    granted = woken and rt.in_line_for(recording_id) == POLL
    if not granted and not rt.schedule.probe_still_worth_it(waited_s, expected_s, rt.budget_slack()):
        # The budget got tight since this probe was planned: wait for the on-time poll instead.
        rt.store.increment(recording_id, "probes_skipped")
        raise wait_until(self, recording_id, record, now + rt.schedule.next_delay_s(waited_s, expected_s, 0.0))
    def sending() -> None:
        if record.get("waiting_for"):
            rt.store.stop_waiting(recording_id)

    with self.errors_handled(recording_id):
        state = rt.client.get(record.get("transcription_id"), waiter=recording_id, **budget_place(record),
                              before_send=sending)
    verdict = timing_verdict(state.status, now - submitted_at, time.time() - submitted_at, expected_s)
    if state.status is TranscriptionStatus.SUCCESS or state.status.is_failure:
        rt.plan_nothing_more(recording_id)
    done: dict[str, Any] | None = None
    if state.status is TranscriptionStatus.SUCCESS and state.transcript is not None:  # always, on SUCCESS
        done = {"transcript": state.transcript.to_dict(), "done_seen_at": time.time(), "plaud_status": state.raw_status,
                "last_poll_late_s": round(late_s, 3)}
    # The poll counted, once done the transcript saved, and the timing model taught (by the
    # recording's first verdict only): one round trip.
    lesson = None if verdict is None else rt.timing.lesson(audio_s, verdict, TimingEstimate.from_fields(record),
                                                           now=fleet, once_for=rt.store.key(recording_id))
    [polls] = rt.store.increment_all(recording_id, "polls", also_set=done, also_run=lesson)
    if done is not None:
        return  # on to deliver
    if state.status.is_failure:
        raise self.failed(recording_id, FailureKind.PLAUD_FAILED, f"Plaud reported {state.raw_status}: "
                                                                  f"{state.message or 'no reason given'}")
    delay = rt.schedule.next_delay_s(time.time() - submitted_at, expected_s, rt.budget_slack())
    next_at = time.time() + delay
    rt.plan_poll(recording_id, next_at)
    rt.store.transition(recording_id, RecordingState.PROCESSING, {
        "next_poll_at": next_at, "plaud_status": state.raw_status, "polls": polls, "last_poll_late_s": round(late_s, 3),
    }, due_at=next_at + rt.settings.reconcile_grace_s)
    raise sleep_then_poll(self, recording_id, delay, time.time() - submitted_at, expected_s)


def wait_until(task: StageTask, recording_id: str, record: Record, at: float,
               fields: dict[str, Any] | None = None) -> Retry | NothingFollows:
    """Move the next request to ``at`` (in the record, the reconciler's due index and the budget's plan);
    returns what to raise (``sleep_then_poll``)."""
    rt = task.rt
    now = time.time()
    rt.store.update(recording_id, {"next_poll_at": at, **(fields or {})})
    rt.store.set_due(recording_id, at + rt.settings.reconcile_grace_s)
    rt.plan_poll(recording_id, at)
    waited_s = now - record.number("submitted_at", now)
    expected_s = (fields or {}).get("expected_s") or record.number("expected_s")
    return sleep_then_poll(task, recording_id, at - now, waited_s, expected_s)


def sleep_then_poll(task: StageTask, recording_id: str, remaining_s: float, waited_s: float,
                    expected_s: float) -> Retry | NothingFollows:
    """This poll again after its next hop; returns the retry (a countdown, within the hold horizon)
    or the end of this task (the poll sleeps as data until then; ``tasks.sleeping_polls``) to raise."""
    rt = task.rt
    hop = hop_s(remaining_s, waited_s, expected_s)
    if hop <= rt.settings.poll_hold_horizon_s:
        return task.retry_in(hop)
    rt.sleeping_polls.sleep(recording_id, time.time() + hop)
    return NothingFollows("sleeps as data until its next poll")


def hop_s(remaining_s: float, waited_s: float, expected_s: float) -> float:
    """How long the poll sleeps before looking again: no request is made on waking early.

    Before the expected finish at most a third of it, so a re-aim can act on what the fleet
    learns meanwhile.
    """
    hop = remaining_s
    if waited_s < expected_s:
        hop = min(hop, max(expected_s / 3, REAIM_MIN_HOP_S))
    return max(hop, 0.1)


def timing_verdict(status: TranscriptionStatus, asked_after_s: float, answered_after_s: float,
                   expected_s: float) -> bool | None:
    """What one poll teaches the timing model: True done in time, False late, None nothing.

    The times are seconds after submit at which the request left and its answer came back. The
    question is the on-time poll's: done by the expected time plus the guard? Still running when
    asked at or after that is a miss, however late the poll. Done is a hit if the answer came
    on time (an early probe's included): a poll that was held up says nothing of when.
    """
    if status is TranscriptionStatus.SUCCESS:
        return True if answered_after_s <= expected_s + ON_TIME_WINDOW_S else None
    if status.is_failure:
        return None
    return False if asked_after_s >= expected_s + ON_TIME_GUARD_S else None
