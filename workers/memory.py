"""What keeps a worker's memory flat: pages shared with the pool stay shared, the timer forgets,
and threads share their allocator.

Three causes, found with tracemalloc and per-mapping smaps diffs (BENCHMARKS.md, worker memory):

- **Garbage collections un-share pages.** A collection writes to the GC header of every object it
  walks. In the main process before it forks, that makes every page the pool children would share
  private to each of them; in a child, it copies back what it inherited. So the main process
  collects once and freezes what it holds at ``worker_init`` (before the pool forks), and each child
  freezes what it inherited at ``worker_process_init``: frozen objects are never walked again.
- **The event loop's timer keeps every finished task's time limit.** The prefork pool sets a soft
  time limit timer per job; when the job ends its entry is only marked cancelled
  (``kombu.asynchronous.timer.Timer.cancel``) and leaves the heap when its time comes, up to an
  hour later (uploads and submits): about 550 B per task handled within the limit, 20,000 entries
  after 20,000 tasks. ``TimerCompaction`` drops the cancelled entries every few seconds, on the loop
  itself, so no lock is needed. It reaches into kombu's heap (``Timer._queue``): a kombu without it
  is left alone, and a test checks the shape it relies on.
- **Each thread gets its own malloc arena.** glibc gives every thread that allocates an arena of
  its own (up to eight per core), which keeps what that thread freed for its next allocations.
  A worker's threads take turns under the GIL, so the extra arenas buy no parallelism and hold
  megabytes: a thread-pool worker's 16 threads each kept one. ``limit_malloc_arenas`` caps them at
  ``MALLOC_ARENAS`` at ``worker_init``, before the pool's threads start; glibc's own
  ``MALLOC_ARENA_MAX``, when set, is left to decide.
"""

from __future__ import annotations

import ctypes
import gc
import heapq
import logging
import os
import platform
from typing import Any

from celery import bootsteps

log = logging.getLogger("plaud.worker")

COMPACT_EVERY_S = 10.0
MALLOC_ARENAS = 2  # the main arena and one that the threads share
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def freeze_heap() -> None:
    """Collect once, then keep every object alive now out of all later collections."""
    gc.collect()
    gc.freeze()


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process; True if capped.

    Call it before other threads allocate: glibc fixes its limit when the first thread beyond the
    main one needs an arena. Nothing is changed off glibc, or when ``MALLOC_ARENA_MAX`` is set.
    """
    if os.environ.get("MALLOC_ARENA_MAX") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def drop_cancelled_entries(timer: Any) -> int:
    """Remove the cancelled entries from a kombu Timer's heap; returns how many went."""
    queue = getattr(timer, "_queue", None)
    if not isinstance(queue, list):
        return 0
    live = [item for item in queue if not getattr(item[2], "canceled", False)]
    dropped = len(queue) - len(live)
    if dropped:
        queue[:] = live
        heapq.heapify(queue)
    return dropped


class TimerCompaction(bootsteps.StartStopStep):
    """Every ``COMPACT_EVERY_S``, the event loop's timer forgets the time limits of finished tasks."""

    requires = ("celery.worker.components:Hub",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.entry: Any = None

    def start(self, worker: Any) -> None:
        hub = getattr(worker, "hub", None)
        if hub is None:  # a pool without the event loop (threads, solo): no per-task timers there
            return
        self.entry = hub.call_repeatedly(COMPACT_EVERY_S, drop_cancelled_entries, hub.timer)

    def stop(self, worker: Any) -> None:
        if self.entry is not None:
            self.entry.cancel()
            self.entry = None
