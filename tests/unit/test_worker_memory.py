"""The timer compaction on kombu's own Timer: cancelled entries go, live ones stay and still fire in order."""

from __future__ import annotations

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
