"""Celery's Redis result backends, with connections that read replies into a small buffer.

Celery builds a result backend per thread (``app.backend`` is thread-local), each with its own
connection pool: a thread-pool worker of 16 holds 16 or more backend connections. With
redis-py's 64 KiB read buffer each, that was a megabyte and more of the worker's memory for
replies of a few hundred bytes (a task's state, a stored result). Everything else is Celery's.

The app installs them as the loader's backend overrides (``BACKEND_OVERRIDES``): the result
backend URL stays as configured, and Celery still reads it (TLS, Sentinel, options).
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
