"""Stage functions called directly in this process (a plain call, not eager mode) against the sandbox."""

from __future__ import annotations

import contextlib
import time

import pytest

from plaud.config import PlaudConfig
from plaud.rates import Rate
from tasks import names
from tasks.records import RecordingState
from tasks.runtime import Runtime, using
from tasks.settings import PipelineSettings
from tasks.submit import submit


def build_runtime(sandbox, redis_server, *, tx_rate_limit: str | None = None) -> Runtime:
    """A runtime handed in whole: this test's Redis and sandbox, the environment untouched."""
    config = PlaudConfig.sandbox(sandbox.base_url, user_id="sandbox-user",
                                 tx_rate_limit=Rate.parse(tx_rate_limit) if tx_rate_limit else None)
    return Runtime.build(PipelineSettings(redis_url=redis_server.url), config)


@pytest.fixture
def rt(sandbox, redis_server, redis_client):
    with using(build_runtime(sandbox, redis_server)) as runtime:
        yield runtime


@pytest.fixture
def limited_runtime(sandbox, redis_server, redis_client):
    """The same with a fleet budget: ``limited_runtime("1/m")``."""

    with contextlib.ExitStack() as stack:
        yield lambda rate: stack.enter_context(using(build_runtime(sandbox, redis_server, tx_rate_limit=rate)))


def test_submit_uploads_again_when_the_download_url_expired(rt, api, speech_mp3, monkeypatch):
    import tasks.submit

    rid = f"expired-{time.time_ns()}"
    rt.store.create(rid, {"source": speech_mp3.path, "user_id": "plaud-workers", "params": {}, "poll_token": "t"},
                    due_at=time.time() + 60)
    rt.store.transition(rid, RecordingState.UPLOADED, {"download_url": "http://127.0.0.1:1/gone.mp3",
                                                       "download_url_expires_at": time.time() - 1})
    held_when_submitted = []
    real = tasks.submit.submitted
    monkeypatch.setattr(tasks.submit, "submitted", lambda *args, **kwargs: held_when_submitted.append(
        rt.store.has_lease(rid)) or real(*args, **kwargs))
    submit(rid)
    record = rt.store.get(rid)
    assert record.state is RecordingState.SUBMITTED and record.get("transcription_id")
    assert record.number("download_url_expires_at") > time.time() + 3600
    stats = api.stats()
    assert stats["uploads_completed"] == 1 and stats["transcriptions_created"] == 1
    # The upload's own write kept the submit's lease; the submit's last write gave it back.
    assert held_when_submitted == [True] and not rt.store.has_lease(rid)


def test_upload_and_submit_give_their_lease_back_in_their_last_write(rt, api, speech_mp3, monkeypatch):
    from tasks.upload import upload

    rid = f"lease-{time.time_ns()}"
    rt.store.create(rid, {"source": speech_mp3.path, "user_id": "plaud-workers", "params": {}, "poll_token": "t"},
                    due_at=time.time() + 60)
    released_apart = []
    monkeypatch.setattr(rt.store, "release_lease", lambda *args: released_apart.append(args))
    upload(rid)
    assert rt.store.get(rid).state is RecordingState.UPLOADED and not rt.store.has_lease(rid)
    submit(rid)
    assert rt.store.get(rid).state is RecordingState.SUBMITTED and not rt.store.has_lease(rid)
    assert released_apart == []  # no round trip of its own for either


def test_submit_never_creates_a_second_plaud_task(rt, api, speech_mp3, monkeypatch):
    import tasks.submit

    rid = f"once-{time.time_ns()}"
    rt.store.create(rid, {"source": speech_mp3.path, "user_id": "plaud-workers", "params": {}, "poll_token": "t"},
                    due_at=time.time() + 60)
    submit(rid)
    first = rt.store.get(rid).get("transcription_id")
    lease_while_done = []
    real = tasks.submit.already_submitted
    monkeypatch.setattr(tasks.submit, "already_submitted",
                        lambda task, record: lease_while_done.append(rt.store.has_lease(rid)) or real(task, record))
    submit(rid)  # a redelivered message
    assert rt.store.get(rid).get("transcription_id") == first
    assert api.stats()["transcriptions_created"] == 1
    # The lease its read took along is given back before that run ends: a next stage need not wait for it.
    assert lease_while_done == [False]


