"""The pipeline's logic without a broker: schedule, records, validation, settings, reconciler."""

from __future__ import annotations

import math
import random
import time

import fakeredis
import pytest

from plaud.errors import ConfigError
from tasks import metrics, reconcile
from tasks.errors import InvalidRequest
from tasks.names import DUE_INDEX, ENTRY_QUEUE, TRANSCRIBE, record_key
from tasks.records import RecordingState
from tasks.schedule import PollSchedule, overdue_fraction
from tasks.settings import PipelineSettings
from tasks.timing import GENERATION_STEPS, STEP_START, TARGET_HIT_RATE, TimingModel
from tasks.transcribe import shown_source, validate
from tests.helpers import FakeRuntime, fake_record_store

# -- schedule ----------------------------------------------------------------------------------


def test_probes_before_the_expected_finish_then_one_just_after():
    schedule = PollSchedule(min_interval_s=2, max_interval_s=120)
    rng = random.Random(0)
    assert 0.6 * 65 - 2 <= schedule.next_delay_s(0, 65, rng=rng) <= 0.6 * 65 + 2
    assert 0.85 * 65 - 40 - 2 <= schedule.next_delay_s(40, 65, rng=rng) <= 0.85 * 65 - 40 + 2
    after = [60 + schedule.next_delay_s(60, 65, rng=rng) for _ in range(200)]
    assert all(68 <= t <= 71 for t in after)  # the guard after the expected finish, jittered later only


def test_without_slack_the_first_request_is_the_on_time_one():
    schedule = PollSchedule(min_interval_s=2, max_interval_s=120)
    rng = random.Random(0)
    assert schedule.probes(1.0) == (0.6, 0.85, 1.0)
    assert schedule.probes(0.3) == (0.85, 1.0)
    assert schedule.probes(0.1) == (1.0,)
    firsts = [schedule.next_delay_s(0, 65, slack=0.1, rng=rng) for _ in range(200)]
    assert all(68 <= t <= 71 for t in firsts)


def test_overdue_interval_is_a_twentieth_of_the_wait_within_bounds_and_longer_without_slack():
    schedule = PollSchedule(min_interval_s=2, max_interval_s=120)
    rng = random.Random(0)
    assert 47 <= schedule.next_delay_s(1000, 10, rng=rng) <= 53
    assert 117 <= schedule.next_delay_s(10_000, 10, rng=rng) <= 123  # capped (plus jitter)
    assert 1.9 <= schedule.next_delay_s(16, 10, rng=rng) <= 2.1  # floored
    assert 77 <= schedule.next_delay_s(400, 10, slack=0.0, rng=rng) <= 83  # 20 % with no slack
    assert overdue_fraction(1.0) == 0.05 and overdue_fraction(0.0) == 0.2 and overdue_fraction(0.25) == 0.125


def test_a_fixed_clock_for_comparisons():
    schedule = PollSchedule(fixed_interval_s=5)
    assert {schedule.next_delay_s(w, 65) for w in (0, 30, 300)} == {5}


def test_polls_per_recording_stay_few_and_detection_delay_small():
    schedule = PollSchedule(min_interval_s=2, max_interval_s=120)
    rng = random.Random(1)
    for processing_s in (10, 360, 7200):  # the job takes exactly what was expected
        for slack, most_polls in ((1.0, 4), (0.0, 2)):
            t = schedule.next_delay_s(0, processing_s, slack, rng)
            polls = 1
            while t < processing_s:
                t += schedule.next_delay_s(t, processing_s, slack, rng)
                polls += 1
            assert polls <= most_polls and t - processing_s <= 6.5


# -- records -----------------------------------------------------------------------------------


@pytest.fixture
def store():
    return fake_record_store()


def test_create_is_idempotent(store):
    assert store.create("r1", {"source": "/a.mp3", "params": {"x": 1}}, due_at=10) is None
    assert store.create("r1", {"source": "/b.mp3"}, due_at=10) is RecordingState.QUEUED
    record = store.get("r1")
    assert record.get("source") == "/a.mp3" and record.get("params") == {"x": 1}


def test_secret_fields_are_sealed_at_rest(store):
    store.create("r1", {"source": "https://h/a.mp3?X-Amz-Signature=s3cr3t", "webhook_url": "https://h/hook?token=t0k"},
                 due_at=10)
    raw = b" ".join(store.redis.hvals(record_key("r1")))
    assert b"s3cr3t" not in raw and b"t0k" not in raw
    assert store.get("r1").get("source").endswith("s3cr3t")


