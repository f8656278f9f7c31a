"""Memory of processes, from /proc: what the benchmarks report."""

from __future__ import annotations

import os
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


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def cpu_s(pid: int | str = "self") -> float:
    """User plus system CPU seconds a process has used, from ``/proc/<pid>/stat``; 0 once it has gone."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pool_cpu_s(pid: int) -> float:
    """CPU seconds of a process's children: the live ones, and those that ended and were reaped
    (a pool child replaced after its memory limit), whose CPU the kernel adds to the parent's."""
    fields = _stat_fields(pid)
    reaped = 0.0 if fields is None else (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return reaped + sum(cpu_s(p) for p in children(pid))
