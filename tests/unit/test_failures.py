"""Failures carry a kind: what a retry re-runs is decided by it, never by the wording of the reason."""

from __future__ import annotations

import time

import pytest

from plaud.errors import (
    AuthError,
    BadRequest,
    IntegrityError,
    NotFound,
    PlaudTimeout,
    ServerError,
    SourceError,
    UnsupportedAudio,
)
from tasks import reconcile
from tasks.failures import Failure, FailureKind, StageName, classify
from tasks.records import Record, RecordingState
from tasks.settings import PipelineSettings
from tests.helpers import FakeRuntime, fake_record_store


@pytest.mark.parametrize("stage, exc, kind", [
    (StageName.UPLOAD, SourceError("no such file: /a.mp3"), FailureKind.SOURCE),
    (StageName.SUBMIT, UnsupportedAudio("not audio"), FailureKind.SOURCE),  # re-uploading an expired URL
    (StageName.UPLOAD, IntegrityError("md5 differs"), FailureKind.UPLOAD),
    (StageName.UPLOAD, ServerError("503", status=503), FailureKind.UPLOAD),
    (StageName.SUBMIT, ServerError("503", status=503), FailureKind.PLAUD_UNAVAILABLE),
    (StageName.POLL, PlaudTimeout("slow", request_sent=True), FailureKind.PLAUD_UNAVAILABLE),
    (StageName.SUBMIT, BadRequest("bad params", status=400, code="WORKFLOW_PARAMS_INVALID"),
     FailureKind.PLAUD_REFUSED),
    (StageName.POLL, NotFound("gone", status=404), FailureKind.PLAUD_REFUSED),
    (StageName.SUBMIT, AuthError("wrong key", status=401), FailureKind.PLAUD_REFUSED),
    (StageName.POLL, KeyError("bug"), FailureKind.INTERNAL),
])
def test_exceptions_map_to_kinds(stage, exc, kind):
    assert classify(stage, exc) is kind


def test_a_failure_round_trips_through_the_record_with_its_plaud_details():
    error = BadRequest("bad params", status=400, code="WORKFLOW_PARAMS_INVALID")
    failure = Failure.now(StageName.SUBMIT, FailureKind.PLAUD_REFUSED, "Plaud refused it", error)
    stored = failure.to_dict()
    assert stored["kind"] == "plaud_refused" and stored["stage"] == "submit"
    assert stored["status"] == 400 and stored["code"] == "WORKFLOW_PARAMS_INVALID" and stored["error"] == "BadRequest"
    again = Failure.from_record(Record("r", RecordingState.FAILED, {"failure": stored}))
    assert again == failure
    assert again.describe("r") == "recording r failed at submit: Plaud refused it"


def old_record(failure: dict, **fields) -> Record:
    """A FAILED record written before failures had a kind."""
    return Record("old", RecordingState.FAILED, {"failure": failure, "source": "/a.mp3", **fields})


@pytest.mark.parametrize("failure, fields, kind", [
    ({"stage": "transcribe", "reason": "source must be a path"}, {}, FailureKind.INVALID_REQUEST),
    ({"stage": "upload", "reason": "gave up after 8 attempts"}, {}, FailureKind.UPLOAD),
    ({"stage": "submit", "reason": "Plaud refused it", "status": 400}, {}, FailureKind.PLAUD_REFUSED),
    ({"stage": "submit", "reason": "gave up after 8 attempts"}, {}, FailureKind.PLAUD_UNAVAILABLE),
    ({"stage": "poll", "reason": "anything at all", "at": 1000.0}, {"plaud_status": "FAILURE"},
     FailureKind.PLAUD_FAILED),
    ({"stage": "poll", "reason": "anything at all", "at": 1000.0 + 6 * 3600}, {"submitted_at": "1000.0"},
     FailureKind.TIMED_OUT),
    ({"stage": "poll", "reason": "gave up after 20 attempts", "at": 1100.0, "error": "ServerError"},
     {"submitted_at": "1000.0"}, FailureKind.PLAUD_UNAVAILABLE),
    ({"stage": "poll", "reason": "anything at all", "at": 1100.0}, {"submitted_at": "1000.0"},
     FailureKind.PLAUD_FAILED),  # as the poll wrote Plaud's FAILURE before kinds: no error class
])
def test_records_without_a_kind_get_the_one_their_data_implies(failure, fields, kind):
    inferred = Failure.from_record(old_record(failure, **fields), poll_deadline_s=6 * 3600)
    assert inferred.kind is kind


