"""Every name the pipeline shares with the outside world, defined once: queues, tasks, Redis keys.

Task and queue names are the wire contract (other services enqueue by name, operators route and
scale by queue); Redis keys are what the CLI, the reconciler, the chaos suite and the benchmarks
read. Import them from here; never spell them again.
"""

from __future__ import annotations

# plaud.transcribe's tenant when the caller names none, and its priorities, most urgent first:
# the budget's own, which orders its lines by them.
from plaud.budget import DEFAULT_PRIORITY as DEFAULT_PRIORITY
from plaud.budget import DEFAULT_TENANT as DEFAULT_TENANT
from plaud.budget import PRIORITIES as PRIORITIES

# The client's own keys, re-exported so that this module lists them all.
from plaud.keys import TOKEN_PREFIX as TOKEN_PREFIX
from plaud.keys import TX_BUDGET_PREFIX as TX_BUDGET_PREFIX
from plaud.keys import tx_budget_key as tx_budget_key

# -- queues ----------------------------------------------------------------------------------
ENTRY_QUEUE = "celery"  # the default queue of a bare Celery client: send_task() with no routing lands here
API_QUEUE = "plaud.api"  # short API calls: entry, submit, deliver, reconcile, webhooks
UPLOADS_QUEUE = "plaud.uploads"  # bandwidth-heavy
# Countdown polls, kept apart so they never sit in front of fresh work; and the submits and polls
# the budget has just granted a slot, so they never sit behind a backlog of new work.
POLLS_QUEUE = "plaud.polls"
CALLBACKS_QUEUE = "plaud.callbacks"  # the default for callback tasks: a queue these workers never consume
WORKER_QUEUES = (ENTRY_QUEUE, UPLOADS_QUEUE, API_QUEUE, POLLS_QUEUE)
# Where plaud.transcribe waits before it runs: a bare client's default queue and the one it is routed to.
ENTRY_QUEUES = (ENTRY_QUEUE, API_QUEUE)

# -- tasks -----------------------------------------------------------------------------------
TRANSCRIBE = "plaud.transcribe"  # the public entry point
FOLLOW = "plaud.follow"  # a second enqueue of a recording id follows the first
UPLOAD = "plaud.upload"
SUBMIT = "plaud.submit"
POLL = "plaud.poll"
DELIVER = "plaud.deliver"
RECONCILE = "plaud.reconcile"
WEBHOOK = "plaud.webhook"
CANCEL = "plaud.cancel"  # public: stop recordings (by id, or a tenant's)
RETRY = "plaud.retry"  # public: re-drive FAILED recordings (by id, or by filters)

ROUTES = {
    UPLOAD: UPLOADS_QUEUE,
    POLL: POLLS_QUEUE,
    FOLLOW: POLLS_QUEUE,
    TRANSCRIBE: API_QUEUE,
    SUBMIT: API_QUEUE,
    DELIVER: API_QUEUE,
    RECONCILE: API_QUEUE,
    WEBHOOK: API_QUEUE,
    CANCEL: API_QUEUE,
    RETRY: API_QUEUE,
}

# -- values of the contract ------------------------------------------------------------------
# What a recording waiting as data waits for (the record's ``waiting_for``): an upload slot, or
# the budget for its submit or poll (named as the budget names its kinds, plaud.budget).
WAITING_FOR_UPLOAD = "upload"

# -- Redis keys ------------------------------------------------------------------------------
RECORD_PREFIX = "plaud:rec:"  # + recording id: the recording's hash
DUE_INDEX = "plaud:recs:due"  # sorted set: when each live recording's next step is due (the reconciler's)
RECENT_INDEX = "plaud:recs:recent"  # sorted set: recordings by last change (listings)
TIMING_KEY = "plaud:timing"  # the learned processing-time model
UPLOADS_AHEAD = "plaud:uploads:ahead"  # sorted set: recordings uploaded (or uploading) and not yet submitted
UPLOADS_WAITING = "plaud:uploads:waiting"  # sorted set: recordings waiting for an upload slot, in order
SLEEPING_POLLS = "plaud:polls:sleeping"  # sorted set: recording id -> when its poll wakes (tasks.sleeping_polls)

# Metrics: workers write them (tasks/metrics.py), the exporter reads them (workers/metrics_exporter.py).
IN_STATE_PREFIX = "plaud:metrics:in:"  # + live state: sorted set, recording id -> when it entered that state
LIVE_BY_TENANT = "plaud:metrics:live"  # hash 'STATE|tenant' -> live recordings in that state
ENDED_BY_TENANT = "plaud:metrics:ended"  # hash 'STATE|tenant' -> recordings that ended so (a counter)
COUNTER_PREFIX = "plaud:metrics:count:"  # + metric name: hash 'label value|...' -> count
HISTOGRAM_PREFIX = "plaud:metrics:hist:"  # + metric name: hash bucket bound -> count, and 'sum', 'count'
WORKER_PREFIX = "plaud:workers:"  # + worker name: the queues it consumes (json), gone unless renewed
# kombu's Redis transport: every message a worker holds and has not acked (prefetched, or a countdown).
KOMBU_UNACKED = "unacked"
KOMBU_UNACKED_INDEX = "unacked_index"  # sorted set beside it: when each held message was delivered


def record_key(recording_id: str) -> str:
    return RECORD_PREFIX + recording_id


def lease_key(recording_id: str) -> str:
    """The hold one live run of a stage has on a recording."""
    return f"{record_key(recording_id)}:lease"

