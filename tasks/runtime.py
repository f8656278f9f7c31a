"""Per-process resources: built once per process on first use (never at import, never before a
fork), or handed in whole with ``install`` / ``using`` (a test builds one against its own Redis
and sandbox without touching the environment)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from plaud.budget import SUBMIT, Budget
from plaud.client import PlaudClient
from plaud.config import PlaudConfig

from .names import ENTRY_QUEUES, WAITING_FOR_UPLOAD
from .records import RecordStore
from .redis_connection import connect
from .schedule import PollSchedule
from .settings import PipelineSettings
from .sleeping_polls import SleepingPolls
from .task_results import TaskResults
from .timing import TimingModel
from .upload_slots import UploadSlots


@dataclass
class Runtime:
    settings: PipelineSettings
    config: PlaudConfig
    redis: redis.Redis
    client: PlaudClient
    store: RecordStore
    schedule: PollSchedule
    timing: TimingModel
    upload_slots: UploadSlots | None  # None: no fleet budget, so submits never fall behind uploads
    sleeping_polls: SleepingPolls
    task_results: TaskResults

    @classmethod
    def build(cls, settings: PipelineSettings, config: PlaudConfig) -> Runtime:
        """Connect to Redis (lazily: redis-py connects on the first command; a Sentinel list follows the
        master) and build the client."""
        connection = connect(settings)
        client = PlaudClient(config, redis=connection)
        upload_slots = None
        if isinstance(client.budget, Budget):
            # What the budget can submit within the upload lead, at the submits' share of it.
            per_s = client.budget.shares[SUBMIT] / client.budget.rate.period_s
            upload_slots = UploadSlots(connection, capacity=max(int(per_s * settings.upload_lead_s), 1),
                                       stale_after_s=settings.download_url_ttl_s)
        return cls(settings, config, connection, client,
                   RecordStore(connection, client.sealer, ttl_s=settings.result_ttl_s),
                   PollSchedule(min_interval_s=settings.poll_min_interval_s,
                                max_interval_s=settings.poll_max_interval_s,
                                fixed_interval_s=settings.poll_fixed_interval_s),
                   TimingModel(connection, prior_base_s=settings.expected_base_s, prior_rtf=settings.expected_rtf),
                   upload_slots, SleepingPolls(connection),
                   TaskResults(connection, in_records_redis=settings.backend == settings.redis_url))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Runtime:
        return cls.build(PipelineSettings.from_env(environ), PlaudConfig.from_env(environ))

    def budget_slack(self) -> float:
        """The share of the fleet's Transcription API budget nobody needs this period (1.0: no limit)."""
        load = self.client.budget_load()
        if load is None:
            return 1.0
        # Recordings still in the broker, not yet entered, will each submit and poll too. The API
        # queue holds submits and delivers as well: counting them only makes probes rarer when busy.
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
        if self.client.budget is not None:
            now = time.time()
            self.client.budget.plan(f"submit:{recording_id}", now)
            self.client.budget.plan(f"poll:{recording_id}", now)

    def plan_poll(self, recording_id: str, at_s: float) -> None:
        """The recording's next poll is at ``at_s``; its submit is done."""
        if self.client.budget is not None:
            self.client.budget.plan(f"poll:{recording_id}", at_s, instead_of=(f"submit:{recording_id}",))

    # Waiting as data: the lines a recording can stand in (tasks.dispatch wakes them).

    def in_line_for(self, recording_id: str) -> str | None:
        """What the recording waits for in line now (``upload``, ``submit``, ``poll``); None if in no line."""
        if self.upload_slots is not None and self.upload_slots.position(recording_id) is not None:
            return WAITING_FOR_UPLOAD
        if isinstance(self.client.budget, Budget):
            return self.client.budget.holds(recording_id)
        return None

    def leave_lines(self, recording_id: str) -> None:
        """Give up the recording's every place in line and its upload slot (it ended, or was cancelled)."""
        if isinstance(self.client.budget, Budget):
            self.client.budget.cancel(recording_id)
        if self.upload_slots is not None:
            self.upload_slots.done(recording_id)
        self.sleeping_polls.forget(recording_id)

    def plan_nothing_more(self, recording_id: str) -> None:
        """The recording is done with Plaud's Transcription API (finished or failed)."""
        if self.client.budget is not None:
            self.client.budget.unplan(f"submit:{recording_id}", f"poll:{recording_id}")


_installed: Runtime | None = None
_building = threading.Lock()  # a thread pool's first tasks must not build two


def runtime() -> Runtime:
    """This process's resources: the ones installed, else built from the environment on first use."""
    global _installed
    if _installed is None:
        with _building:
            if _installed is None:
                _installed = Runtime.from_env()
    return _installed


def install(rt: Runtime | None) -> None:
    """Use ``rt`` in this process from now on; ``None`` forgets it (the next use builds from the environment)."""
    global _installed
    _installed = rt


@contextmanager
def using(rt: Runtime) -> Iterator[Runtime]:
    """Use ``rt`` inside the block, then whatever was in use before."""
    previous = _installed
    install(rt)
    try:
        yield rt
    finally:
        install(previous)


def reset_runtime() -> None:
    """Forget the resources built from the environment (after a settings change)."""
    install(None)
