"""Memory of processes, from /proc: what the benchmarks report."""

from __future__ import annotations

import subprocess


def status_kib(pid: int | str = "self", field: str = "VmRSS") -> int:
    """A ``/proc/<pid>/status`` figure in KiB: VmRSS (now) or VmHWM (peak)."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def children(pid: int) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and its children (a Celery worker and its pool), summed."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            total += status_kib(p)
        except (FileNotFoundError, StopIteration):  # a child that just exited
            pass
    return total


def pss_kib(pid: int | str = "self") -> int:
    """Proportional set size from ``/proc/<pid>/smaps_rollup``: shared pages split among their sharers."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))


def tree_pss_kib(pid: int) -> int:
    """PSS of a process and its children, summed: unlike RSS, pages a pool child shares with its
    parent count once in all, not once per process."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            total += pss_kib(p)
        except (FileNotFoundError, ProcessLookupError, StopIteration):  # a child that just exited
            pass
    return total
