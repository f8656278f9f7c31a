"""The Celery app: Redis broker and results, JSON only, stage queues, late acks, Flower events.

Queues (names in ``tasks.names``): ``plaud.uploads`` (bandwidth-heavy), ``plaud.api`` (entry,
submit, deliver, reconcile, webhooks: short API calls), ``plaud.polls`` (polls and follows:
countdown tasks — a worker reserves every delayed task it sees, so they get a queue of their own
and never sit in front of fresh work — and the requests the budget just granted a slot), and
``celery``, the default queue of any Celery client: a service that calls
``send_task("plaud.transcribe")`` with no routing lands there. Each role can be scaled on its
own: ``plaud-workers worker -Q plaud.uploads``. Every worker also runs a dispatcher thread
(``workers.dispatcher``) that wakes the recordings waiting as data.
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    beat_init,
    task_rejected,
    worker_init,
    worker_process_init,
)
from kombu import Queue

from plaud.config import PlaudConfig
from plaud.errors import ConfigError
from plaud.redact import install_log_redaction
from tasks import names
from tasks.errors import RejectedMessage
from tasks.redis_connection import celery_transport_options
from tasks.settings import PipelineSettings

from .broker_transport import transport_for
from .dispatcher import Dispatcher
from .memory import TimerCompaction, freeze_heap, limit_malloc_arenas
from .result_backend import BACKEND_OVERRIDES

ROUTES = {task: {"queue": queue} for task, queue in names.ROUTES.items()}
TASK_MODULES = ["tasks.transcribe", "tasks.upload", "tasks.submit", "tasks.poll", "tasks.deliver", "tasks.reconcile",
                "tasks.notify", "tasks.cancel"]


def make_app(settings: PipelineSettings | None = None) -> Celery:
    settings = settings or PipelineSettings.from_env()
    app = Celery("plaud-workers", broker=settings.broker, backend=settings.backend, include=TASK_MODULES)
    app.loader.override_backends = BACKEND_OVERRIDES  # Celery's Redis backends, small read buffers
    redis_timeouts = {"socket_timeout": settings.redis_socket_timeout_s,
                      "socket_connect_timeout": settings.redis_connect_timeout_s, "socket_keepalive": True}
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Above every countdown and every stage, or Redis hands the same task out twice.
        # A sentinel:// broker or backend also gets the master's name and how to reach the Sentinels.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s, **redis_timeouts,
                                  **celery_transport_options(settings, settings.broker)},
        result_backend_transport_options=celery_transport_options(settings, settings.backend),
        redis_socket_timeout=settings.redis_socket_timeout_s,
        redis_socket_connect_timeout=settings.redis_connect_timeout_s,
        redis_socket_keepalive=True,
        # A publish (an enqueue, a retry's countdown, the next stage) tries three times, then raises.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.5, "interval_step": 1.0, "interval_max": 2.0},
        broker_connection_retry_on_startup=True,
        broker_transport=transport_for(settings.broker),  # kombu's, one client per pool (workers/broker_transport.py)
        result_expires=settings.result_ttl_s,
        # One result backend for every thread of the process. Without it Celery builds one per thread,
        # each with its own client, connection pool and connections: about 140 KiB a thread. Redis
        # clients are thread-safe. A worker never waits on results (its pool sets Celery's
        # task_join_will_block, so it subscribes to none); a process that does, such as a service
        # enqueueing through workers.handle, shares Celery's result consumer, which serializes
        # its pub/sub use behind a lock (celery.backends.redis.ResultConsumer, Celery 5.7).
        result_backend_thread_safe=True,
        task_queues=[Queue(name) for name in names.WORKER_QUEUES],
        task_default_queue=names.API_QUEUE,
        task_routes=ROUTES,
        worker_prefetch_multiplier=1,
        worker_max_memory_per_child=settings.worker_max_memory_mib * 1024,  # KiB
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        task_annotations={names.UPLOAD: {"soft_time_limit": settings.upload_time_limit_s,
                                           "time_limit": settings.upload_time_limit_s + 60},
                          names.SUBMIT: {"soft_time_limit": settings.upload_time_limit_s,
                                           "time_limit": settings.upload_time_limit_s + 60}},
        task_soft_time_limit=settings.api_time_limit_s,
        task_time_limit=settings.api_time_limit_s + 30,
        beat_schedule={"plaud-reconcile": {"task": names.RECONCILE, "schedule": float(settings.reconcile_every_s)}},
    )
    app.steps["worker"].add(Dispatcher)  # wakes recordings that wait as data (workers/dispatcher.py)
    app.steps["worker"].add(TimerCompaction)  # finished tasks' time limits leave the timer (workers/memory.py)
    return app


@worker_init.connect
def check_configuration(**_: object) -> None:
    """Refuse to start a worker that could not reach Plaud: say which variable is wrong."""
    try:
        config = PlaudConfig.from_env()
        PipelineSettings.from_env()
    except ConfigError as exc:
        logging.getLogger("plaud.worker").critical("cannot start: %s", exc)
        raise SystemExit(f"plaud-workers: cannot start: {exc}") from None
    logging.getLogger("plaud.worker").info("worker talks to %s", config.describe())
    limit_malloc_arenas()  # before the pool's threads start (workers/memory.py)
    freeze_heap()  # before the pool forks: the children keep sharing these pages (workers/memory.py)


@task_rejected.connect
def fail_rejected_message(sender: Any = None, message: object = None, exc: Exception | None = None,
                          **_: object) -> None:
    """A message no worker can run (not JSON, malformed) is dropped; tell its caller why instead of silence."""
    headers = getattr(message, "headers", None) or {}
    task_id = headers.get("id") or (getattr(message, "properties", None) or {}).get("correlation_id")
    reason = (f"the message for {headers.get('task', 'an unknown task')} was dropped: "
              f"{exc or 'it is not a Celery task message'}; plaud-workers takes JSON task messages "
              f"(Celery message protocol 2), e.g. send_task('{names.TRANSCRIBE}', kwargs={{...}})")
    logging.getLogger("plaud.worker").error("rejected message %s: %s", task_id or "(no id)", reason)
    if task_id and sender is not None:
        sender.app.backend.mark_as_failure(task_id, RejectedMessage(reason))


@worker_process_init.connect
def freeze_inherited_objects(**_: object) -> None:
    """Keep a pool child off the pages it shares with the main process (workers/memory.py)."""
    gc.freeze()


@beat_init.connect
def beat_sends_no_task_events(sender: Any = None, **_: object) -> None:
    """Beat publishes only the reconciler's tick: no task-sent event for it, so Flower's task list keeps
    to the recordings (the tick's own task sends none either: tasks.reconcile)."""
    # Beat in a process of its own (`celery beat`, or a worker's -B child); never a worker's thread,
    # whose own sends must keep their events.
    if sender is not None and threading.current_thread() is threading.main_thread():
        sender.app.conf.task_send_sent_event = False


@after_setup_logger.connect
@after_setup_task_logger.connect
def redact_logs(logger: logging.Logger, **_: object) -> None:
    install_log_redaction(logger)


# The app of every process that imports this module (``celery -A workers``, the CLI, Python
# callers of workers.handle): importing *this* module is asking for it. Nothing else in the
# project imports it as a side effect (``workers/__init__`` resolves ``app`` on first access).
app = make_app()
