"""Which workers are alive and what they consume, for the exporter (a worker is its queues' consumer).

Each worker's dispatcher thread (``workers/dispatcher.py``) renews a key of its own every few
seconds; the key expires when the worker is gone, however it went. So "no worker consumes this
queue" is a fact the exporter can state, and an alert can act on, before the queue's backlog
says so.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from .names import WORKER_PREFIX

ALIVE_TTL_S = 30  # a worker not heard from for this long is taken for gone


def announce_alive(connection: Any, worker_name: str, queues: tuple[str, ...]) -> None:
    connection.set(WORKER_PREFIX + worker_name, json.dumps(sorted(queues)), ex=ALIVE_TTL_S)


def consumers_by_queue(connection: Any) -> Counter[str]:
    """Queue -> how many live workers consume it."""
    keys = list(connection.scan_iter(WORKER_PREFIX + "*", count=500))
    found: Counter[str] = Counter()
    for raw in connection.mget(keys) if keys else []:
        if raw is not None:
            found.update(json.loads(raw))
    return found
