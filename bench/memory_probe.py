"""Loaded into a benchmark's worker (``-I bench.memory_probe``) to see where its memory goes.

On SIGUSR2 the worker writes, to ``PLAUD_BENCH_SNAPSHOT_DIR``, a tracemalloc snapshot (when it
runs with ``PYTHONTRACEMALLOC``), a census of the objects the garbage collector tracks, by type,
and its PSS before and after glibc's ``malloc_trim(0)`` (memory freed but kept by the allocator
shows as the difference): what a benchmark diffs between idle and loaded. Never part of a real
worker.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import signal
import sys
import threading
import tracemalloc
from typing import Any

from bench.proc import pss_kib

SNAPSHOT_DIR = os.environ.get("PLAUD_BENCH_SNAPSHOT_DIR", "")
_taken = [0]


def _trimmed() -> tuple[int, int]:
    """PSS (KiB) before and after handing the allocator's free memory back to the system."""
    before = pss_kib()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return before, pss_kib()


def _write_snapshot() -> None:
    _taken[0] += 1
    base = os.path.join(SNAPSHOT_DIR, f"{os.getpid()}-{_taken[0]}")
    pss_before_trim, pss_after_trim = _trimmed()
    sys._debugmallocstats()  # pymalloc's arenas, pools and free blocks, to the worker's stderr (its log)
    census = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    threads = threading.active_count()
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(base + ".snapshot")
    with open(base + ".json.tmp", "w") as handle:
        json.dump({"types": dict(census.most_common(200)), "threads": threads,
                   "pss_kib": pss_before_trim, "pss_after_trim_kib": pss_after_trim,
                   "traced_bytes": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None}, handle)
    os.rename(base + ".json.tmp", base + ".json")  # the benchmark waits for this name: written last


def _on_signal(signum: int, frame: Any) -> None:
    # Not in the signal handler itself: the snapshot allocates, and the handler may interrupt anything.
    threading.Thread(target=_write_snapshot, daemon=True).start()


if SNAPSHOT_DIR:
    signal.signal(signal.SIGUSR2, _on_signal)
