"""The pipeline's logic without a broker: schedule, records, validation, settings, reconciler."""

from __future__ import annotations

import random
import time

import fakeredis
import pytest

from plaud.errors import ConfigError
from plaud.sealing import Sealer
from tasks import reconcile
from tasks.errors import InvalidRequest
from tasks.records import DUE_INDEX, RecordingState, RecordStore
from tasks.schedule import PollSchedule
from tasks.settings import PipelineSettings
from tasks.transcribe import shown_source, validate

# -- schedule ----------------------------------------------------------------------------------


def test_probes_before_the_expected_finish_then_one_just_after():
    schedule = PollSchedule(base_s=5, rtf=0.1, min_interval_s=2, max_interval_s=120)
    rng = random.Random(0)
    expected = schedule.expected_s(600)  # 65 s
    assert expected == 65
    assert 0.6 * 65 - 2 <= schedule.first_delay_s(600, rng) <= 0.6 * 65 + 2
    assert 0.85 * 65 - 40 - 2 <= schedule.next_delay_s(40, 600, rng) <= 0.85 * 65 - 40 + 2
    after = [60 + schedule.next_delay_s(60, 600, rng) for _ in range(200)]
    assert all(65 <= t <= 71 for t in after)  # never before the expected finish


def test_overdue_interval_is_a_twentieth_of_the_wait_within_bounds():
    schedule = PollSchedule(base_s=5, rtf=0.1, min_interval_s=2, max_interval_s=120)
    rng = random.Random(0)
    assert 47 <= schedule.next_delay_s(1000, 100, rng) <= 53
    assert 117 <= schedule.next_delay_s(10_000, 100, rng) <= 123  # capped (plus jitter)
    assert 1.9 <= schedule.next_delay_s(16, 100, rng) <= 2.1  # floored


def test_polls_per_recording_stay_few_and_detection_delay_small():
    schedule = PollSchedule(base_s=5, rtf=0.1, min_interval_s=2, max_interval_s=120)
    rng = random.Random(1)
    for audio_s in (50, 3550, 71950):  # expected 10 s, 360 s, 7200 s; the job takes exactly that
        processing_s = schedule.expected_s(audio_s)
        t = schedule.first_delay_s(audio_s, rng)
        polls = 1
        while t < processing_s:
            t += schedule.next_delay_s(t, audio_s, rng)
            polls += 1
        assert polls <= 4 and t - processing_s <= 6.5


# -- records -----------------------------------------------------------------------------------


@pytest.fixture
def store():
    return RecordStore(fakeredis.FakeRedis(), Sealer("test-secret"), ttl_s=3600)


def test_create_is_idempotent(store):
    assert store.create("r1", {"source": "/a.mp3", "params": {"x": 1}}, due_at=10) is None
    assert store.create("r1", {"source": "/b.mp3"}, due_at=10) is RecordingState.QUEUED
    record = store.get("r1")
    assert record.get("source") == "/a.mp3" and record.get("params") == {"x": 1}


def test_secret_fields_are_sealed_at_rest(store):
    store.create("r1", {"source": "https://h/a.mp3?X-Amz-Signature=s3cr3t", "webhook_url": "https://h/hook?token=t0k"},
                 due_at=10)
    raw = b" ".join(store.redis.hvals("plaud:rec:r1"))
    assert b"s3cr3t" not in raw and b"t0k" not in raw
    assert store.get("r1").get("source").endswith("s3cr3t")


def test_transitions_are_timestamped_and_terminal_states_stick(store):
    store.create("r1", {}, due_at=10)
    assert store.transition("r1", RecordingState.UPLOADING, {"bytes_sent": 5}, due_at=20) is RecordingState.QUEUED
    assert store.transition("r1", RecordingState.FAILED, {"failure": {"reason": "x"}}) is RecordingState.UPLOADING
    assert store.transition("r1", RecordingState.SUCCEEDED) is RecordingState.FAILED  # refused: stays FAILED
    record = store.get("r1")
    assert record.state is RecordingState.FAILED and record.number("at_UPLOADING") > 0
    assert store.redis.zscore(DUE_INDEX, "r1") is None and 0 < store.redis.ttl("plaud:rec:r1") <= 3600
    assert store.transition("r1", RecordingState.QUEUED, reopen=True) is RecordingState.FAILED
    assert store.transition("missing", RecordingState.UPLOADING) is None


def test_overdue_and_public_view(store):
    store.create("r1", {"source": "https://h/a.mp3?sig=x", "source_shown": "https://h/a.mp3"}, due_at=5)
    store.create("r2", {}, due_at=50)
    assert store.overdue(10) == ["r1"]
    public = store.get("r1").public()
    assert public["source"] == "https://h/a.mp3" and "poll_token" not in public


def test_leases(store):
    assert store.take_lease("r1", "task-a", 10)
    assert not store.take_lease("r1", "task-b", 10)
    assert store.take_lease("r1", "task-a", 10)  # the same task, redelivered
    store.release_lease("r1", "task-b")
    assert store.has_lease("r1")
    store.release_lease("r1", "task-a")
    assert not store.has_lease("r1")


# -- the public contract's kwargs --------------------------------------------------------------