def test_transitions_are_timestamped_and_terminal_states_stick(store):
    store.create("r1", {}, due_at=10)
    assert store.transition("r1", RecordingState.UPLOADING, {"bytes_sent": 5}, due_at=20) is RecordingState.QUEUED
    assert store.transition("r1", RecordingState.FAILED, {"failure": {"reason": "x"}}) is RecordingState.UPLOADING
    assert store.transition("r1", RecordingState.SUCCEEDED) is RecordingState.FAILED  # refused: stays FAILED
    record = store.get("r1")
    assert record.state is RecordingState.FAILED and record.number("at_UPLOADING") > 0
    assert store.redis.zscore(DUE_INDEX, "r1") is None and 0 < store.redis.ttl(record_key("r1")) <= 3600
    assert store.transition("r1", RecordingState.QUEUED, reopen=True) is RecordingState.FAILED
    assert store.transition("missing", RecordingState.UPLOADING) is None


def test_followers_join_a_live_recording_and_its_end_hands_them_over(store):
    store.create("r1", {}, due_at=10)
    assert store.follow("r1", "caller-b", most=2) == (RecordingState.QUEUED, True)
    assert store.follow("r1", "caller-b", most=2) == (RecordingState.QUEUED, True)  # redelivered: kept once
    assert store.follow("r1", "caller-c", most=2) == (RecordingState.QUEUED, True)
    assert store.follow("r1", "caller-d", most=2) == (RecordingState.QUEUED, False)  # one too many
    assert "followers" not in store.get("r1").public()
    assert store.transition("r1", RecordingState.UPLOADING, due_at=20) is RecordingState.QUEUED
    ended = store.end("r1", RecordingState.SUCCEEDED, {"result": {"text": "hi"}})
    assert ended.previous is RecordingState.UPLOADING and ended.followers == ("caller-b", "caller-c")
    again = store.end("r1", RecordingState.FAILED)  # ended already: refused, nobody to tell twice
    assert again.previous is RecordingState.SUCCEEDED and again.followers == ()
    assert store.follow("r1", "caller-e", most=2) == (RecordingState.SUCCEEDED, False)  # ended: read it
    assert store.follow("missing", "caller-f", most=2) == (None, False)
    assert store.end("missing", RecordingState.CANCELLED).previous is None


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


def test_reconciler_redrives_overdue_recordings_from_the_right_stage(store, monkeypatch):
    sent = []
    monkeypatch.setattr(reconcile, "send_pipeline", lambda *args, **kwargs: sent.append((args, kwargs)))
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
    # Each re-drive is counted for the metrics, by the stage it restarts at.
    assert metrics.read_counter(store.redis, metrics.REDRIVES) == {(stage,): 1 for stage in
                                                                   ("upload", "submit", "poll", "deliver")}


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
        validate({"source": "/a.mp3", "callback_task": "x.y", "callback_queue": ENTRY_QUEUE})
    assert validate({"source": "/a.mp3", "callback_task": "billing.on_transcript"})["callback_task"]


def test_the_budget_watches_the_queues_entry_tasks_wait_in():
    from tasks.names import ENTRY_QUEUES
    from workers.celery_app import ROUTES

    assert set(ENTRY_QUEUES) == {ENTRY_QUEUE, ROUTES[TRANSCRIBE]["queue"]}


def test_the_app_settings_that_matter():
    from workers.celery_app import make_app

    app = make_app(PipelineSettings.from_env({}))
    conf = app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options == {"visibility_timeout": 14400, "socket_timeout": 5.0,
                                             "socket_connect_timeout": 5.0, "socket_keepalive": True}
    assert conf.redis_socket_timeout == 5.0 and conf.task_publish_retry_policy["max_retries"] == 2
    assert conf.result_backend_transport_options == {}
    assert conf.result_expires == 7 * 86400 and conf.worker_send_task_events
    assert {q.name for q in conf.task_queues} == {"celery", "plaud.api", "plaud.uploads", "plaud.polls"}


# -- the learned timing model --------------------------------------------------------------------


def test_timing_model_starts_at_the_prior_and_is_shared_through_redis():
    server = fakeredis.FakeServer()
    a = TimingModel(fakeredis.FakeRedis(server=server), prior_base_s=5, prior_rtf=0.1)
    b = TimingModel(fakeredis.FakeRedis(server=server), prior_base_s=5, prior_rtf=0.1)
    assert a.current().expected_s(600) == 65
    a.learn(600, hit=False)
    assert b.current().expected_s(600) > 65 and b.current().misses == 1
    b.forget()
    assert a.current().expected_s(600) == 65


