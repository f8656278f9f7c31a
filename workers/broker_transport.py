"""Kombu's Redis transports with one redis-py client per connection pool, not one per call, and
connections that read replies into a small buffer.

Kombu's Redis channel builds a new ``redis.Redis`` for every publish, task event, ack and
restore (``Channel.conn_or_acquire`` → ``_create_client``): about 4.6 per task here. redis-py 8
fills a response-callback table of about 170 entries and registers event listeners for each one,
which made client construction about a tenth of a worker's CPU per task under the profiler
(BENCHMARKS.md, "Pipeline: throughput"). A ``redis.Redis`` only borrows a connection from its
pool for each command and may be shared between threads, so one per pool does the same work.
Only the synchronous client is kept; the asynchronous one (the consumer's BRPOP) stays kombu's.
Every connection of a channel, the consumer's too, reads into ``READ_BUFFER_BYTES`` instead of
redis-py's 64 KiB (``tasks.redis_connection``).

The app names them as its ``broker_transport`` (``transport_for``); the URL is still kombu's to
read (TLS, Sentinel, options), as the channels are kombu's but for this one method.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

from tasks.redis_connection import READ_BUFFER_BYTES

_CLIENT_ATTRIBUTE = "_plaud_shared_client"


class SharedClient:
    """For a kombu Redis channel: the synchronous client, built once per connection pool; the
    connections' read buffer."""

    pool: Any

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]
        params["socket_read_size"] = READ_BUFFER_BYTES
        return params

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        pool = self.pool
        client = self.__dict__.get(_CLIENT_ATTRIBUTE)
        if client is None or client.connection_pool is not pool:  # a channel may replace its pool on close
            client = super()._create_client()  # type: ignore[misc]
            self.__dict__[_CLIENT_ATTRIBUTE] = client
        return client


class Channel(SharedClient, kombu_redis.Channel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(SharedClient, kombu_redis.SentinelChannel):
    pass


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


def transport_for(url: str) -> str | None:
    """This module's transport for a Redis broker URL (``redis://``, ``rediss://``, ``sentinel://``);
    None for any other, which kombu resolves as usual."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss"):
        return f"{__name__}:Transport"
    if scheme == "sentinel":
        return f"{__name__}:SentinelTransport"
    return None
