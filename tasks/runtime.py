"""Per-process resources, built on first use: never at import time, never before a fork."""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass

import redis

from plaud.client import PlaudClient
from plaud.config import PlaudConfig

from .records import RecordStore
from .schedule import PollSchedule
from .settings import PipelineSettings
from .timing import TimingModel

# Where plaud.transcribe waits: the default queue of a bare Celery client, and the API queue
# the app routes it to. The API queue holds submits and delivers too; counting them as new
# recordings only makes early probes rarer while the fleet is busy.
ENTRY_QUEUES = ("celery", "plaud.api")


@dataclass
class Runtime:
    settings: PipelineSettings
    config: PlaudConfig
    redis: redis.Redis
    client: PlaudClient
    store: RecordStore
    schedule: PollSchedule
    timing: TimingModel

    def budget_slack(self) -> float:
        """The share of the fleet's Transcription API budget nobody needs this period (1.0: no limit)."""
        load = self.client.budget_load()
        if load is None:
            return 1.0
        # Recordings still in the broker, not yet entered, will each submit and poll too.
        return dataclasses.replace(load, planned=load.planned + 2 * self.entries_waiting()).slack

    def entries_waiting(self) -> int:
        """Messages in the queues where entry tasks wait (0 when the broker is another Redis)."""
        if self.settings.broker != self.settings.redis_url:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for queue in ENTRY_QUEUES:
            pipe.llen(queue)
        return sum(pipe.execute())

    # The budget's plan: the Transcription API requests each live recording will still make, so
    # that early probes only use budget no recording on its way will need.

    def plan_recording(self, recording_id: str) -> None:
        """A new recording will submit, then poll, as soon as it can."""
        if self.client.limiter is not None:
            now = time.time()
            self.client.limiter.plan(f"submit:{recording_id}", now)
            self.client.limiter.plan(f"poll:{recording_id}", now)

    def plan_poll(self, recording_id: str, at_s: float) -> None:
        """The recording's next poll is at ``at_s``; its submit is done."""
        if self.client.limiter is not None:
            self.client.limiter.plan(f"poll:{recording_id}", at_s, instead_of=(f"submit:{recording_id}",))

    def plan_nothing_more(self, recording_id: str) -> None:
        """The recording is done with Plaud's Transcription API (finished or failed)."""
        if self.client.limiter is not None:
            self.client.limiter.unplan(f"submit:{recording_id}", f"poll:{recording_id}")


@functools.lru_cache(maxsize=1)
def runtime() -> Runtime:
    settings = PipelineSettings.from_env()
    config = PlaudConfig.from_env()
    connection = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=settings.redis_connect_timeout_s,
                                      socket_timeout=settings.redis_socket_timeout_s, health_check_interval=30)
    client = PlaudClient(config, redis=connection)
    store = RecordStore(connection, client.sealer, ttl_s=settings.result_ttl_s)
    return Runtime(settings, config, connection, client, store,
                   PollSchedule(min_interval_s=settings.poll_min_interval_s,
                                max_interval_s=settings.poll_max_interval_s,
                                fixed_interval_s=settings.poll_fixed_interval_s),
                   TimingModel(connection, prior_base_s=settings.expected_base_s, prior_rtf=settings.expected_rtf))


def reset_runtime() -> None:
    """Forget the cached resources (after a settings change in tests)."""
    runtime.cache_clear()
