"""What the fleet counts for Prometheus: written to Redis by whichever worker process sees it.

Workers of any pool, on any number of hosts, record here; ``plaud-workers metrics``
(``workers/metrics_exporter.py``) reads Redis on each scrape and serves ``/metrics``, so no worker
needs a port and nothing is lost when a worker process ends. A counter is a Redis hash of label
values -> count; a histogram a hash of per-bucket counts (not cumulative: the exporter sums them),
its sum and its count. The recordings by state, and the oldest in each, are kept by the record
store's own scripts in the same step as each transition (``tasks/records.py``), and so are the
histograms' observations, with the move that ends the stage that measured them; the budget, the
queues and the timing model are read as they are at scrape time.

Labels stay bounded: stages, failure kinds, outcomes, states and tenants; never a recording id.
Counting never fails the work it describes: a Redis error here is logged and dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from plaud.keys import text

from .names import COUNTER_PREFIX, HISTOGRAM_PREFIX

log = logging.getLogger("plaud.metrics")

LABEL_SEPARATOR = "|"  # between label values in a counter's field: no label value contains it


@dataclass(frozen=True)
class CounterMetric:
    name: str  # as exported, without the ``_total`` that Prometheus's client adds
    help: str
    labels: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return COUNTER_PREFIX + self.name


@dataclass(frozen=True)
class HistogramMetric:
    name: str
    help: str
    buckets: tuple[float, ...]  # upper bounds, ascending; +Inf is implied

    @property
    def key(self) -> str:
        return HISTOGRAM_PREFIX + self.name

    def bucket_of(self, value: float) -> str:
        """The field of the first bucket holding ``value``."""
        return next((repr(float(bound)) for bound in self.buckets if value <= bound), "+Inf")


FAILURES = CounterMetric("plaud_failures", "Recordings that failed, by the stage they failed at and the kind "
                                           "of failure.", ("stage", "kind"))
REDRIVES = CounterMetric("plaud_reconciler_redrives", "Recordings the reconciler re-drove after their next step "
                                                      "was lost, by the stage it restarted them at.", ("stage",))
WEBHOOK_ATTEMPTS = CounterMetric("plaud_webhook_deliveries", "Webhook delivery attempts by outcome: delivered "
                                                             "(2xx), failed (retried), refused (a URL that must "
                                                             "not be called), given_up (no more retries).",
                                 ("outcome",))
RATE_LIMITED = CounterMetric("plaud_api_rate_limited", "Requests Plaud answered with 429, by stage: the fleet's "
                                                       "budget is set above what Plaud allows.", ("stage",))
GIVEN_UP = "given_up"  # the webhook outcome counted once a delivery is abandoned

RECORDING_SECONDS = HistogramMetric(
    "plaud_recording_duration_seconds", "From enqueue to transcript, for recordings that succeeded.",
    (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400))
DETECTION_SECONDS = HistogramMetric(
    "plaud_detection_delay_seconds", "At most this long between Plaud finishing a job and a poll seeing it: from "
                                     "the last poll that found it unfinished (or the submit) to the one that found "
                                     "it done.", (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800))
POLLS_PER_RECORDING = HistogramMetric(
    "plaud_polls_per_recording", "Transcription API polls each succeeded recording needed.",
    (1, 2, 3, 4, 6, 10, 20, 50))
UPLOAD_THROUGHPUT = HistogramMetric(
    "plaud_upload_throughput_bytes_per_second", "Each finished upload's bytes over its seconds.",
    (64e3, 256e3, 1e6, 4e6, 16e6, 64e6, 256e6))

COUNTERS = (FAILURES, REDRIVES, WEBHOOK_ATTEMPTS, RATE_LIMITED)
HISTOGRAMS = (RECORDING_SECONDS, DETECTION_SECONDS, POLLS_PER_RECORDING, UPLOAD_THROUGHPUT)


def count(connection: Any, metric: CounterMetric, *label_values: str, n: int = 1) -> None:
    if len(label_values) != len(metric.labels):
        raise ValueError(f"{metric.name} takes labels {metric.labels}, got {label_values}")
    try:
        connection.hincrby(metric.key, LABEL_SEPARATOR.join(label_values), n)
    except redis.RedisError as exc:
        log.warning("metric %s not counted: %s", metric.name, exc)


# One observation of a histogram: its bucket, sum and count move together. The record store's
# transition script runs it for what a stage measured, in the same step as the move that ends the
# stage (``RecordStore.transition(observe=...)``): a stage's last write, not a round trip of its own.
# ``pcall``: an observation that cannot be recorded (a value that is not a number) is dropped, and
# never fails the move it goes with.
OBSERVE_LUA = """
local function observe(key, bucket, value)
  redis.pcall('HINCRBY', key, bucket, 1)
  redis.pcall('HINCRBYFLOAT', key, 'sum', value)
  redis.pcall('HINCRBY', key, 'count', 1)
end
"""

Observations = Sequence[tuple[HistogramMetric, float]]


def observation_arguments(observations: Observations) -> tuple[list[str], list[str | float]]:
    """The histograms' keys, and a (bucket field, value) pair for each: what ``OBSERVE_LUA`` takes."""
    keys: list[str] = []
    args: list[str | float] = []
    for metric, value in observations:
        keys.append(metric.key)
        args += [metric.bucket_of(value), value]
    return keys, args


def read_counter(connection: Any, metric: CounterMetric) -> dict[tuple[str, ...], float]:
    """Label values -> count."""
    raw = connection.hgetall(metric.key)
    found = {}
    for field, value in raw.items():
        labels = tuple(text(field).split(LABEL_SEPARATOR)) if metric.labels else ()
        found[labels] = float(value)
    return found


@dataclass(frozen=True)
class HistogramReading:
    buckets: list[tuple[str, float]]  # (upper bound as exported, cumulative count), ending with +Inf
    sum: float
    count: float


def read_histogram(connection: Any, metric: HistogramMetric) -> HistogramReading:
    raw = {text(k): float(v) for k, v in connection.hgetall(metric.key).items()}
    cumulative, running = [], 0.0
    for bound in [repr(float(b)) for b in metric.buckets] + ["+Inf"]:
        running += raw.get(bound, 0.0)
        cumulative.append((bound, running))
    return HistogramReading(cumulative, raw.get("sum", 0.0), raw.get("count", 0.0))
