"""Poison input: each bad message fails alone, with a reason, and the recording beside it goes through."""

from __future__ import annotations

import time

from tasks import names
from tests.helpers import outcome


def failure_text(handle) -> str:
    result = outcome(handle, timeout_s=60)
    assert isinstance(result, Exception), f"expected a failure, got {result!r}"
    return f"{type(result).__name__}: {result}"


def test_poison_messages_fail_alone_with_a_reason(pipeline, good_files):
    path, text = good_files[0]
    run = f"poison-{time.time_ns()}"
    client = pipeline.client
    poison = {
        "malformed kwargs": client.send_task(names.TRANSCRIBE, kwargs={"source": 42, "recording_id": f"{run}-m"}),
        "positional args": client.send_task(names.TRANSCRIBE, args=[path]),
        "oversized kwargs": client.send_task(names.TRANSCRIBE, kwargs={
            "source": path, "recording_id": f"{run}-o", "metadata": {"blob": "x" * 200_000}}),
        "unknown task": client.send_task("plaud.transcribe_v2", kwargs={
            "source": "https://files.example/a.mp3?X-Amz-Signature=poisonsecret42"}),
        # What a Celery client of the pickle era sends: the worker accepts JSON only.
        "older contract (pickle)": client.send_task(names.TRANSCRIBE, kwargs={"source": path}, serializer="pickle"),
        "older contract (renamed kwarg)": client.send_task(names.TRANSCRIBE, kwargs={"audio_url": path}),
    }
    good = pipeline.send(source=path, recording_id=f"{run}-good")

    reasons = {name: failure_text(handle) for name, handle in poison.items()}
    assert "source must be a local path or an http(s) URL" in reasons["malformed kwargs"]
    assert "keyword arguments only" in reasons["positional args"]
    assert "limit is 65536" in reasons["oversized kwargs"] and "InvalidRequest" in reasons["oversized kwargs"]
    assert "NotRegistered" in reasons["unknown task"] and "plaud.transcribe_v2" in reasons["unknown task"]
    assert "JSON task messages" in reasons["older contract (pickle)"]
    assert "unknown kwargs ['audio_url']" in reasons["older contract (renamed kwarg)"]
    assert outcome(good)["text"] == text

    # The refusals are on the records too, and nothing leaked into the worker's log.
    assert pipeline.record(f"{run}-o")["state"] == "FAILED"
    assert pipeline.redis.hget(names.record_key(f"{run}-o"), "metadata") is None  # the blob was not stored
    log = "".join(w.log_text() for w in pipeline.workers)
    assert "poisonsecret42" not in log
    assert "rejected message" in log and "plaud.transcribe_v2" in log
    assert all(w.proc.poll() is None for w in pipeline.workers[-1:])  # the worker lives on
