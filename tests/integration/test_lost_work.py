"""Work the broker lost: the reconciler finds the recording overdue and drives it on.

Each test has a stack of its own, because it has to control which queues have a consumer.
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from tasks import names
from tests.conftest import PipelineStack
from tests.helpers import outcome, wait_for_state, wait_until

NO_POLLS = (names.ENTRY_QUEUE, names.API_QUEUE, names.UPLOADS_QUEUE)


@pytest.fixture
def stack(sandbox_thread, sandbox, tmp_path):
    stack = PipelineStack(sandbox_thread, tmp_path)
    yield stack
    stack.stop()


def message_args(raw: bytes) -> list:
    """The positional args of a task message as kombu's Redis transport stores it."""
    envelope = json.loads(raw)
    body = base64.b64decode(envelope["body"]) if envelope.get("properties", {}).get("body_encoding") == "base64" \
        else envelope["body"]
    return json.loads(body)[0]


def test_a_deleted_poll_message_is_replaced_by_the_reconciler(stack, good_files):
    path, text = good_files[0]
    stack.start_worker(queues=NO_POLLS)  # with beat; nothing consumes plaud.polls yet
    recording_id = f"lostpoll-{time.time_ns()}"
    handle = stack.send(source=path, recording_id=recording_id)

    def queued_poll():
        return [raw for raw in stack.redis.lrange(names.POLLS_QUEUE, 0, -1) if message_args(raw)[0] == recording_id]

    [message] = wait_until(queued_poll, "the poll message in plaud.polls")
    assert stack.redis.lrem(names.POLLS_QUEUE, 0, message) == 1
    assert stack.redis.llen(names.POLLS_QUEUE) == 0
    assert stack.record(recording_id)["state"] == "SUBMITTED"

    stack.start_worker(queues=(names.POLLS_QUEUE,), extra_args=())
    assert outcome(handle, timeout_s=60)["text"] == text
    record = stack.record(recording_id)
    assert int(record["reconciled"]) >= 1 and record["state"] == "SUCCEEDED"
    assert int(record["submit_requests"]) == 1  # recovered by polling again, not by submitting again


def test_a_stage_message_dropped_with_its_dying_worker(stack, configure, tmp_path):
    """SIGKILL the worker mid-upload and delete the message it held: nothing is left to redeliver it."""
    from plaud.sandbox.testaudio import make_recording

    configure(chunk_size_bytes=64 * 1024, fault_latency_ms=150)
    recording = make_recording(str(tmp_path / "dropped.mp3"), 60.0, text="dropped and found")
    worker = stack.start_worker()
    recording_id = f"dropped-{time.time_ns()}"
    handle = stack.send(source=recording.path, recording_id=recording_id)
    wait_for_state(stack, recording_id, {"UPLOADING"}, check=lambda r: int(r.get("bytes_sent", 0)) > 0)
    worker.kill()
    # The upload's message now sits in kombu's unacked hash, to be restored after the visibility
    # timeout. Drop it, as if that had been lost too.
    unacked = stack.redis.hgetall(names.KOMBU_UNACKED)
    dropped = [tag for tag, raw in unacked.items()
               if json.loads(raw)[0]["headers"]["task"] == names.UPLOAD
               and message_args(json.dumps(json.loads(raw)[0]).encode())[0] == recording_id]
    assert len(dropped) == 1, unacked
    stack.redis.hdel(names.KOMBU_UNACKED, *dropped)
    stack.redis.zrem(names.KOMBU_UNACKED_INDEX, *dropped)

    stack.start_worker()
    result = outcome(handle, timeout_s=120)
    assert isinstance(result, dict) and result["text"] == "dropped and found", result
    record = stack.record(recording_id)
    assert int(record["reconciled"]) >= 1 and int(record["submit_requests"]) == 1


def test_a_thread_pool_polls_worker_killed_with_the_polls_it_held(stack, configure, good_files):
    """A thread pool is one process: SIGKILL takes every countdown poll it held. Its messages stay
    unacked in Redis (until the visibility timeout) and the reconciler re-drives each recording."""
    configure(processing_base_s=6.0)  # jobs outlast the first probes: the polls wait in countdowns
    stack.env["PLAUD_EXPECTED_BASE_S"] = "6"
    stack.start_worker(queues=NO_POLLS)  # with beat
    polls = stack.start_worker(queues=(names.POLLS_QUEUE,), pool="threads", concurrency=16, extra_args=())
    run = f"threadskill-{time.time_ns()}"
    handles = {f"{run}-{i}": stack.send(source=good_files[i][0], recording_id=f"{run}-{i}") for i in range(3)}

    def held_polls():
        held = [json.loads(raw)[0] for raw in stack.redis.hvals(names.KOMBU_UNACKED)]
        mine = {message_args(json.dumps(m).encode())[0] for m in held if m["headers"]["task"] == names.POLL}
        return mine >= set(handles)

    wait_until(held_polls, "the polls worker holding a countdown poll of each recording")
    polls.kill()
    stack.start_worker(queues=(names.POLLS_QUEUE,), pool="threads", concurrency=16, extra_args=())
    for recording_id, handle in handles.items():
        result = outcome(handle, timeout_s=90)
        assert isinstance(result, dict), (recording_id, result)
        record = stack.record(recording_id)
        assert record["state"] == "SUCCEEDED" and int(record["submit_requests"]) == 1
        assert int(record["reconciled"]) >= 1  # recovered by the reconciler, not by a redelivery
