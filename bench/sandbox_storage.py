"""Where a benchmark's sandbox keeps its uploads: on this host's disk, or in memory.

The sandbox stands in for Plaud, whose storage is not on the workers' hosts. Left to itself it
writes every part to a temp dir on this host's disk, where each upload's directory, part file,
rename and removal are metadata the filesystem journals, on the cores the workers are measured
on. On the development machine (a VM whose disk other machines share) that cost a third of the
sandbox's CPU per recording while the disk was busy, and a tenth or less when it was quiet
(``bench.sandbox_cpu --sandbox-storage disk`` against ``memory``). ``memory`` keeps the uploads
in a temp dir on ``/dev/shm`` (tmpfs) instead: the benchmark no longer depends on the disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

KINDS = ("memory", "disk")
MEMORY_ROOT = "/dev/shm"
MEMORY_FREE_MIN_BYTES = 128 << 20  # 600 five-second recordings keep about 5 MiB


@contextlib.contextmanager
def sandbox_storage(kind: str) -> Iterator[tuple[str, ...]]:
    """The sandbox's flags for ``kind`` of storage (``memory`` or ``disk``); a memory dir is removed
    when the block ends."""
    if kind == "disk":
        yield ()  # the sandbox's own default: a temp dir it removes on exit
        return
    if not os.path.isdir(MEMORY_ROOT) or shutil.disk_usage(MEMORY_ROOT).free < MEMORY_FREE_MIN_BYTES:
        # A container's /dev/shm is 64 MiB unless told otherwise: a run would fail its uploads midway.
        raise SystemExit(f"{MEMORY_ROOT} is missing or has less than {MEMORY_FREE_MIN_BYTES >> 20} MiB free "
                         f"for the sandbox's uploads: use --sandbox-storage disk")
    directory = tempfile.mkdtemp(prefix="bench-sandbox-", dir=MEMORY_ROOT)
    try:
        yield ("--data-dir", directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