@pytest.mark.parametrize("stage, kind, start", [
    (StageName.UPLOAD, FailureKind.UPLOAD, StageName.UPLOAD),
    (StageName.SUBMIT, FailureKind.SOURCE, StageName.UPLOAD),
    (StageName.SUBMIT, FailureKind.PLAUD_REFUSED, StageName.SUBMIT),
    (StageName.SUBMIT, FailureKind.PLAUD_UNAVAILABLE, StageName.SUBMIT),
    (StageName.POLL, FailureKind.PLAUD_FAILED, StageName.SUBMIT),
    (StageName.POLL, FailureKind.TIMED_OUT, StageName.SUBMIT),
    (StageName.POLL, FailureKind.PLAUD_UNAVAILABLE, StageName.POLL),
    (StageName.POLL, FailureKind.PLAUD_REFUSED, StageName.POLL),
    (StageName.POLL, FailureKind.INTERNAL, StageName.POLL),
])
def test_where_a_retry_starts_depends_on_the_kind_not_the_words(stage, kind, start):
    for reason in ("Plaud reported FAILURE: no audio", "timed out: Plaud had not finished", "reworded entirely"):
        restart, _, _ = reconcile.restart_point(Failure(stage, kind, reason, 0.0))
        assert restart is start, reason


@pytest.fixture
def store():
    return fake_record_store()


def test_retry_clears_what_its_restart_redoes_and_refuses_requests_refused_at_the_door(store, monkeypatch):
    sent = []
    monkeypatch.setattr(reconcile, "send_pipeline", lambda *args, **kwargs: sent.append(kwargs["start"]))
    rt = FakeRuntime(store)
    now = time.time()
    store.create("plaud-failed", {"source": "/a.mp3", "transcription_id": "t1", "polls": 3}, due_at=now)
    store.transition("plaud-failed", RecordingState.FAILED, {"failure": Failure.now(
        StageName.POLL, FailureKind.PLAUD_FAILED, "whatever it says").to_dict()})
    store.create("flaky-poll", {"source": "/a.mp3", "transcription_id": "t2"}, due_at=now)
    store.transition("flaky-poll", RecordingState.FAILED, {"failure": Failure.now(
        StageName.POLL, FailureKind.PLAUD_UNAVAILABLE, "Plaud reported FAILURE (words that once meant resubmit)"
    ).to_dict()})
    store.create("refused", {"source": "/a.mp3"}, due_at=now)
    store.transition("refused", RecordingState.FAILED, {"failure": Failure.now(
        StageName.TRANSCRIBE, FailureKind.INVALID_REQUEST, "bad kwargs").to_dict()})

    assert reconcile.retry_failed(rt, "plaud-failed")[1] == "submit"
    record = store.get("plaud-failed")
    assert record.state is RecordingState.UPLOADED and record.get("transcription_id") is None
    assert record.get("failure") is None and record.get("polls") is None
    assert reconcile.retry_failed(rt, "flaky-poll")[1] == "poll"
    assert store.get("flaky-poll").get("transcription_id") == "t2"  # the Plaud job may still be fine: ask again
    with pytest.raises(reconcile.NotRetryable, match="refused at the door"):
        reconcile.retry_failed(rt, "refused")
    assert sent == [StageName.SUBMIT, StageName.POLL]


def test_the_attempt_limit_is_a_property_of_the_stage():
    from tasks.poll import poll
    from tasks.submit import submit
    from tasks.upload import upload

    settings = PipelineSettings(stage_attempts=3, poll_error_attempts=11)
    assert [t.attempt_limit(settings) for t in (upload, submit, poll)] == [3, 3, 11]
    assert [t.stage for t in (upload, submit, poll)] == [StageName.UPLOAD, StageName.SUBMIT, StageName.POLL]
