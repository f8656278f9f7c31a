"""Celery's Redis result backends, with connections that read replies into a small buffer.

redis-py allocates and zero-fills a 64 KiB read buffer for every connection. The backend's pool
holds up to one connection per thread that stores a result at once: in a thread-pool worker of
16, up to 16 such buffers for replies that are mostly a task's state or a stored result of a few
KiB (a larger one, such as a long transcript, takes more than one read). Everything else is
Celery's.

The app installs them as the loader's backend overrides (``BACKEND_OVERRIDES``): the result
backend URL stays as configured, and Celery still reads it (TLS, Sentinel, options). A
``socket_read_size`` given in that URL is replaced by ``READ_BUFFER_BYTES``.
"""

from __future__ import annotations

from typing import Any

from celery.backends import redis as celery_redis

from tasks.redis_connection import READ_BUFFER_BYTES


class SmallReadBuffer:
    connparams: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connparams["socket_read_size"] = READ_BUFFER_BYTES


class RedisBackend(SmallReadBuffer, celery_redis.RedisBackend):
    pass


class SentinelBackend(SmallReadBuffer, celery_redis.SentinelBackend):
    pass


# By URL scheme, as Celery's own aliases name its Redis backends (celery.app.backends).
BACKEND_OVERRIDES = {"redis": f"{__name__}:RedisBackend", "rediss": f"{__name__}:RedisBackend",
                     "sentinel": f"{__name__}:SentinelBackend"}
