"""Pipeline settings from the environment; a bad value names its variable.

The numbers that must agree with each other are checked here, once: every countdown stays well
below the broker's visibility timeout, and so does the longest stage, or Redis would deliver
the same task again while it is still running or waiting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from plaud.config import read_secret
from plaud.errors import ConfigError

from .redis_urls import is_sentinel_url, parse_sentinel_url

DAY_S = 86400
# A hold horizon below this would have every dispatcher look for sleeping polls many times a second.
MIN_HOLD_HORIZON_S = 1.0
# Replaced by PLAUD_POLL_HOLD_HORIZON_S; refused rather than ignored, so no one believes it still acts.
RETIRED_COUNTDOWN_CAP = "PLAUD_POLL_COUNTDOWN_CAP_S"


@dataclass(frozen=True)
class PipelineSettings:
    redis_url: str = "redis://localhost:6379/0"
    broker_url: str = ""
    result_backend: str = ""
    result_ttl_s: int = 7 * DAY_S
    # Every Redis call gives up after this, so a Redis that stops answering (a partition, a frozen
    # host) surfaces as an error to retry, never a hang. Above the broker's 1-s blocking read.
    redis_socket_timeout_s: float = 5.0
    redis_connect_timeout_s: float = 5.0
    # How long a submit Plaud accepted keeps trying to save the transcription id while Redis fails
    # over (a lost id means a second, billed submit). Above the Sentinels' down-after plus failover.
    redis_failover_wait_s: float = 60.0
    visibility_timeout_s: int = 4 * 3600
    upload_time_limit_s: int = 3600
    api_time_limit_s: int = 300
    stage_attempts: int = 8
    poll_error_attempts: int = 20
    poll_deadline_s: int = 6 * 3600
    # The longest countdown of a poll: one with longer to wait sleeps as data in Redis instead, not
    # as a task a worker holds (tasks.sleeping_polls), so workers hold only the next horizon's polls.
    poll_hold_horizon_s: float = 20.0
    poll_max_interval_s: float = 120.0
    poll_min_interval_s: float = 2.0
    # The prior of the processing-time model the fleet learns (tasks.timing).
    expected_base_s: float = 5.0
    expected_rtf: float = 0.1
    poll_fixed_interval_s: float = 0.0  # > 0 polls on a fixed clock instead: for comparisons only
    download_url_ttl_s: int = 23 * 3600  # Plaud says ~24 h; keep an hour in hand
    # With a fleet budget, a recording is uploaded at most this long before its expected submit
    # (just in time: a deep backlog waits before its upload, and no DownloadUrl expires in line).
    upload_lead_s: int = 22 * 3600
    # How often each worker's dispatcher looks for free budget when nothing tells it sooner.
    dispatch_tick_s: float = 0.5
    reconcile_every_s: int = 60
    reconcile_grace_s: int = 300
    # A stage's hold on its recording; renewed at every upload checkpoint. When a worker dies the
    # hold lapses this long after, and the reconciler may take over.
    lease_ttl_s: int = 300
    # Pool children are replaced after a task that leaves them above this (Celery's
    # worker_max_memory_per_child, which reads RSS); with their inherited objects frozen, four
    # children held about 73 MiB PSS each after 20,000 tasks (BENCHMARKS.md, backlog memory).
    worker_max_memory_mib: int = 512
    # With a sentinel:// REDIS_URL (or broker or backend URL): the name of the master the Sentinels
    # watch (tasks.redis_urls). The master's password is the URL's; the Sentinels' own is below.
    sentinel_master: str = ""
    webhook_max_age_s: int = 3600
    webhook_retry_base_s: float = 5.0
    webhook_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        self._check_sentinel_urls()
        if self.upload_lead_s >= self.download_url_ttl_s:
            raise ConfigError(f"PLAUD_UPLOAD_LEAD_S ({self.upload_lead_s}) must be below PLAUD_DOWNLOAD_URL_TTL_S "
                              f"({self.download_url_ttl_s}), or a DownloadUrl may expire before its submit")
        if self.redis_failover_wait_s >= self.upload_time_limit_s:
            raise ConfigError(f"PLAUD_REDIS_FAILOVER_WAIT_S ({self.redis_failover_wait_s:g}) must be below "
                              f"PLAUD_UPLOAD_TIME_LIMIT_S ({self.upload_time_limit_s}): a submit waits that long for "
                              f"Redis within its time limit")
        if self.poll_hold_horizon_s < MIN_HOLD_HORIZON_S:
            raise ConfigError(f"PLAUD_POLL_HOLD_HORIZON_S ({self.poll_hold_horizon_s:g}) must be at least "
                              f"{MIN_HOLD_HORIZON_S:g} s: every dispatcher looks for sleeping polls at half of it")
        longest_wait = max(self.poll_hold_horizon_s, self.upload_time_limit_s, self.api_time_limit_s)
        if self.visibility_timeout_s < 2 * longest_wait:
            raise ConfigError(f"PLAUD_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) must be at least twice the "
                              f"longest countdown or stage ({longest_wait:g} s), or Redis redelivers tasks still "
                              f"running or waiting")

    webhook_secret: str = field(default="", repr=False)
    webhook_allow_private: bool = False
    sentinel_password: str = field(default="", repr=False)  # the Sentinels' own, when they require one

    def _check_sentinel_urls(self) -> None:
        """A Sentinel list is parsed once here, so a bad one stops a worker at start, naming its variable."""
        for variable, url in (("REDIS_URL", self.redis_url), ("CELERY_BROKER_URL", self.broker_url),
                              ("CELERY_RESULT_BACKEND", self.result_backend)):
            if not is_sentinel_url(url):
                continue
            parse_sentinel_url(url, variable)
            if not self.sentinel_master:
                raise ConfigError(f"{variable} is a list of Sentinels: set PLAUD_SENTINEL_MASTER to the name of the "
                                  f"master they watch (the name in their 'sentinel monitor' line)")

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def backend(self) -> str:
        return self.result_backend or self.redis_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineSettings:
        env = os.environ if environ is None else environ
        if env.get(RETIRED_COUNTDOWN_CAP, "").strip():
            raise ConfigError(f"{RETIRED_COUNTDOWN_CAP} is retired: a poll waits at most PLAUD_POLL_HOLD_HORIZON_S "
                              f"as a countdown and longer as data in Redis; set that instead (or unset it)")
        values: dict[str, object] = {}
        for name, var in (("redis_url", "REDIS_URL"), ("broker_url", "CELERY_BROKER_URL"),
                          ("result_backend", "CELERY_RESULT_BACKEND")):
            if env.get(var, "").strip():
                values[name] = env[var].strip()
        values["webhook_secret"] = read_secret(env, "PLAUD_WEBHOOK_SECRET") or ""
        values["sentinel_password"] = read_secret(env, "PLAUD_SENTINEL_PASSWORD") or ""
        allow = env.get("PLAUD_WEBHOOK_ALLOW_PRIVATE", "").strip().lower()
        if allow not in ("", "0", "1", "true", "false", "yes", "no"):
            raise ConfigError(f"PLAUD_WEBHOOK_ALLOW_PRIVATE must be true or false, got {allow!r}")
        values["webhook_allow_private"] = allow in ("1", "true", "yes")
        for name, default in cls.__dataclass_fields__.items():
            if name in ("redis_url", "broker_url", "result_backend", "webhook_secret", "webhook_allow_private",
                        "sentinel_password"):
                continue
            var = f"PLAUD_{name.upper()}"
            text = env.get(var, "").strip()
            if not text:
                continue
            kind: Any = type(default.default)
            if kind is str:
                values[name] = text
                continue
            try:
                number = kind(text)
            except ValueError:
                raise ConfigError(f"{var} must be a {'whole ' if kind is int else ''}number, got {text!r}") from None
            if number < 0 or (number == 0 and name not in ("expected_rtf", "expected_base_s", "poll_fixed_interval_s")):
                raise ConfigError(f"{var} must be above 0, got {text!r}")
            values[name] = number
        return cls(**values)  # type: ignore[arg-type]
