"""Polls that sleep as data: while Plaud works, no worker holds the recording's poll, and a worker
that dies meanwhile loses nothing. Real Redis, real worker processes, the sandbox."""

from __future__ import annotations

import json
import time

import pytest

from tasks import names
from tests.conftest import PipelineStack
from tests.helpers import outcome, wait_until

PROCESSING_S = 8.0


@pytest.fixture
def sleepy(sandbox_thread, configure, tmp_path):
    """A thread-pool worker whose polls sleep as data beyond a 1-s horizon; the sandbox takes 8 s per job.

    The reconciler's grace is long (60 s), so a recording that arrives on time was woken by a
    dispatcher, not re-driven by the reconciler.
    """
    configure(processing_base_s=PROCESSING_S)
    stack = PipelineStack(sandbox_thread, tmp_path)
    stack.env.update({"PLAUD_POLL_HOLD_HORIZON_S": "1", "PLAUD_EXPECTED_BASE_S": str(PROCESSING_S),
                      "PLAUD_RECONCILE_GRACE_S": "60"})
    stack.start_worker(pool="threads", concurrency=8)
    yield stack
    stack.stop()


def held_polls(stack) -> int:
    """Poll tasks the workers hold (reserved or counting down): kombu's unacked messages."""
    held = 0
    for raw in stack.redis.hvals(names.KOMBU_UNACKED):
        message = json.loads(raw)[0]
        held += message.get("headers", {}).get("task") == names.POLL
    return held


def send(stack, good_files, n):
    run = f"sleepy-{time.time_ns()}"
    return {f"{run}-{i}": stack.send(source=good_files[i][0], recording_id=f"{run}-{i}") for i in range(n)}


def all_asleep(stack, ids):
    """True once every recording's poll sleeps as data and no worker holds a poll task."""
    asleep = [stack.redis.zscore(names.SLEEPING_POLLS, rid) is not None for rid in ids]
    return all(asleep) and held_polls(stack) == 0


def test_polls_sleep_as_data_while_plaud_works_and_still_fire_on_time(sleepy, good_files, api):
    handles = send(sleepy, good_files, 6)
    wait_until(lambda: all_asleep(sleepy, handles), "every poll asleep in Redis, none held", timeout_s=30,
               step_s=0.02)
    for rid, handle in handles.items():
        result = outcome(handle, timeout_s=60)
        assert isinstance(result, dict), f"{rid}: {result}"
        record = sleepy.record(rid)
        assert record["state"] == "SUCCEEDED" and "reconciled" not in record
        # Woken a horizon ahead and enqueued with the countdown left: the poll that found the
        # transcript ran when it was due, not when a dispatcher happened to look.
        assert float(record["last_poll_late_s"]) < 1.0, record
        assert int(record["polls"]) <= 4, record  # the schedule's probes and on-time poll, no more
    assert sleepy.redis.zcard(names.SLEEPING_POLLS) == 0
    assert api.stats()["transcriptions_created"] == len(handles)


def test_a_worker_killed_while_polls_sleep_loses_nothing(sleepy, good_files, api):
    handles = send(sleepy, good_files, 4)
    wait_until(lambda: all_asleep(sleepy, handles), "every poll asleep in Redis, none held", timeout_s=30,
               step_s=0.02)
    sleepy.workers[0].kill()  # held nothing of theirs: the polls are in Redis
    sleepy.start_worker(pool="threads", concurrency=8)
    for rid, handle in handles.items():
        result = outcome(handle, timeout_s=60)
        assert isinstance(result, dict), f"{rid}: {result}"
        assert "reconciled" not in sleepy.record(rid)  # the new worker's dispatcher woke it, on its own
    assert api.stats()["transcriptions_created"] == len(handles)
