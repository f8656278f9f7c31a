"""Webhooks and callback tasks, delivered by a real worker to a real local receiver."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks import names
from tasks.notify import verify
from tests.helpers import outcome

SECRET = "test-webhook-secret"


class Receiver:
    """A webhook endpoint on loopback that fails its first ``failures`` deliveries."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append({"headers": dict(self.headers), "body": body})
                self.send_response(500 if len(receiver.calls) <= receiver.failures else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/plaud"

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while len(self.calls) < count:
            assert time.monotonic() < deadline, f"{len(self.calls)} of {count} deliveries arrived"
            time.sleep(0.05)
        return self.calls


@pytest.fixture
def receiver():
    made = []

    def make(failures=0):
        made.append(Receiver(failures))
        return made[-1]

    yield make
    for r in made:
        r.server.shutdown()


def wait_record(pipeline, recording_id, field, values, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while pipeline.record(recording_id).get(field) not in values:
        assert time.monotonic() < deadline, pipeline.record(recording_id)
        time.sleep(0.05)
    return pipeline.record(recording_id)


def test_webhook_is_signed_and_carries_the_result(pipeline, receiver, good_files):
    hook = receiver()
    path, text = good_files[6]
    recording_id = f"hook-{time.time_ns()}"
    assert outcome(pipeline.send(source=path, recording_id=recording_id, webhook_url=hook.url,
                                 metadata={"order": 7}))["text"] == text
    call = hook.wait_for(1)[0]
    headers, body = call["headers"], call["body"]
    assert verify(SECRET, headers["Plaud-Workers-Timestamp"], body, headers["Plaud-Workers-Signature"])
    event = json.loads(body)
    assert event["type"] == "recording.succeeded" and event["recording_id"] == recording_id
    assert event["event_id"] == headers["Plaud-Workers-Event-Id"]
    assert event["result"]["text"] == text and event["metadata"] == {"order": 7}
    record = wait_record(pipeline, recording_id, "webhook_status", {"delivered"})
    assert record["webhook_attempts"] == "1" and record["webhook_last_status"] == "204"


def test_a_receiver_that_fails_twice_gets_it_on_the_third_try(pipeline, receiver, good_files):
    hook = receiver(failures=2)
    recording_id = f"hook3-{time.time_ns()}"
    outcome(pipeline.send(source=good_files[7][0], recording_id=recording_id, webhook_url=hook.url))
    calls = hook.wait_for(3)
    assert len({c["headers"]["Plaud-Workers-Event-Id"] for c in calls}) == 1  # one event, delivered at least once
    record = wait_record(pipeline, recording_id, "webhook_status", {"delivered"})
    assert record["webhook_attempts"] == "3"


def test_a_receiver_that_never_succeeds_is_recorded_and_the_recording_stands(pipeline, receiver, good_files):
    hook = receiver(failures=10**6)
    recording_id = f"hookfail-{time.time_ns()}"
    outcome(pipeline.send(source=good_files[8][0], recording_id=recording_id, webhook_url=hook.url))
    record = wait_record(pipeline, recording_id, "webhook_status", {"failed"})
    assert record["state"] == "SUCCEEDED" and int(record["webhook_attempts"]) >= 2
    assert record["webhook_last_status"] == "500"


def test_a_failed_recording_is_announced_too(pipeline, receiver, tmp_path):
    hook = receiver()
    recording_id = f"hookfailed-{time.time_ns()}"
    outcome(pipeline.send(source=str(tmp_path / "missing.mp3"), recording_id=recording_id, webhook_url=hook.url))
    event = json.loads(hook.wait_for(1)[0]["body"])
    assert event["type"] == "recording.failed" and "no such file" in event["failure"]["reason"]


def test_callback_task_is_sent_to_the_callbacks_queue(pipeline, good_files):
    recording_id = f"callback-{time.time_ns()}"
    pipeline.redis.delete(names.CALLBACKS_QUEUE)
    outcome(pipeline.send(source=good_files[9][0], recording_id=recording_id, callback_task="billing.on_transcript"))
    deadline = time.monotonic() + 10
    while pipeline.redis.llen(names.CALLBACKS_QUEUE) == 0:
        assert time.monotonic() < deadline, "no callback message"
        time.sleep(0.05)
    message = json.loads(pipeline.redis.lpop(names.CALLBACKS_QUEUE))
    assert message["headers"]["task"] == "billing.on_transcript"
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert kwargs["event"]["recording_id"] == recording_id and kwargs["event"]["type"] == "recording.succeeded"

