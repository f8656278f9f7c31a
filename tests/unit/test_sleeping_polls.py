"""Polls that sleep as data: the sorted set, the dispatcher's wake-up and the poll's choice of hop."""

from __future__ import annotations

import time

import pytest

from tasks import dispatch, names, poll, reconcile
from tasks.failures import StageName
from tasks.records import RecordingState
from tasks.settings import PipelineSettings
from tests.helpers import FakeRuntime, fake_record_store


@pytest.fixture
def rt():
    return FakeRuntime(fake_record_store())


@pytest.fixture
def enqueued(monkeypatch):
    """What the dispatcher enqueued: (recording id, start stage, apply_async options)."""
    sent = []

    def send_pipeline(recording_id, token, *, task_id, start, **options):
        sent.append((recording_id, start, options))

    monkeypatch.setattr(reconcile, "send_pipeline", send_pipeline)
    return sent


def test_take_due_removes_and_returns_the_soonest_up_to_the_limit(rt):
    sleeping = rt.sleeping_polls
    for rid, at in (("c", 30.0), ("a", 10.0), ("b", 20.0), ("late", 100.0)):
        sleeping.sleep(rid, at)
    assert sleeping.next_wake_s() == 10.0 and sleeping.count() == 4
    assert sleeping.take_due(25.0, limit=1) == [("a", 10.0)]
    assert sleeping.take_due(25.0, limit=10) == [("b", 20.0)]
    assert sleeping.take_due(25.0, limit=10) == []  # each one is taken once
    assert sleeping.wake_at("c") == 30.0 and sleeping.wake_at("a") is None
    sleeping.sleep("c", 50.0)  # a later sleep of the same recording replaces the earlier
    sleeping.forget("late")
    assert sleeping.take_due(1000.0, limit=10) == [("c", 50.0)] and sleeping.next_wake_s() is None


def test_the_dispatcher_wakes_polls_due_within_the_horizon_with_the_countdown_left(rt, enqueued):
    now = time.time()
    for rid in ("soon", "later", "ended"):
        rt.store.create(rid, {"task_id": f"task-{rid}"}, due_at=now + 600)
        rt.store.transition(rid, RecordingState.PROCESSING, due_at=now + 600)
    rt.store.transition("ended", RecordingState.CANCELLED, due_at=None)
    horizon = rt.settings.poll_hold_horizon_s
    rt.sleeping_polls.sleep("soon", now + horizon / 2)
    rt.sleeping_polls.sleep("ended", now + 1)
    rt.sleeping_polls.sleep("later", now + horizon + 30)

    woken, sleep_s = dispatch.wake_sleeping_polls(rt)

    assert woken == 1
    [(rid, start, options)] = enqueued
    assert (rid, start, options["queue"]) == ("soon", StageName.POLL, names.POLLS_QUEUE)
    assert horizon / 2 - 1 < options["countdown"] <= horizon / 2  # fires when it was due, not now
    assert rt.sleeping_polls.wake_at("soon") is None and rt.sleeping_polls.wake_at("ended") is None
    assert rt.sleeping_polls.wake_at("later") is not None  # beyond the horizon: still asleep
    # The next look comes no later than when "later" enters the horizon, and within half a horizon.
    assert 0 < sleep_s <= min(30, horizon / 2, dispatch.IDLE_TICK_S)


def test_a_full_batch_of_due_polls_makes_the_dispatcher_look_again_at_once(rt, enqueued, monkeypatch):
    monkeypatch.setattr(dispatch, "WAKE_BATCH", 3)
    now = time.time()
    for i in range(5):
        rt.store.create(f"r{i}", {"task_id": "t"}, due_at=now + 600)
        rt.sleeping_polls.sleep(f"r{i}", now + 1)
    assert dispatch.wake_sleeping_polls(rt) == (3, 0.0)
    assert dispatch.wake_sleeping_polls(rt)[0] == 2 and len(enqueued) == 5


def test_the_reconciler_replaces_a_poll_no_dispatcher_woke(rt, enqueued):
    now = time.time()
    rt.store.create("missed", {"task_id": "task-missed"}, due_at=now - 1)
    rt.store.transition("missed", RecordingState.PROCESSING, due_at=now - 1)
    rt.sleeping_polls.sleep("missed", now - 300)  # no worker ran to wake it
    assert reconcile.sweep(rt, now) == ["missed"]
    assert [(rid, start) for rid, start, _ in enqueued] == [("missed", StageName.POLL)]
    assert rt.sleeping_polls.wake_at("missed") is None  # no dispatcher wakes a second chain later


class Task:
    """What sleep_then_poll asks of its stage task: the runtime, and a retry to return."""

    def __init__(self, rt):
        self.rt = rt
        self.retries = []

    def retry_in(self, countdown_s):
        self.retries.append(countdown_s)
        return RuntimeError("retry")  # stands for celery's Retry: only its countdown matters here


def test_a_poll_holds_a_countdown_within_the_horizon_and_sleeps_as_data_beyond_it(rt):
    from tasks.stage import NothingFollows

    task = Task(rt)
    horizon = rt.settings.poll_hold_horizon_s
    assert not isinstance(poll.sleep_then_poll(task, "near", horizon - 1, 100.0, 50.0), NothingFollows)
    assert task.retries == [horizon - 1] and rt.sleeping_polls.count() == 0
    before = time.time()
    assert isinstance(poll.sleep_then_poll(task, "far", 3600.0, 100.0, 50.0), NothingFollows)
    assert task.retries == [horizon - 1]  # no countdown task: the poll sleeps in Redis
    assert before + 3600 <= rt.sleeping_polls.wake_at("far") <= time.time() + 3600


def test_before_the_expected_finish_a_hop_is_at_most_a_third_of_it():
    assert poll.hop_s(1000.0, waited_s=10.0, expected_s=300.0) == 100.0
    assert poll.hop_s(1000.0, waited_s=400.0, expected_s=300.0) == 1000.0  # after it: straight to the next look
    assert poll.hop_s(-5.0, waited_s=400.0, expected_s=300.0) == 0.1


def test_the_hold_horizon_is_checked_and_the_retired_cap_refused():
    from plaud.errors import ConfigError

    assert PipelineSettings.from_env({"PLAUD_POLL_HOLD_HORIZON_S": "5"}).poll_hold_horizon_s == 5.0
    with pytest.raises(ConfigError, match="PLAUD_POLL_HOLD_HORIZON_S"):
        PipelineSettings.from_env({"PLAUD_POLL_HOLD_HORIZON_S": "0.5"})
    with pytest.raises(ConfigError, match="PLAUD_POLL_HOLD_HORIZON_S.*instead"):
        PipelineSettings.from_env({"PLAUD_POLL_COUNTDOWN_CAP_S": "300"})
    with pytest.raises(ConfigError, match="PLAUD_VISIBILITY_TIMEOUT_S"):
        PipelineSettings.from_env({"PLAUD_POLL_HOLD_HORIZON_S": "5000", "PLAUD_VISIBILITY_TIMEOUT_S": "9000"})
