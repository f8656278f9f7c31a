"""``plaud-workers metrics``: the pipeline's figures for Prometheus, read from Redis on each scrape.

Workers record counters and observations in Redis (``tasks/metrics.py``) whatever their pool and
wherever they run; this exporter holds no state of its own, so any number of them may run and one
restarting loses nothing. Each scrape reads: the recordings by state (live ones by tenant, with the
oldest in each state), the budget's window and lines, the upload slots, the counters and
histograms, every worker queue's messages waiting in its list *and* held by workers (kombu's
unacked hash: prefetched tasks and countdown polls, which the list length does not show), the
workers alive per queue, and the timing model's estimate. ``docs/operations.md`` lists them all.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from plaud.budget import Budget
from plaud.keys import text
from tasks import metrics
from tasks.names import ENDED_BY_TENANT, IN_STATE_PREFIX, KOMBU_UNACKED, LIVE_BY_TENANT, WORKER_QUEUES
from tasks.records import RecordingState
from tasks.runtime import Runtime
from tasks.workers_alive import consumers_by_queue

log = logging.getLogger("plaud.exporter")

DEFAULT_PORT = 9808
LIVE_STATES = tuple(state for state in RecordingState if not state.is_terminal)
PENDING_METRIC = "plaud_queue_pending_messages"  # what the KEDA Prometheus variant scales each role on
OTHER_QUEUE = "other"  # held messages of a queue no worker role consumes: one label value, not many


def split_label(field: bytes | str) -> tuple[str, str]:
    """'STATE|tenant' -> (state, tenant)."""
    state, _, tenant = text(field).partition(metrics.LABEL_SEPARATOR)
    return state, tenant


def held_by_queue(connection: Any) -> Counter[str]:
    """Messages workers hold unacked, by queue: kombu stores each as [message, exchange, routing key]."""
    held: Counter[str] = Counter()
    for _, raw in connection.hscan_iter(KOMBU_UNACKED, count=1000):
        try:
            _, exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        queue = routing_key or exchange
        held[queue if queue in WORKER_QUEUES else OTHER_QUEUE] += 1
    return held


class PipelineCollector(Collector):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("plaud_exporter_redis_up", "1 when the last scrape read Redis, 0 when it could not.")
        try:
            families = list(self._families())
        except redis.RedisError as exc:
            log.warning("scrape failed: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from families

    def _families(self) -> Iterator[Any]:
        connection = self.rt.redis
        now = time.time()
        yield from self._recordings(connection, now)
        yield from self._budget()
        yield from self._queues(connection)
        yield from self._sleeping_polls(now)
        for counter in metrics.COUNTERS:
            family = CounterMetricFamily(counter.name, counter.help, labels=list(counter.labels))
            for labels, value in sorted(metrics.read_counter(connection, counter).items()):
                family.add_metric(list(labels), value)
            yield family
        for histogram in metrics.HISTOGRAMS:
            reading = metrics.read_histogram(connection, histogram)
            observed = HistogramMetricFamily(histogram.name, histogram.help)
            observed.add_metric([], reading.buckets, reading.sum)
            yield observed
        estimate = self.rt.timing.current()
        base = GaugeMetricFamily("plaud_timing_expected_base_seconds",
                                 "The timing model's current estimate of a job's fixed processing time.")
        base.add_metric([], estimate.base_s)
        rtf = GaugeMetricFamily("plaud_timing_expected_rtf",
                                "The timing model's current estimate of processing seconds per second of audio.")
        rtf.add_metric([], estimate.rtf)
        yield base
        yield rtf

    def _recordings(self, connection: Any, now: float) -> Iterator[Any]:
        live = GaugeMetricFamily("plaud_recordings", "Live recordings (not yet ended) by state and tenant.",
                                 labels=["state", "tenant"])
        for field, value in sorted(connection.hgetall(LIVE_BY_TENANT).items()):
            if int(value) > 0:
                live.add_metric(list(split_label(field)), float(value))
        yield live
        ended = CounterMetricFamily("plaud_recordings_ended", "Recordings that ended, by final state and tenant.",
                                    labels=["state", "tenant"])
        for field, value in sorted(connection.hgetall(ENDED_BY_TENANT).items()):
            ended.add_metric(list(split_label(field)), float(value))
        yield ended
        pipe = connection.pipeline(transaction=False)
        for state in LIVE_STATES:
            pipe.zcard(IN_STATE_PREFIX + state.value)
            pipe.zrange(IN_STATE_PREFIX + state.value, 0, 0, withscores=True)
        answers = pipe.execute()
        oldest = GaugeMetricFamily("plaud_recordings_oldest_age_seconds",
                                   "How long the longest-waiting live recording of each state has been in it "
                                   "(0 when none is).", labels=["state"])
        backlog = 0
        for i, state in enumerate(LIVE_STATES):
            size, first = answers[2 * i], answers[2 * i + 1]
            backlog += int(size)
            oldest.add_metric([state.value], max(now - first[0][1], 0.0) if first else 0.0)
        yield oldest
        total = GaugeMetricFamily("plaud_backlog_recordings", "Recordings enqueued and not yet ended, all states.")
        total.add_metric([], float(backlog))
        yield total

    def _budget(self) -> Iterator[Any]:
        budget = self.rt.client.budget
        if not isinstance(budget, Budget):
            return  # no fleet budget set (PLAUD_TX_RATE_LIMIT): nothing to show
        load = budget.load()
        for name, help_text, value in (
                ("plaud_budget_limit_requests", "Transcription API requests allowed per window.", load.limit),
                ("plaud_budget_window_seconds", "The budget's window: the rate's period and the safety margin.",
                 budget.window_us / 1_000_000),
                ("plaud_budget_used_requests", "Requests sent (or granted) in the current window.", load.used),
                ("plaud_budget_granted_requests", "Slots granted to waiting recordings whose tasks have not sent "
                                                  "yet.", load.granted),
                ("plaud_budget_oldest_wait_seconds", "Since the oldest waiting request was first refused (0: none "
                                                     "waits).", load.oldest_wait_s)):
            gauge = GaugeMetricFamily(name, help_text)
            gauge.add_metric([], float(value))
            yield gauge
        waiting = GaugeMetricFamily("plaud_budget_waiting_requests", "Requests waiting for the budget, by kind.",
                                    labels=["kind"])
        waiting.add_metric(["submit"], float(load.submits_waiting))
        waiting.add_metric(["poll"], float(load.polls_waiting))
        yield waiting
        slots = self.rt.upload_slots
        if slots is not None:
            queue = slots.queue()
            uploads = GaugeMetricFamily("plaud_upload_slots", "Just-in-time uploads: recordings uploaded (or "
                                                              "uploading) and not yet submitted, those waiting for a "
                                                              "slot, and how many may be ahead.", labels=["state"])
            uploads.add_metric(["ahead"], float(queue.ahead))
            uploads.add_metric(["waiting"], float(queue.waiting))
            uploads.add_metric(["capacity"], float(queue.capacity))
            yield uploads

    def _sleeping_polls(self, now: float) -> Iterator[Any]:
        sleeping = self.rt.sleeping_polls
        count = GaugeMetricFamily("plaud_polls_sleeping", "Polls waiting as data in Redis for their next look "
                                                          "to come within the hold horizon (held by no worker).")
        count.add_metric([], float(sleeping.count()))
        yield count
        next_wake = sleeping.next_wake_s()
        late = GaugeMetricFamily("plaud_polls_sleeping_late_seconds",
                                 "How long past its wake time the soonest sleeping poll is still asleep: above a "
                                 "few seconds, no dispatcher is waking polls (no worker runs).")
        late.add_metric([], max(now - next_wake, 0.0) if next_wake is not None else 0.0)
        yield late

    def _queues(self, connection: Any) -> Iterator[Any]:
        pipe = connection.pipeline(transaction=False)
        for queue in WORKER_QUEUES:
            pipe.llen(queue)
        lengths = dict(zip(WORKER_QUEUES, pipe.execute(), strict=True))
        held = held_by_queue(connection)
        messages = GaugeMetricFamily("plaud_queue_messages", "Messages of each worker queue: waiting in its Redis "
                                                             "list, or held by workers (prefetched, countdowns).",
                                     labels=["queue", "where"])
        pending = GaugeMetricFamily(PENDING_METRIC, "Messages waiting plus held, per queue: the "
                                                                    "number to scale a role on.", labels=["queue"])
        for queue in WORKER_QUEUES:
            messages.add_metric([queue, "waiting"], float(lengths[queue]))
            messages.add_metric([queue, "held"], float(held.get(queue, 0)))
            pending.add_metric([queue], float(lengths[queue] + held.get(queue, 0)))
        if held.get(OTHER_QUEUE):
            messages.add_metric([OTHER_QUEUE, "held"], float(held[OTHER_QUEUE]))
        yield messages
        yield pending
        consumers = consumers_by_queue(connection)
        alive = GaugeMetricFamily("plaud_queue_consumers", "Live workers consuming each queue.", labels=["queue"])
        for queue in WORKER_QUEUES:
            alive.add_metric([queue], float(consumers.get(queue, 0)))
        yield alive


def registry_for(rt: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(rt))
    return registry


def serve(rt: Runtime, *, port: int, address: str = "0.0.0.0", stop: threading.Event | None = None,
          on_listening: Callable[[str], None] | None = None) -> None:
    """Serve ``/metrics`` until ``stop`` is set (or forever); ``on_listening`` gets its URL (port 0: a free one)."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=address, registry=registry_for(rt))
    url = f"http://{address}:{server.server_port}/metrics"
    log.info("serving metrics on %s", url)
    if on_listening is not None:
        on_listening(url)
    try:
        (stop or threading.Event()).wait()
    finally:
        server.shutdown()
        thread.join(timeout=5)
