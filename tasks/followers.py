"""The callers who enqueued a live recording again: their results are written when it ends.

A second ``plaud.transcribe`` of a recording that is still in flight becomes a follower: its task
id is kept on the record (``RecordStore.follow``) and the recording's end writes the same outcome
under it as under the first caller's id (a result, or the failure or cancellation). Nothing
waits in a worker meanwhile, so a worker that dies cannot lose a follower's answer: the stage
that ends the recording tells them all, and tells them again if it is redelivered because its
worker died in between. Beyond ``MAX_FOLLOWERS`` a caller checks back by countdown instead, so
the record stays small whatever a client sends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery import states

from .records import Record, followers_in

MAX_FOLLOWERS = 100


def tell_followers(backend: Any, followers: Iterable[str], *, result: Any = None,
                   error: BaseException | None = None) -> None:
    """Store the recording's outcome under each follower's task id: ``result``, or ``error``."""
    for task_id in followers:
        if error is None:
            backend.store_result(task_id, result, states.SUCCESS)
        else:
            backend.mark_as_failure(task_id, error, call_errbacks=False)


def followers_of(record: Record) -> tuple[str, ...]:
    """The followers kept on a record, for telling them again: a stage redelivered after its
    worker died between ending the recording and telling them."""
    return followers_in(record.get("followers"))
