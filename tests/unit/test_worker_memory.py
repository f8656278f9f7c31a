"""The timer compaction on kombu's own Timer: cancelled entries go, live ones stay and still fire in order.
And glibc's malloc arenas: capped for a worker's threads, unless glibc's own variable says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

from kombu.asynchronous.timer import Timer

from workers.memory import drop_cancelled_entries


def test_cancelled_time_limits_leave_the_heap_and_the_live_ones_still_fire_in_order():
    timer = Timer()
    fired = []
    entries = [timer.call_after(100 + i, fired.append, (i,)) for i in range(50)]
    for entry in entries[::2]:
        timer.cancel(entry)  # what the pool does when a job ends before its time limit
    assert len(timer.queue) == 50  # kombu keeps them until they are due
    assert drop_cancelled_entries(timer) == 25 and len(timer.queue) == 25
    assert drop_cancelled_entries(timer) == 0
    heap = timer._queue  # still a heap: the loop pops the earliest first
    assert all(heap[i][0] <= heap[c][0] for i in range(len(heap)) for c in (2 * i + 1, 2 * i + 2) if c < len(heap))
    for entry in sorted(timer.queue, key=lambda e: e[0]):
        entry[2]()
    assert fired == list(range(1, 50, 2))


def test_a_timer_without_the_heap_it_expects_is_left_alone():
    class Other:
        pass

    assert drop_cancelled_entries(Other()) == 0


ARENAS_PROBE = """
import ctypes, os, re, sys, tempfile, threading
from workers.memory import limit_malloc_arenas
capped = limit_malloc_arenas() if sys.argv[1] == "cap" else False
gate = threading.Barrier(9)
def allocate():
    kept = bytearray(64 * 1024)  # below glibc's mmap threshold: from this thread's arena
    gate.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
gate.wait()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
path = tempfile.mktemp()
stream = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(stream))
libc.fclose(ctypes.c_void_p(stream))
print(capped, len(re.findall('<heap nr=', open(path).read())))
os.unlink(path)
"""


def arenas_after_eight_threads(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", ARENAS_PROBE, mode], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None})
    assert done.returncode == 0, done.stderr
    capped, heaps = done.stdout.split()
    return capped, int(heaps)


def test_threads_share_two_malloc_arenas_unless_glibc_is_told_otherwise():
    assert arenas_after_eight_threads("leave", {"MALLOC_ARENA_MAX": None}) == ("False", 9)  # one a thread
    assert arenas_after_eight_threads("cap", {"MALLOC_ARENA_MAX": None}) == ("True", 2)
    # An operator's MALLOC_ARENA_MAX decides (glibc reads it at start); the cap stays out of its way.
    assert arenas_after_eight_threads("cap", {"MALLOC_ARENA_MAX": "4"}) == ("False", 4)
