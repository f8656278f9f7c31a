"""Metrics: what the record store and the stages write to Redis, and what the exporter makes of it."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from plaud.config import PlaudConfig
from plaud.rates import Rate
from tasks import metrics
from tasks.names import IN_STATE_PREFIX, KOMBU_UNACKED, POLLS_QUEUE, UPLOADS_QUEUE
from tasks.records import RecordingState
from tasks.runtime import Runtime
from tasks.settings import PipelineSettings
from tasks.workers_alive import announce_alive
from workers.metrics_exporter import registry_for


@pytest.fixture
def rt(redis_server, redis_client):
    config = PlaudConfig.sandbox("http://127.0.0.1:9/developer/api", tx_rate_limit=Rate.parse("60/m"))
    runtime = Runtime.build(PipelineSettings(redis_url=redis_server.url), config)
    yield runtime
    runtime.redis.close()


def scrape(rt) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Sample name and labels -> value, as Prometheus would read them."""
    text = generate_latest(registry_for(rt)).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_transitions_keep_live_counts_by_state_and_tenant_and_count_the_ended(rt):
    store = rt.store
    for i, tenant in enumerate(["acme", "acme", None]):
        store.create(f"r{i}", {"tenant": tenant} if tenant else {}, due_at=time.time() + 60)
    store.transition("r0", RecordingState.UPLOADING)
    store.transition("r0", RecordingState.UPLOADING)  # the same state again: counted once
    store.transition("r1", RecordingState.FAILED)
    store.transition("r1", RecordingState.FAILED)  # terminal already: nothing moves
    found = scrape(rt)
    assert found[("plaud_recordings", (("state", "QUEUED"), ("tenant", "default")))] == 1
    assert found[("plaud_recordings", (("state", "UPLOADING"), ("tenant", "acme")))] == 1
    assert ("plaud_recordings", (("state", "QUEUED"), ("tenant", "acme"))) not in found  # none left there
    assert found[("plaud_recordings_ended_total", (("state", "FAILED"), ("tenant", "acme")))] == 1
    assert found[("plaud_backlog_recordings", ())] == 2
    assert rt.redis.zcard(IN_STATE_PREFIX + "QUEUED") == 1 and rt.redis.zcard(IN_STATE_PREFIX + "UPLOADING") == 1
    # A retry reopens a failed recording: live again, in its new state; the ended count stays (it is a count).
    store.transition("r1", RecordingState.UPLOADED, reopen=True)
    found = scrape(rt)
    assert found[("plaud_recordings", (("state", "UPLOADED"), ("tenant", "acme")))] == 1
    assert found[("plaud_recordings_ended_total", (("state", "FAILED"), ("tenant", "acme")))] == 1
    assert found[("plaud_backlog_recordings", ())] == 3


def test_the_oldest_recording_of_each_state_is_its_age_in_that_state(rt):
    rt.store.create("old", {}, due_at=time.time() + 60)
    rt.redis.zadd(IN_STATE_PREFIX + "QUEUED", {"old": time.time() - 120})  # as if enqueued two minutes ago
    rt.store.create("new", {}, due_at=time.time() + 60)
    found = scrape(rt)
    assert 119 < found[("plaud_recordings_oldest_age_seconds", (("state", "QUEUED"),))] < 130
    assert found[("plaud_recordings_oldest_age_seconds", (("state", "PROCESSING"),))] == 0
    rt.store.drop_due("old")  # a recording that vanished leaves the metrics' sets too
    assert scrape(rt)[("plaud_recordings_oldest_age_seconds", (("state", "QUEUED"),))] < 60