def test_a_streamed_url_gets_its_duration_estimated_from_its_size(rt, file_server, speech_mp3):
    directory, origin = file_server
    data = open(speech_mp3.path, "rb").read()
    (directory / "stream.mp3").write_bytes(data)
    rid = f"estimate-{time.time_ns()}"
    rt.store.create(rid, {"source": f"{origin}/stream.mp3", "user_id": "plaud-workers", "params": {},
                          "poll_token": "t"}, due_at=time.time() + 60)
    submit(rid)  # no DownloadUrl yet: uploads first, streaming the URL through
    record = rt.store.get(rid)
    assert record.get("audio_duration_estimated") == "1"
    assert record.number("audio_duration_s") == pytest.approx(len(data) * 8 / 48000, abs=0.01)


def test_a_run_that_waited_for_the_lease_sees_the_other_runs_submit(rt, api, speech_mp3, monkeypatch):
    """Two chains for one recording: the other one submits before ours takes the lease."""
    rid = f"race-{time.time_ns()}"
    rt.store.create(rid, {"source": speech_mp3.path, "user_id": "plaud-workers", "params": {}, "poll_token": "t"},
                    due_at=time.time() + 60)
    take_lease_and_get = rt.store.take_lease_and_get
    other_ran = []

    def the_other_run_finishes_first(recording_id, holder, ttl_s):
        if not other_ran:
            other_ran.append(True)
            submit(rid)  # the other chain: uploads and submits, then releases its lease
        return take_lease_and_get(recording_id, holder, ttl_s)

    monkeypatch.setattr(rt.store, "take_lease_and_get", the_other_run_finishes_first)
    submit(rid)
    assert other_ran and api.stats()["transcriptions_created"] == 1
    assert api.stats()["uploads_completed"] == 1


def test_a_submit_held_back_by_the_budget_is_not_counted_as_sent(limited_runtime, api, speech_mp3):
    limited = limited_runtime("1/m")
    assert limited.client.budget.take("submit", "another-recording")  # the minute's only slot
    rid = f"held-{time.time_ns()}"
    limited.store.create(rid, {"source": speech_mp3.path, "user_id": "plaud-workers", "params": {},
                               "poll_token": "t"}, due_at=time.time() + 60)
    for _ in range(2):  # refused twice: still nothing sent, nothing to suspect
        assert submit(rid) == "waits as data for submit"  # the task ends; nothing follows it
    record = limited.store.get(rid)
    assert record.get("submit_requests") is None and record.get("possible_duplicate_submit") is None
    assert limited.client.budget.load().submits_waiting == 1
    assert record.get("waiting_for") == "submit" and limited.in_line_for(rid) == "submit"
    assert api.stats()["transcriptions_created"] == 0


def test_the_dispatcher_wakes_a_waiting_submit_when_its_slot_frees(limited_runtime, api, speech_mp3, monkeypatch):
    from tasks import dispatch, reconcile
    from tasks.failures import StageName

    woken = []

    def send_pipeline(recording_id, token, *, task_id, start, **options):
        woken.extend([(recording_id, task_id, start), options])

    monkeypatch.setattr(reconcile, "send_pipeline", send_pipeline)
    limited = limited_runtime("1/s")  # a window of 1 s plus the 1-s safety margin
    assert limited.client.budget.take("submit", "another-recording")
    rid = f"woken-{time.time_ns()}"
    limited.store.create(rid, {"source": speech_mp3.path, "user_id": "plaud-workers", "params": {},
                               "poll_token": "t", "task_id": "entry-task"}, due_at=time.time() + 60)
    assert submit(rid) == "waits as data for submit"
    assert dispatch.dispatch_once(limited).woken == 0  # the slot is still taken
    time.sleep(2.1)
    assert dispatch.dispatch_once(limited).woken == 1
    assert woken == [(rid, "entry-task", StageName.SUBMIT), {"queue": names.POLLS_QUEUE}]
    assert limited.in_line_for(rid) == "submit"  # granted, not yet used: the reconciler leaves it be
    submit(rid)  # the woken task: its grant lets it through
    record = limited.store.get(rid)
    assert record.state is RecordingState.SUBMITTED and record.get("waiting_for") is None
    assert limited.in_line_for(rid) is None and api.stats()["transcriptions_created"] == 1


def test_recordings_still_in_the_broker_count_against_the_budgets_slack(limited_runtime, redis_client):
    limited = limited_runtime("10/m")
    assert limited.budget_slack() == 1.0
    redis_client.rpush(names.ENTRY_QUEUE, "entry-1", "entry-2")  # two recordings not yet entered
    redis_client.rpush(names.API_QUEUE, "entry-3")
    assert limited.entries_waiting() == 3
    assert limited.budget_slack() == pytest.approx(0.4)  # each will submit and poll: 6 of 10


