"""plaud-workers worker picks its pool from the queues it consumes, unless told."""

from __future__ import annotations

import pytest

from workers.pools import THREADS_CONCURRENCY, default_pool_args

THREADS = ["--pool", "threads", "--concurrency", str(THREADS_CONCURRENCY)]


@pytest.mark.parametrize(("args", "added"), [
    ([], ["--pool", "prefork"]),  # every queue, uploads included
    (["-Q", "plaud.uploads"], ["--pool", "prefork"]),
    (["-Q", "celery,plaud.api,plaud.uploads"], ["--pool", "prefork"]),
    (["-Q", "celery,plaud.api"], THREADS),
    (["--queues=plaud.polls"], THREADS),
    (["-Qplaud.polls"], THREADS),
    (["-Q", "plaud.polls", "-c", "50"], ["--pool", "threads"]),
    (["-Q", "plaud.polls", "--concurrency=8"], ["--pool", "threads"]),
    (["-Q", "plaud.polls", "-P", "prefork"], []),  # told: left alone
    (["--pool=gevent"], []),
    (["-Pthreads"], []),
])
def test_the_default_pool_follows_the_queues(args, added):
    assert default_pool_args(args) == added
