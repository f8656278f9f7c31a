"""plaud-workers worker picks its pool from the queues it consumes, unless told."""

from __future__ import annotations

import pytest

from tasks.names import API_QUEUE as API
from tasks.names import ENTRY_QUEUE as ENTRY
from tasks.names import POLLS_QUEUE as POLLS
from tasks.names import UPLOADS_QUEUE as UPLOADS
from workers.pools import THREADS_CONCURRENCY, default_pool_args, parse_fleet

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


def test_a_fleet_spec_names_each_worker_and_must_cover_every_queue():
    fleet = parse_fleet("api:threads:16,uploads:prefork:2,polls:threads:8")
    assert [str(m) for m in fleet] == ["api:threads:16", "uploads:prefork:2", "polls:threads:8"]
    assert fleet[0].queues == (ENTRY, API) and fleet[2].concurrency == 8
    for bad, words in (("api:threads:16,uploads:prefork:2", "must consume every worker queue"),
                       ("all:threads", "is not role:pool:concurrency"), ("all:threads:many", "is not role"),
                       ("web:threads:4,all:prefork:2", "unknown role 'web'")):
        with pytest.raises(ValueError, match=words):
            parse_fleet(bad)