@pytest.mark.parametrize("true_base_s,true_rtf", [(3.0, 0.05), (8.0, 0.3)])
def test_timing_model_learns_where_eight_in_ten_are_done_when_first_polled(true_base_s, true_rtf):
    model = TimingModel(fakeredis.FakeRedis(), prior_base_s=5, prior_rtf=0.1)
    rng = random.Random(3)

    def verdicts(n, learn):
        hits = 0
        for _ in range(n):
            audio_s = rng.choice((30, 120, 600, 1800))
            actual_s = (true_base_s + true_rtf * audio_s) * rng.uniform(0.9, 1.1)
            hit = actual_s <= model.current().expected_s(audio_s)
            hits += hit
            if learn:
                model.learn(audio_s, hit)
        return hits / n

    verdicts(1500, learn=True)
    assert 0.7 <= verdicts(2000, learn=False) <= 0.9
    learned = model.current()
    # Near the truth, on the high side (an 80th percentile of a +/-10 % spread).
    assert 0.97 * true_rtf <= learned.rtf <= 1.25 * true_rtf


def test_timing_verdicts():
    from plaud.transcriptions import TranscriptionStatus as S
    from tasks.poll import ON_TIME_WINDOW_S, timing_verdict
    assert timing_verdict(S.SUCCESS, 60, 61, 65) is True  # an early probe found it done
    assert timing_verdict(S.SUCCESS, 69, 70, 65) is True  # the on-time poll
    assert timing_verdict(S.SUCCESS, 90, 91, 65) is None  # held up: says nothing
    assert timing_verdict(S.PROGRESS, 68, 69, 65) is False  # still running at the on-time poll
    assert timing_verdict(S.PROGRESS, 66, 67, 65) is None  # asked before the guard was up
    assert timing_verdict(S.PROGRESS, 40, 41, 65) is None  # an early probe
    assert timing_verdict(S.FAILURE, 68, 69, 65) is None
    assert ON_TIME_WINDOW_S == 7


def test_a_batch_scheduled_on_one_low_estimate_moves_it_a_generation_not_a_hundred_steps():
    model = TimingModel(fakeredis.FakeRedis(), prior_base_s=5, prior_rtf=0.05)
    used = model.current()
    most = used.rtf * math.exp(GENERATION_STEPS * STEP_START * TARGET_HIT_RATE) * 1.001
    for _ in range(100):  # a hundred long recordings, all scheduled on the same estimate, all late
        model.learn(1800, hit=False, used=used)
    raised = model.current()
    assert used.rtf * 2 < raised.rtf <= most  # ungated, 100 steps of +24 % would be e^24 times
    model.learn(1800, hit=False, used=raised)  # a recording scheduled on the raised estimate moves it on
    assert model.current().rtf > raised.rtf
    for _ in range(100):  # the batch's hits, on the old estimate: never below a generation under it
        model.learn(1800, hit=True, used=used)
    assert model.current().rtf >= used.rtf * math.exp(-GENERATION_STEPS * STEP_START) * 0.999


def test_polls_that_read_the_estimate_before_their_request_cannot_carry_it_past_a_generation():
    """Polls in flight read the estimate before their (maybe slow) request, and all learn after it."""
    model = TimingModel(fakeredis.FakeRedis(), prior_base_s=5, prior_rtf=0.05)
    used = read_before_the_requests = model.current()
    for _ in range(100):  # a hundred long recordings of one batch, all late, all from the one read
        model.lesson(1800, False, used, now=read_before_the_requests).run(model.redis)
    most = used.rtf * math.exp(GENERATION_STEPS * STEP_START * TARGET_HIT_RATE) * 1.001
    assert used.rtf * 2 < model.current().rtf <= most
    assert model.current().samples == 100 and model.current().misses == 100


def test_tenant_and_priority_are_validated_with_a_clear_error_and_default_sensibly():
    assert (validate({"source": "/a.mp3"})["tenant"], validate({"source": "/a.mp3"})["priority"]) == ("default",
                                                                                                       "normal")
    chosen = validate({"source": "/a.mp3", "tenant": "acme-eu", "priority": "high"})
    assert (chosen["tenant"], chosen["priority"]) == ("acme-eu", "high")
    with pytest.raises(InvalidRequest, match="tenant must be"):
        validate({"source": "/a.mp3", "tenant": "has spaces"})
    with pytest.raises(InvalidRequest, match="priority must be one of high, normal, low, got 'urgent'"):
        validate({"source": "/a.mp3", "priority": "urgent"})
