"""Every worker wakes the recordings that wait as data: a dispatcher thread in its main process.

A worker bootstep starts a daemon thread that runs ``tasks.dispatch.dispatch_once`` until the
worker stops, sleeping until the next budget slot frees or ``PLAUD_DISPATCH_TICK_S``, whichever is
sooner. Every worker runs one, so the fleet needs no beat, no leader and no extra process for it:
the scripts behind it hand each slot out once however many dispatchers ask. A dispatcher that
dies with its worker loses nothing but a grant or two, which expire and are woken again by the
next dispatcher's pass.

The thread builds its own runtime (Redis connections, client) rather than the process's, so the
pool's children, forked from this process, never inherit one in use.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import bootsteps

log = logging.getLogger("plaud.dispatch")

ERROR_PAUSE_S = 2.0  # after a failed pass (Redis away): try again soon, without spinning
ALIVE_EVERY_S = 5.0  # how often the worker says which queues it consumes (tasks.workers_alive)


class DispatcherThread(threading.Thread):
    def __init__(self, worker_name: str = "", queues: tuple[str, ...] = ()) -> None:
        super().__init__(name="plaud-dispatcher", daemon=True)
        self.stopping = threading.Event()
        self.worker_name = worker_name
        self.queues = queues

    def run(self) -> None:
        from tasks.dispatch import dispatch_once
        from tasks.runtime import Runtime
        from tasks.workers_alive import announce_alive

        rt = Runtime.from_env()
        log.info("dispatcher started: wakes recordings waiting for budget or an upload slot")
        announced_at = 0.0
        while not self.stopping.is_set():
            try:
                if self.worker_name and time.monotonic() - announced_at >= ALIVE_EVERY_S:
                    announce_alive(rt.redis, self.worker_name, self.queues)  # the exporter's view of who consumes
                    announced_at = time.monotonic()
                sleep_s = dispatch_once(rt).sleep_s
            except Exception:
                log.exception("dispatcher pass failed; trying again in %.0f s", ERROR_PAUSE_S)
                sleep_s = ERROR_PAUSE_S
            self.stopping.wait(sleep_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stopping.set()
        self.join(timeout=timeout_s)


class Dispatcher(bootsteps.StartStopStep):
    """The worker's dispatcher thread, started once the pool runs and stopped before it."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: DispatcherThread | None = None

    def start(self, worker: Any) -> None:
        self.thread = DispatcherThread(worker.hostname, tuple(worker.app.amqp.queues.consume_from or ()))
        self.thread.start()

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None
