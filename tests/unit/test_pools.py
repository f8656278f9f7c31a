"""plaud-workers worker picks its pool from the queues it consumes, unless told."""

from __future__ import annotations

import pytest

from tasks.names import API_QUEUE as API
from tasks.names import ENTRY_QUEUE as ENTRY
from tasks.names import POLLS_QUEUE as POLLS
from tasks.names import UPLOADS_QUEUE as UPLOADS
from workers.pools import THREADS_CONCURRENCY, default_pool_args

THREADS = ["--pool", "threads", "--concurrency", str(THREADS_CONCURRENCY)]


@pytest.mark.parametrize(("args", "added"), [
    ([], ["--pool", "prefork"]),  # every queue, uploads included
    (["-Q", UPLOADS], ["--pool", "prefork"]),
    (["-Q", f"{ENTRY},{API},{UPLOADS}"], ["--pool", "prefork"]),
    (["-Q", f"{ENTRY},{API}"], THREADS),
    ([f"--queues={POLLS}"], THREADS),
    ([f"-Q{POLLS}"], THREADS),
    (["-Q", POLLS, "-c", "50"], ["--pool", "threads"]),
    (["-Q", POLLS, "--concurrency=8"], ["--pool", "threads"]),
    (["-Q", POLLS, "-P", "prefork"], []),  # told: left alone
    (["--pool=gevent"], []),
    (["-Pthreads"], []),
])
def test_the_default_pool_follows_the_queues(args, added):
    assert default_pool_args(args) == added