@pytest.mark.parametrize("kwargs, words", [
    ({}, "source must be"),
    ({"source": 42}, "source must be"),
    ({"source": "s3://bucket/a.mp3"}, "URL scheme 's3'"),
    ({"source": "/a.mp3", "recording_id": "has spaces"}, "recording_id must be"),
    ({"source": "/a.mp3", "recording_id": 7}, "recording_id must be"),
    ({"source": "/a.mp3", "user_id": "abc"}, "user_id must be"),
    ({"source": "/a.mp3", "params": "diarize"}, "params must be a JSON object"),
    ({"source": "/a.mp3", "metadata": [1]}, "metadata must be a JSON object"),
    ({"source": "/a.mp3", "webhook_url": "ftp://h"}, "webhook_url must be"),
    ({"source": "/a.mp3", "audio_url": "x"}, "unknown kwargs ['audio_url']"),
])
def test_bad_kwargs_are_named(kwargs, words):
    with pytest.raises(InvalidRequest, match=words.replace("(", r"\(").replace("[", r"\[")):
        validate(kwargs)


def test_good_kwargs_and_shown_source():
    assert validate({"source": "C:/x.mp3"})["source"] == "C:/x.mp3"  # a drive letter is not a scheme
    assert validate({"source": "https://h/a.mp3", "recording_id": "rec-1.a:b"})["recording_id"] == "rec-1.a:b"
    assert shown_source("https://h/a.mp3?X-Amz-Signature=abc") == "https://h/a.mp3"


# -- settings ----------------------------------------------------------------------------------


def test_visibility_timeout_must_cover_countdowns_and_stages():
    with pytest.raises(ConfigError, match="PLAUD_VISIBILITY_TIMEOUT_S"):
        PipelineSettings.from_env({"PLAUD_VISIBILITY_TIMEOUT_S": "600"})
    settings = PipelineSettings.from_env({"REDIS_URL": "redis://r:6379/1", "CELERY_BROKER_URL": "redis://b/0"})
    assert (settings.broker, settings.backend) == ("redis://b/0", "redis://r:6379/1")


@pytest.mark.parametrize("env", [{"PLAUD_POLL_DEADLINE_S": "soon"}, {"PLAUD_STAGE_ATTEMPTS": "0"},
                                 {"PLAUD_RESULT_TTL_S": "-1"}])
def test_bad_pipeline_settings_name_the_variable(env):
    with pytest.raises(ConfigError, match=next(iter(env))):
        PipelineSettings.from_env(env)


# -- reconciler --------------------------------------------------------------------------------


class FakeRuntime:
    def __init__(self, store):
        self.store = store
        self.settings = PipelineSettings()


def test_reconciler_redrives_overdue_recordings_from_the_right_stage(store, monkeypatch):
    sent = []

    class Chain:
        def __init__(self, *args, **kwargs):
            sent.append((args, kwargs))

        def apply_async(self):
            pass

    monkeypatch.setattr(reconcile, "pipeline", Chain)
    now = time.time()
    for rid, state, extra in (("queued", RecordingState.QUEUED, {}), ("uploaded", RecordingState.UPLOADED, {}),
                              ("polling", RecordingState.PROCESSING, {}),
                              ("seen-done", RecordingState.PROCESSING, {"transcript": {"text": "x"}}),
                              ("busy", RecordingState.UPLOADING, {}), ("done", RecordingState.SUCCEEDED, {})):
        store.create(rid, {"task_id": f"task-{rid}", **extra}, due_at=now - 1)
        if state is not RecordingState.QUEUED:
            store.transition(rid, state, due_at=now - 1)
    store.redis.zadd(DUE_INDEX, {"done": now - 1})
    store.take_lease("busy", "someone", 60)
    revived = reconcile.sweep(FakeRuntime(store), now)
    assert sorted(revived) == ["polling", "queued", "seen-done", "uploaded"]
    starts = {args[0]: (kwargs["start"], kwargs["task_id"]) for args, kwargs in sent}
    assert starts == {"queued": ("upload", "task-queued"), "uploaded": ("submit", "task-uploaded"),
                      "polling": ("poll", "task-polling"), "seen-done": ("deliver", "task-seen-done")}
    assert store.redis.zscore(DUE_INDEX, "done") is None
    assert store.redis.zscore(DUE_INDEX, "busy") > now  # pushed back: a stage holds it
    assert store.get("polling").get("poll_token") == sent[[a[0] for a, _ in sent].index("polling")][0][1]


def test_tasks_that_re_enqueue_themselves_have_no_celery_retry_limit():
    from tasks.poll import poll
    from tasks.submit import submit
    from tasks.transcribe import follow
    from tasks.upload import upload

    assert [t.max_retries for t in (upload, submit, poll, follow)] == [None, None, None, None]
    assert {t.name for t in (upload, submit, poll, follow)} == {"plaud.upload", "plaud.submit", "plaud.poll",
                                                                 "plaud.follow"}


def test_webhooks_need_a_secret_and_callbacks_a_queue_of_their_own():
    with pytest.raises(InvalidRequest, match="no PLAUD_WEBHOOK_SECRET"):
        validate({"source": "/a.mp3", "webhook_url": "https://h/hook"}, webhooks_on=False)
    with pytest.raises(InvalidRequest, match="must not be a queue these workers consume"):
        validate({"source": "/a.mp3", "callback_task": "x.y", "callback_queue": "celery"})
    assert validate({"source": "/a.mp3", "callback_task": "billing.on_transcript"})["callback_task"]


def test_the_app_settings_that_matter():
    from workers.celery_app import make_app

    app = make_app(PipelineSettings.from_env({"PLAUD_SENTINEL_MASTER": "mymaster"}))
    conf = app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options == {"visibility_timeout": 14400, "master_name": "mymaster"}
    assert conf.result_backend_transport_options == {"master_name": "mymaster"}
    assert conf.result_expires == 7 * 86400 and conf.worker_send_task_events
    assert {q.name for q in conf.task_queues} == {"celery", "plaud.api", "plaud.uploads", "plaud.polls"}
