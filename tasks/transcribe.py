"""The public entry task ``plaud.transcribe``: any service enqueues it by name with JSON kwargs.

It checks the kwargs, creates the recording record and replaces itself with the chain
upload → submit → poll → deliver, whose last task takes this task's id: so
``AsyncResult(<this task's id>)`` resolves to the transcript, or to the failure. Behind a full
upload line the recording waits there as data instead, and the dispatcher starts the same chain,
under the same id, when its upload slot comes. Enqueueing the
same request again under a ``recording_id`` that exists starts nothing new: the task follows the
existing recording and resolves to the same outcome. A different request under that id (another
source, params, user or tenant) is refused, naming what differs.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from celery import Task, chain, shared_task, states
from celery.exceptions import Ignore

from plaud.config import USER_ID_LENGTH
from plaud.redact import url_without_query

from . import names
from .cancel import RecordingCancelled, cancelled_message
from .deliver import deliver
from .errors import IdempotencyConflict, InvalidRequest, RecordingFailed
from .failures import Failure, FailureKind, StageName
from .followers import MAX_FOLLOWERS
from .names import DEFAULT_PRIORITY, DEFAULT_TENANT, PRIORITIES, WAITING_FOR_UPLOAD
from .poll import poll
from .records import RecordingState
from .redis_connection import ScriptCall
from .runtime import runtime
from .stage import wait_as_data
from .submit import submit
from .upload import has_upload_slot, upload

RECORDING_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_FOLLOW_INTERVAL_S = 30.0
KWARGS = ("source", "recording_id", "user_id", "params", "webhook_url", "metadata", "callback_task",
          "callback_queue", "tenant", "priority")
# What makes two requests for one recording_id the same request: a second enqueue that differs in
# any of these is refused (naming the field), not silently answered with the first one's result.
IDENTITY = ("source", "params", "user_id", "tenant")
TASK_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")
# A request names its audio (a path or a URL); it never carries it. Anything larger is a mistake
# that would otherwise sit in Redis for the record's lifetime.
MAX_REQUEST_BYTES = 64 * 1024


CHAIN = (StageName.UPLOAD, StageName.SUBMIT, StageName.POLL, StageName.DELIVER)


def links(recording_id: str, poll_token: str, *, task_id: str | None, start: StageName = StageName.UPLOAD
          ) -> list[Any]:
    """The stages from ``start`` to deliver, in order; the last carries ``task_id`` (the entry's id)."""
    signatures = {StageName.UPLOAD: upload.si(recording_id), StageName.SUBMIT: submit.si(recording_id),
                  StageName.POLL: poll.si(recording_id, poll_token)}
    final = deliver.si(recording_id)
    return [signatures[stage] for stage in CHAIN[CHAIN.index(start):-1]] + [final.set(task_id=task_id) if task_id
                                                                            else final]


def pipeline(recording_id: str, poll_token: str, *, task_id: str | None,
             start: StageName = StageName.UPLOAD) -> Any:
    """The chain from ``start`` to deliver as a Celery canvas (what ``Task.replace`` takes)."""
    return chain(*links(recording_id, poll_token, task_id=task_id, start=start))


def send_pipeline(recording_id: str, poll_token: str, *, task_id: str | None,
                  start: StageName = StageName.UPLOAD, **options: Any) -> None:
    """Send the chain from ``start`` to deliver: its first task, carrying the rest as its message's
    ``chain`` (the next task last, as Celery reads it), with ``options`` for that first task.

    The message ``chain(...).apply_async`` would send, without the canvas's preparation: it copies
    and freezes every signature to give each task an id before it is sent (about 0.3 ms of CPU
    per recording on the development machine), and nothing here needs those ids early; each
    task gets its id when the one before it sends it.
    """
    first, *rest = links(recording_id, poll_token, task_id=task_id, start=start)
    first.apply_async(chain=rest[::-1], **options)


def validate(kwargs: dict[str, Any], *, webhooks_on: bool = True) -> dict[str, Any]:
    """The kwargs as the pipeline uses them; InvalidRequest names what is wrong."""
    size = len(json.dumps(kwargs, default=str))
    if size > MAX_REQUEST_BYTES:
        raise InvalidRequest(f"the request's kwargs are {size} bytes; the limit is {MAX_REQUEST_BYTES}: pass the "
                             f"audio as a path or URL in source, and keep params and metadata small")
    unknown = sorted(set(kwargs) - set(KWARGS))
    if unknown:
        raise InvalidRequest(f"unknown kwargs {unknown}; plaud.transcribe takes {list(KWARGS)}")
    source = kwargs.get("source")
    if not isinstance(source, str) or not source.strip():
        raise InvalidRequest("source must be a local path or an http(s) URL (a non-empty string)")
    scheme = urlsplit(source).scheme.lower()
    if len(scheme) > 1 and scheme not in ("http", "https"):
        raise InvalidRequest(f"source has the URL scheme {scheme!r}: use a local path or an http(s) URL")
    recording_id = kwargs.get("recording_id")
    if recording_id is not None and (not isinstance(recording_id, str) or not RECORDING_ID_RE.match(recording_id)):
        raise InvalidRequest("recording_id must be 1-128 characters of letters, digits, '.', '_', ':' or '-', "
                             "starting with a letter or digit")
    tenant = kwargs.get("tenant")
    if tenant is not None and (not isinstance(tenant, str) or not RECORDING_ID_RE.match(tenant)):
        raise InvalidRequest("tenant must be 1-128 characters of letters, digits, '.', '_', ':' or '-', "
                             "starting with a letter or digit")
    priority = kwargs.get("priority")
    if priority is not None and priority not in PRIORITIES:
        raise InvalidRequest(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    user_id = kwargs.get("user_id")
    if user_id is not None and (not isinstance(user_id, str)
                                or not USER_ID_LENGTH[0] <= len(user_id) <= USER_ID_LENGTH[1]):
        raise InvalidRequest(f"user_id must be a string of {USER_ID_LENGTH[0]} to {USER_ID_LENGTH[1]} characters")
    for name in ("params", "metadata"):
        if kwargs.get(name) is not None and not isinstance(kwargs[name], dict):
            raise InvalidRequest(f"{name} must be a JSON object")
    webhook_url = kwargs.get("webhook_url")
    if webhook_url is not None and (not isinstance(webhook_url, str)
                                    or urlsplit(webhook_url).scheme not in ("http", "https")):
        raise InvalidRequest("webhook_url must be an http(s) URL")
    if webhook_url is not None and not webhooks_on:
        raise InvalidRequest("webhook_url was given but this deployment has no PLAUD_WEBHOOK_SECRET to sign "
                             "webhooks with")
    for name in ("callback_task", "callback_queue"):
        value = kwargs.get(name)
        if value is not None and (not isinstance(value, str) or not TASK_NAME_RE.match(value)):
            raise InvalidRequest(f"{name} must be a Celery task or queue name")
    if kwargs.get("callback_queue") in names.WORKER_QUEUES:
        raise InvalidRequest("callback_queue must not be a queue these workers consume")
    request = {name: kwargs.get(name) for name in KWARGS}
    request["tenant"] = tenant or DEFAULT_TENANT
    request["priority"] = priority or DEFAULT_PRIORITY
    return request


def shown_source(source: str) -> str:
    """The source as it may be displayed: a URL without its query (it may hold a signature)."""
    return url_without_query(source)


class EntryTask(Task):
    # Task events (and so Flower) show arguments as the request renders them: masked, since a
    # source URL may carry a presigned signature. The request also treats the entry's hand-over
    # to its chain as Celery treats a replaced task: acknowledged, no task-succeeded event.
    Request = "tasks.requests:EntryRequest"
    # The entry never has a result of its own: its id resolves when the chain's last task, which
    # carries it, stores the transcript (or when the entry itself fails: errors are stored).
    # STARTED is stored by the task itself, with its record's creation, as task_track_started would.
    ignore_result = True
    store_errors_even_if_ignored = True


HANDED_OVER = "handed over to its chain"


def hand_over(task: EntryTask, canvas: Callable[[], Any], send: Callable[[str | None], None] | None = None) -> Any:
    """Run the signature ``canvas()`` builds in this task's place, its last task carrying this task's
    id; ``send``, given that id, sends the same without building the canvas.

    What ``Task.replace`` does, without its cost: replace ends the task with ``Ignore``, for which
    Celery builds two exception reports of the whole call stack in the pool process and pickles
    one to the main process (about a tenth of a recording's CPU on the workers). A plain return
    does neither; the result stays the chain's (the entry ignores its own), and ``EntryRequest``
    acknowledges it as Celery acknowledges a replaced task, without a task-succeeded event. A
    request that Celery would have to rewire (callbacks, errbacks, a chain, a chord or group around
    the entry, eager mode) goes through ``replace`` itself.
    """
    if not plain(task.request):
        return task.replace(canvas())
    if send is not None:
        send(task.request.id)
    else:
        canvas().apply_async(task_id=task.request.id)  # the last task takes this task's id
    return HANDED_OVER


def plain(request: Any) -> bool:
    """Whether the entry was sent alone: no callbacks, errbacks, chain, chord or group around it
    for Celery to rewire, and not run eagerly. Only such an entry may end by returning."""
    return not (request.is_eager or request.callbacks or request.errbacks or request.chain or request.chord
                or request.group)


def store_started(task: EntryTask, rt: Any, recording_id: str) -> ScriptCall | None:
    """The STARTED state Celery stores for a tracked task, which it skips for one that ignores its
    result: as a write to send with the record's creation (``TaskResults``) when one can stand in
    for Celery's backend, else stored by that backend now. None when there is no such write."""
    request = task.request
    if not (task.track_started and not request.is_eager and request.id):
        return None
    started = {"pid": os.getpid(), "hostname": request.hostname}
    write = rt.task_results.store_with_record(task.backend, request, started, states.STARTED,
                                              recording_id=recording_id)
    if write is None:
        task.backend.store_result(request.id, started, states.STARTED, request=request)
    return write


@shared_task(name=names.TRANSCRIBE, bind=True, base=EntryTask)
def transcribe(self: EntryTask, *args: Any, **kwargs: Any) -> Any:
    rt = runtime()
    try:
        if args:
            raise InvalidRequest(f"plaud.transcribe takes keyword arguments only, got {len(args)} positional; "
                                 f"send kwargs like {{\"source\": ..., \"recording_id\": ...}}")
        request = validate(kwargs, webhooks_on=bool(rt.settings.webhook_secret))
    except InvalidRequest as exc:
        recording_id = kwargs.get("recording_id")
        # Record the refusal so `status` can show it, but never on top of an existing recording:
        # a malformed duplicate must not fail the good one already in flight.
        if isinstance(recording_id, str) and RECORDING_ID_RE.match(recording_id) and \
                rt.store.create(recording_id, {"task_id": self.request.id}, due_at=float("inf")) is None:
            failure = Failure.now(StageName.TRANSCRIBE, FailureKind.INVALID_REQUEST, str(exc))
            rt.store.transition(recording_id, RecordingState.FAILED, {"failure": failure.to_dict()})
        raise
    recording_id = request["recording_id"] or uuid.uuid4().hex
    poll_token = uuid.uuid4().hex[:12]
    identity = {"source": request["source"], "params": request["params"] or {},
                "user_id": request["user_id"] or rt.config.user_id, "tenant": request["tenant"]}
    # STARTED in the round trip that creates the record, when Celery keeps its results there.
    started = store_started(self, rt, recording_id)
    existing = rt.store.create(recording_id, {
        **identity, "source_shown": shown_source(request["source"]), "priority": request["priority"],
        "webhook_url": request["webhook_url"], "metadata": request["metadata"], "task_id": self.request.id,
        "callback_task": request["callback_task"], "callback_queue": request["callback_queue"],
        "poll_token": poll_token,
    }, due_at=time.time() + rt.settings.reconcile_grace_s, also_run=started)
    if existing is not None:
        refuse_a_different_request(rt, recording_id, identity)
        # The same request, in flight or done: start nothing; resolve to that recording's outcome.
        return hand_over(self, lambda: follow.si(recording_id))
    rt.plan_recording(recording_id)
    if plain(self.request) and not has_upload_slot(rt, recording_id, created_at=time.time()):
        # Behind a deep backlog: the recording waits in the upload line from here, and the
        # dispatcher starts its chain when its slot comes (carrying this task's id, from the
        # record). An upload task sent now would only find the same and end.
        return wait_as_data(rt, recording_id, WAITING_FOR_UPLOAD)
    return hand_over(self, lambda: pipeline(recording_id, poll_token, task_id=None),
                     send=lambda task_id: send_pipeline(recording_id, poll_token, task_id=task_id))


def refuse_a_different_request(rt: Any, recording_id: str, identity: dict[str, Any]) -> None:
    """Raise IdempotencyConflict when the recording under this id was asked for differently."""
    record = rt.store.get(recording_id)
    if record is None:
        return  # expired between the two reads: nothing to compare with
    stored = {"source": record.get("source"), "params": record.get("params") or {},
              "user_id": record.get("user_id"), "tenant": record.get("tenant", DEFAULT_TENANT)}
    if record.get("source") is None:  # refused at the door: it holds no request to compare
        return
    differing = [name for name in IDENTITY if stored[name] != identity[name]]
    if differing:
        raise IdempotencyConflict(
            f"recording_id {recording_id} was already used for a different request (its {', '.join(differing)} "
            f"differ): use a new recording_id, or send exactly the same request to follow the first one")


@shared_task(name=names.FOLLOW, bind=True, max_retries=None)
def follow(self, recording_id: str) -> Any:
    """Resolve to an existing recording's result (or failure).

    A live recording keeps this task's id among its followers and writes the outcome under it when
    it ends (``tasks.followers``): nothing waits in a worker meanwhile. Past ``MAX_FOLLOWERS``,
    this checks back by countdown instead.
    """
    store = runtime().store
    state, following = store.follow(recording_id, self.request.id, most=MAX_FOLLOWERS)
    if following:
        raise Ignore()  # no result now: the recording's end writes it under this task's id
    record = store.get(recording_id) if state is not None else None
    if record is None:
        raise RecordingFailed(f"recording {recording_id} is unknown or expired")
    if record.state is RecordingState.SUCCEEDED:
        return record.get("result")
    if record.state is RecordingState.FAILED:
        raise RecordingFailed(Failure.from_record(record).describe(recording_id))
    if record.state is RecordingState.CANCELLED:
        raise RecordingCancelled(cancelled_message(recording_id, record.get("cancelled") or {}))
    wait = min(max(record.number("next_poll_at") - time.time(), 1.0), MAX_FOLLOW_INTERVAL_S)
    raise self.retry(countdown=wait, max_retries=None)
