"""Memory of processes, from /proc: what the benchmarks report."""

from __future__ import annotations

import subprocess


def status_kib(pid: int | str = "self", field: str = "VmRSS") -> int:
    """A ``/proc/<pid>/status`` figure in KiB: VmRSS (now) or VmHWM (peak)."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and its children (a Celery worker and its pool), summed."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    total = 0
    for p in [pid, *map(int, children)]:
        try:
            total += status_kib(p)
        except (FileNotFoundError, StopIteration):  # a child that just exited
            pass
    return total