def test_an_entry_behind_a_full_upload_line_waits_in_it_and_sends_no_upload_task(limited_runtime, speech_mp3,
                                                                                 monkeypatch):
    from tasks import dispatch, reconcile
    from tasks import transcribe as entry
    from tasks.failures import StageName

    limited = limited_runtime("1/m")
    slots = limited.upload_slots
    for i in range(slots.capacity - 1):  # every slot but one is taken by recordings ahead
        assert slots.take(f"ahead-{i}", order=i, now=time.time())
    handed = []
    monkeypatch.setattr(entry, "hand_over",
                        lambda task, signature, send=None: handed.append(signature) or "handed over")
    run = f"line-{time.time_ns()}"
    assert entry.transcribe(source=speech_mp3.path, recording_id=f"{run}-0") == "handed over"  # the last slot
    assert entry.transcribe(source=speech_mp3.path, recording_id=f"{run}-1") == "waits as data for upload"
    assert len(handed) == 1  # no upload task for the second: it would only have found the line full
    record = limited.store.get(f"{run}-1")
    assert record.state is RecordingState.QUEUED and record.get("waiting_for") == "upload"
    assert limited.in_line_for(f"{run}-1") == "upload" and record.number("waits") == 1

    woken = []
    monkeypatch.setattr(reconcile, "send_pipeline",
                        lambda recording_id, token, *, task_id, start, **options: woken.append((recording_id, start)))
    assert dispatch.dispatch_once(limited).woken == 0  # no slot free yet
    slots.done(f"{run}-0")  # the first was submitted: its slot is free
    dispatch.dispatch_once(limited)
    assert woken == [(f"{run}-1", StageName.UPLOAD)]  # its chain starts at the upload


def test_deliver_stores_its_result_with_its_move_and_never_over_a_cancellation(rt, monkeypatch):
    """Deliver, called in this process under an entry's id: SUCCESS is written with the record's
    move (Celery's backend stores nothing, here or after the return); a recording cancelled
    between deliver's read and its move keeps its cancellation."""
    from celery import Celery

    from tasks.deliver import deliver

    results = Celery(backend=rt.settings.redis_url, set_as_current=False).backend
    # The task's own backend, over the app's (Celery's Task.backend setter; None gives the app's back).
    monkeypatch.setattr(deliver._get_current_object(), "_backend", results)
    stored_by_celery = []
    monkeypatch.setattr(results, "store_result", lambda *args, **kwargs: stored_by_celery.append(args))

    def delivered(recording_id: str) -> tuple[dict, bool]:
        """The result, and whether the run left its storing to Celery."""
        deliver.push_request(id=f"entry-{recording_id}", is_eager=False)
        try:
            return deliver.run(recording_id), not deliver.request.ignore_result
        finally:
            deliver.pop_request()

    def transcribed(recording_id: str) -> None:
        rt.store.create(recording_id, {"source": "/a.mp3", "user_id": "u", "params": {}, "poll_token": "t"},
                        due_at=time.time() + 60)
        rt.store.transition(recording_id, RecordingState.PROCESSING, {"transcript": {"text": "hello"}})

    rid = f"deliver-{time.time_ns()}"
    transcribed(rid)
    result, left_to_celery = delivered(rid)
    meta = results.get_task_meta(f"entry-{rid}")
    assert (meta["status"], meta["result"]["text"], result["text"]) == ("SUCCESS", "hello", "hello")
    assert not left_to_celery and stored_by_celery == [] and rt.store.get(rid).state is RecordingState.SUCCEEDED

    cancelled = f"cancelled-{time.time_ns()}"
    transcribed(cancelled)
    real_end = rt.store.end

    def cancelled_first(recording_id, *args, **kwargs):
        real_end(recording_id, RecordingState.CANCELLED)  # a cancel between deliver's read and its move
        return real_end(recording_id, *args, **kwargs)

    monkeypatch.setattr(rt.store, "end", cancelled_first)
    _, left_to_celery = delivered(cancelled)
    assert results.get_task_meta(f"entry-{cancelled}")["status"] == "PENDING"  # nothing stored over it
    assert not left_to_celery and stored_by_celery == [] and rt.store.get(cancelled).state is RecordingState.CANCELLED