def test_counters_and_histograms_as_exported(rt):
    metrics.count(rt.redis, metrics.FAILURES, "upload", "source")
    metrics.count(rt.redis, metrics.FAILURES, "upload", "source")
    metrics.count(rt.redis, metrics.FAILURES, "poll", "timed_out")
    metrics.count(rt.redis, metrics.WEBHOOK_ATTEMPTS, "failed")
    # Histograms are observed by the move that ends the stage that measured them, once.
    for i, polls in enumerate((1, 1, 3, 70)):
        rt.store.create(f"h{i}", {}, due_at=time.time() + 60)
        rt.store.end(f"h{i}", RecordingState.SUCCEEDED, observe=[(metrics.POLLS_PER_RECORDING, polls)])
        rt.store.end(f"h{i}", RecordingState.SUCCEEDED, observe=[(metrics.POLLS_PER_RECORDING, polls)])  # again
    found = scrape(rt)
    assert found[("plaud_failures_total", (("kind", "source"), ("stage", "upload")))] == 2
    assert found[("plaud_failures_total", (("kind", "timed_out"), ("stage", "poll")))] == 1
    assert found[("plaud_webhook_deliveries_total", (("outcome", "failed"),))] == 1
    assert found[("plaud_polls_per_recording_bucket", (("le", "1.0"),))] == 2
    assert found[("plaud_polls_per_recording_bucket", (("le", "3.0"),))] == 3
    assert found[("plaud_polls_per_recording_bucket", (("le", "50.0"),))] == 3
    assert found[("plaud_polls_per_recording_bucket", (("le", "+Inf"),))] == 4
    assert (found[("plaud_polls_per_recording_count", ())], found[("plaud_polls_per_recording_sum", ())]) == (4, 75)
    # Several histograms in one step, each with its bucket, sum and count; none for a move refused.
    rt.store.create("h5", {}, due_at=time.time() + 60)
    observations = [(metrics.RECORDING_SECONDS, 12.5), (metrics.DETECTION_SECONDS, 0.25)]
    assert rt.store.transition("h5", RecordingState.UPLOADED, observe=observations) is RecordingState.QUEUED
    rt.store.end("h5", RecordingState.CANCELLED)
    assert rt.store.end("h5", RecordingState.SUCCEEDED, observe=observations).previous is RecordingState.CANCELLED
    found = scrape(rt)
    assert found[("plaud_recording_duration_seconds_bucket", (("le", "15.0"),))] == 1
    assert found[("plaud_recording_duration_seconds_bucket", (("le", "5.0"),))] == 0
    assert (found[("plaud_recording_duration_seconds_count", ())], found[("plaud_recording_duration_seconds_sum", ())]
            ) == (1, 12.5)
    assert found[("plaud_detection_delay_seconds_bucket", (("le", "1.0"),))] == 1
    assert found[("plaud_detection_delay_seconds_sum", ())] == 0.25
    with pytest.raises(ValueError, match="labels"):
        metrics.count(rt.redis, metrics.FAILURES, "upload")


def test_queues_count_what_waits_in_the_list_and_what_workers_hold(rt):
    rt.redis.rpush(UPLOADS_QUEUE, "a", "b")
    for i, (queue, exchange) in enumerate([(POLLS_QUEUE, POLLS_QUEUE), (POLLS_QUEUE, POLLS_QUEUE),
                                           (UPLOADS_QUEUE, UPLOADS_QUEUE), ("billing.events", "")]):
        rt.redis.hset(KOMBU_UNACKED, f"tag{i}", json.dumps([{"body": "..."}, exchange, queue]))
    announce_alive(rt.redis, "w1@host", (POLLS_QUEUE, UPLOADS_QUEUE))
    announce_alive(rt.redis, "w2@host", (POLLS_QUEUE,))
    found = scrape(rt)
    assert found[("plaud_queue_messages", (("queue", UPLOADS_QUEUE), ("where", "waiting")))] == 2
    assert found[("plaud_queue_messages", (("queue", UPLOADS_QUEUE), ("where", "held")))] == 1
    assert found[("plaud_queue_messages", (("queue", POLLS_QUEUE), ("where", "held")))] == 2
    assert found[("plaud_queue_messages", (("queue", "other"), ("where", "held")))] == 1
    assert found[("plaud_queue_pending_messages", (("queue", UPLOADS_QUEUE),))] == 3
    assert found[("plaud_queue_pending_messages", (("queue", POLLS_QUEUE),))] == 2
    assert found[("plaud_queue_consumers", (("queue", POLLS_QUEUE),))] == 2
    assert found[("plaud_queue_consumers", (("queue", "celery"),))] == 0


def test_sleeping_polls_are_counted_and_a_missed_wake_shows_as_lateness(rt):
    found = scrape(rt)
    assert found[("plaud_polls_sleeping", ())] == 0 and found[("plaud_polls_sleeping_late_seconds", ())] == 0
    now = time.time()
    rt.sleeping_polls.sleep("on-time", now + 600)
    assert scrape(rt)[("plaud_polls_sleeping_late_seconds", ())] == 0  # waking in the future: not late
    rt.sleeping_polls.sleep("missed", now - 90)  # no dispatcher woke it
    found = scrape(rt)
    assert found[("plaud_polls_sleeping", ())] == 2
    assert 90 <= found[("plaud_polls_sleeping_late_seconds", ())] < 100


def test_the_budget_and_the_timing_estimate_are_read_as_they_are(rt):
    rt.client.budget.take("submit", "r1")
    found = scrape(rt)
    assert found[("plaud_budget_limit_requests", ())] == 60
    assert found[("plaud_budget_used_requests", ())] == 1
    assert found[("plaud_budget_window_seconds", ())] == 61
    assert found[("plaud_budget_waiting_requests", (("kind", "poll"),))] == 0
    assert found[("plaud_timing_expected_base_seconds", ())] == rt.timing.current().base_s
    assert found[("plaud_exporter_redis_up", ())] == 1


def test_a_scrape_without_redis_says_so_instead_of_failing(rt, redis_server):
    config = PlaudConfig.sandbox("http://127.0.0.1:9/developer/api")
    gone = Runtime.build(PipelineSettings(redis_url="redis://127.0.0.1:1/0", redis_connect_timeout_s=0.2), config)
    assert scrape(gone) == {("plaud_exporter_redis_up", ()): 0}
