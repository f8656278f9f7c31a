"""The one place a Redis connection is built from the settings, and Celery is told the same.

A plain ``redis://`` URL gives ``redis.Redis.from_url``. Celery's Sentinel list
(``sentinel://…;sentinel://…``, see ``tasks.redis_urls``) with ``PLAUD_SENTINEL_MASTER`` gives a
client from ``Sentinel.master_for``: before each new connection it asks the Sentinels where the
master is, and a connection to a master that went away or was demoted is dropped, so the next
command goes to the new master without a restart. Records, tokens, the budget (its Lua scripts
too), the timing model, upload slots, the reconciler and the command line all connect here; the
broker and the result backend get the same Sentinels and master through
``celery_transport_options``.

During a failover a command fails after the socket timeouts (``PLAUD_REDIS_*_TIMEOUT_S``) with
``redis.ConnectionError`` or ``redis.TimeoutError`` (``MasterNotFoundError`` while no Sentinel
names a live master), never a hang.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.sentinel import Sentinel

from .redis_urls import is_sentinel_url, parse_sentinel_url
from .settings import PipelineSettings

T = TypeVar("T")
log = logging.getLogger("plaud.redis")

# Between tries of a write that must survive a failover: short, as the new master can be ready
# within a second of the Sentinels' vote.
FAILOVER_RETRY_GAP_S = 0.5

# How often an idle pooled connection is PINGed before use: one that died quietly (a NAT, a
# failover) is replaced before a command is lost on it.
HEALTH_CHECK_INTERVAL_S = 30

# The buffer each connection reads replies into. redis-py allocates (and zero-fills) 64 KiB per
# connection; a warm thread-pool worker holds about 40 connections (its own pool, the result
# backend's, kombu's channels), so that was about 2 MiB of its memory held for replies of a few
# KiB: a record, a task message, a result. A larger reply takes more than one read.
READ_BUFFER_BYTES = 8 * 1024


def _socket_options(settings: PipelineSettings) -> dict[str, Any]:
    """How every connection talks, to a master or to a Sentinel: the timeouts and the read buffer."""
    return {"socket_timeout": settings.redis_socket_timeout_s,
            "socket_connect_timeout": settings.redis_connect_timeout_s, "socket_read_size": READ_BUFFER_BYTES}


def _connection_options(settings: PipelineSettings) -> dict[str, Any]:
    return {"health_check_interval": HEALTH_CHECK_INTERVAL_S, **_socket_options(settings)}


def sentinel_kwargs(settings: PipelineSettings) -> dict[str, Any]:
    """How to talk to the Sentinels themselves: the same socket options, and their own password if any.

    Always given explicitly: Celery's result backend would otherwise talk to them with no
    timeout at all (it passes an empty dict, which redis-py does not fill in).
    """
    kwargs = _socket_options(settings)
    if settings.sentinel_password:
        kwargs["password"] = settings.sentinel_password
    return kwargs


def connect(settings: PipelineSettings, url: str | None = None) -> redis.Redis:
    """A client for the Redis at ``url`` (default ``REDIS_URL``); connects on its first command."""
    url = url or settings.redis_url
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **_connection_options(settings))
    where = parse_sentinel_url(url)
    sentinel = Sentinel(list(where.sentinels), sentinel_kwargs=sentinel_kwargs(settings))
    return sentinel.master_for(settings.sentinel_master, db=where.db, username=where.username,
                               password=where.password, **_connection_options(settings))


def celery_transport_options(settings: PipelineSettings, url: str) -> dict[str, Any]:
    """What Kombu's Sentinel transport and Celery's Sentinel result backend need beyond the URL.

    ``master_name`` and ``sentinel_kwargs`` are the option names both read (kombu.transport.redis
    ``SentinelChannel``, celery.backends.redis ``SentinelBackend``); the master's password comes
    from the URL, as it does for ``connect``. Nothing for a plain ``redis://`` URL.
    """
    if not is_sentinel_url(url):
        return {}
    return {"master_name": settings.sentinel_master, "sentinel_kwargs": sentinel_kwargs(settings)}


def through_failover(action: Callable[[], T], *, wait_s: float, what: str) -> T:
    """``action()``, tried again while Redis does not answer, for up to ``wait_s``; then its error.

    For the few writes whose loss costs more than a retry of the stage: the transcription id of a
    submit Plaud has accepted (lost, the retried stage would submit, and Plaud bill, a second time).
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() + FAILOVER_RETRY_GAP_S > deadline:
                raise
            log.warning("%s: Redis unavailable (%s: %s); trying again", what, type(exc).__name__, exc)
            time.sleep(FAILOVER_RETRY_GAP_S)


@dataclass(frozen=True)
class ScriptCall:
    """One call of a registered Lua script, to run alone or to send in a pipeline with other commands.

    redis-py runs a script in a pipeline only after asking the server whether it has every script
    of that pipeline (``SCRIPT EXISTS``), a round trip of its own. ``queue`` sends the call by its
    SHA alone; ``settle`` runs it again, alone (which loads the script), if the server did not have
    it, as after a restart or a failover: then the call had not run.
    """

    script: Any  # redis.commands.core.Script
    keys: list[str]
    args: list[Any]

    def run(self, connection: Any) -> Any:
        return self.script(keys=self.keys, args=self.args, client=connection)

    def queue(self, pipe: Any) -> None:
        pipe.evalsha(self.script.sha, len(self.keys), *self.keys, *self.args)

    def settle(self, reply: Any, connection: Any) -> Any:
        """The call's reply from a pipeline run with ``raise_on_error=False``."""
        if isinstance(reply, redis.exceptions.NoScriptError):
            return self.run(connection)
        if isinstance(reply, Exception):
            raise reply
        return reply


def run_in_order(connection: Any, calls: list[ScriptCall]) -> list[Any]:
    """Several script calls in one round trip, each seeing what the ones before it wrote; their replies.

    A call the server could not run (it had lost the script) runs again alone, and so does every
    call after it, which must then be safe to run twice: each must see the earlier ones' writes.
    """
    pipe = connection.pipeline(transaction=False)
    for call in calls:
        call.queue(pipe)
    replies = pipe.execute(raise_on_error=False)
    again = False
    for i, (call, reply) in enumerate(zip(calls, replies, strict=True)):
        again = again or isinstance(reply, redis.exceptions.NoScriptError)
        replies[i] = call.run(connection) if again else call.settle(reply, connection)
    return replies
