"""What makes a recording cheaper to carry: fewer Redis round trips, no needless Celery work.

Each step here used to be several round trips; the tests pin down that the single step does all
of what the several did, and nothing to a record it must leave alone.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tasks.names import DUE_INDEX, lease_key
from tasks.records import RecordingState, StageLease
from tests.helpers import fake_record_store


@pytest.fixture
def store():
    return fake_record_store()


def count_pipelines(store: Any, monkeypatch: Any) -> list[int]:
    """The number of commands of each pipeline ``store`` executes from now on: one round trip each."""
    executed: list[int] = []
    real_pipeline = store.redis.pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute
        pipe.execute = lambda **options: executed.append(len(pipe.command_stack)) or real_execute(**options)
        return pipe

    monkeypatch.setattr(store.redis, "pipeline", counted)
    return executed


# -- records -----------------------------------------------------------------------------------


def test_a_transition_clears_fields_and_an_ended_record_expires_in_the_same_step(store):
    store.create("r1", {"source": "/a.mp3"}, due_at=10)
    store.update("r1", {"upload_progress": {"parts": [1]}, "transcript": {"text": "x"}})
    assert store.transition("r1", RecordingState.UPLOADED, {"file_id": "f"}, due_at=20,
                            clear=("upload_progress",)) is RecordingState.QUEUED
    record = store.get("r1")
    assert record.get("upload_progress") is None and record.get("file_id") == "f"
    assert record.get("transcript") == {"text": "x"} and store.redis.ttl("plaud:rec:r1") == -1  # live: no expiry

    assert store.transition("r1", RecordingState.SUCCEEDED, {"result": {"text": "x"}},
                            clear=("transcript",)) is RecordingState.UPLOADED
    record = store.get("r1")
    assert record.get("transcript") is None and record.get("result") == {"text": "x"}
    assert 0 < store.redis.ttl("plaud:rec:r1") <= 3600 and store.redis.zscore(DUE_INDEX, "r1") is None


def test_a_refused_transition_clears_nothing_and_a_reopened_record_loses_its_expiry(store):
    store.create("r1", {}, due_at=10)
    store.update("r1", {"transcript": {"text": "x"}})
    store.transition("r1", RecordingState.FAILED, {"failure": {"reason": "x"}})
    assert store.transition("r1", RecordingState.SUCCEEDED, clear=("transcript",)) is RecordingState.FAILED
    assert store.get("r1").get("transcript") == {"text": "x"}  # terminal: left alone
    assert store.redis.ttl("plaud:rec:r1") > 0
    assert store.transition("r1", RecordingState.UPLOADED, reopen=True) is RecordingState.FAILED
    assert store.redis.ttl("plaud:rec:r1") == -1  # live again: no expiry until it ends


def test_a_checkpoint_saves_progress_moves_the_due_time_and_renews_the_lease(store):
    store.create("r1", {}, due_at=10)
    store.transition("r1", RecordingState.UPLOADING, due_at=10)
    assert store.take_lease("r1", "task-a", 1)
    assert store.checkpoint("r1", {"upload_progress": {"parts": [1]}, "bytes_sent": 5}, due_at=99,
                            lease_ttl_s=300) is RecordingState.UPLOADING
    record = store.get("r1")
    assert record.get("upload_progress") == {"parts": [1]} and record.get("bytes_sent") == "5"
    assert b"sealed" in store.redis.hget("plaud:rec:r1", "upload_progress")  # sealed at rest, as update() does
    assert store.redis.zscore(DUE_INDEX, "r1") == 99
    assert 1000 < store.redis.pttl(lease_key("r1")) <= 300_000


def test_a_stage_s_last_write_gives_back_its_own_lease_in_the_same_step(store):
    store.create("r1", {}, due_at=10)
    assert store.take_lease("r1", "task-a", 60)
    other = StageLease("task-b", held=True)  # a run whose lease lapsed and went to task-a
    store.transition("r1", RecordingState.UPLOADED, due_at=20, lease=other)
    assert store.redis.get(lease_key("r1")) == b"task-a" and not other.held
    lease = StageLease("task-a", held=True)
    store.transition("r1", RecordingState.SUBMITTED, {"transcription_id": "t1"}, due_at=30, lease=lease)
    assert store.redis.get(lease_key("r1")) is None and not lease.held
    record = store.get("r1")
    assert record.state is RecordingState.SUBMITTED and record.get("transcription_id") == "t1"
    # Cancelled meanwhile: the move is refused, and the lease goes all the same (the stage ends).
    assert store.take_lease("r1", "task-c", 60)
    store.transition("r1", RecordingState.CANCELLED)
    assert store.transition("r1", RecordingState.UPLOADED, lease=StageLease("task-c", True)) is RecordingState.CANCELLED
    assert store.redis.get(lease_key("r1")) is None
    # The record expired meanwhile: the lease goes too.
    assert store.take_lease("gone", "task-d", 60)
    assert store.transition("gone", RecordingState.UPLOADED, lease=StageLease("task-d", True)) is None
    assert store.redis.get(lease_key("gone")) is None


def test_a_stage_s_last_write_observes_its_histograms_once_and_never_fails_for_them(store):
    from tasks import metrics

    def count(metric):
        return metrics.read_histogram(store.redis, metric).count

    store.create("r1", {}, due_at=10)
    store.update("r1", {"upload_progress": {"parts": [1]}})
    store.transition("r1", RecordingState.UPLOADING, due_at=20)
    observed = [(metrics.UPLOAD_THROUGHPUT, 2e6)]
    # The same state again (a resumed stage) observes nothing.
    store.transition("r1", RecordingState.UPLOADING, due_at=20, observe=observed)
    assert count(metrics.UPLOAD_THROUGHPUT) == 0
    # Fields cleared and set, and the observation, in the one move.
    assert store.transition("r1", RecordingState.UPLOADED, {"file_id": "f"}, due_at=30, clear=("upload_progress",),
                            observe=observed) is RecordingState.UPLOADING
    record = store.get("r1")
    assert record.get("file_id") == "f" and record.get("upload_progress") is None
    assert count(metrics.UPLOAD_THROUGHPUT) == 1 and metrics.read_histogram(store.redis, metrics.UPLOAD_THROUGHPUT
                                                                            ).sum == 2e6
    # A histogram that cannot take the observation (here not a hash) does not stop the move.
    store.redis.set(metrics.RECORDING_SECONDS.key, "not a hash")
    ended = store.end("r1", RecordingState.SUCCEEDED, {"result": {"text": "x"}},
                      observe=[(metrics.RECORDING_SECONDS, 12.0), (metrics.POLLS_PER_RECORDING, 1)])
    assert ended.previous is RecordingState.UPLOADED and store.get("r1").state is RecordingState.SUCCEEDED
    assert store.redis.zscore(DUE_INDEX, "r1") is None and count(metrics.POLLS_PER_RECORDING) == 1


def test_a_checkpoint_writes_nothing_to_a_cancelled_recording(store):
    store.create("r1", {}, due_at=10)
    store.transition("r1", RecordingState.CANCELLED, {"cancelled": {"stage": "upload"}})
    assert store.checkpoint("r1", {"bytes_sent": 5}, due_at=99, lease_ttl_s=300) is RecordingState.CANCELLED
    assert store.get("r1").get("bytes_sent") is None and store.redis.zscore(DUE_INDEX, "r1") is None


def test_a_stage_takes_its_lease_and_reads_its_record_in_one_round_trip(store, monkeypatch):
    store.create("r1", {"source": "/a.mp3"}, due_at=10)
    pipelines = count_pipelines(store, monkeypatch)
    round_trips: list[str] = []
    for name in ("get", "set", "hgetall", "pexpire"):
        real = getattr(store.redis, name)
        monkeypatch.setattr(store.redis, name, lambda *a, _real=real, _name=name, **k: round_trips.append(_name)
                            or _real(*a, **k))
    held, record = store.take_lease_and_get("r1", "task-a", 60)
    assert held and record.get("source") == "/a.mp3" and pipelines == [2] and round_trips == []
    assert store.redis.get(lease_key("r1")) == b"task-a"
    # Another run's lease: not held, and the record all the same (to see that run's work done).
    held, record = store.take_lease_and_get("r1", "task-b", 60)
    assert not held and record.get("source") == "/a.mp3"
    assert store.redis.get(lease_key("r1")) == b"task-a"
    # The same task redelivered holds its own lease again, renewed.
    store.redis.pexpire(lease_key("r1"), 500)
    held, _ = store.take_lease_and_get("r1", "task-a", 60)
    assert held and store.redis.pttl(lease_key("r1")) > 50_000
    assert store.take_lease_and_get("gone", "task-a", 60) == (True, None)


def test_a_submit_reads_the_fleet_s_timing_with_its_count_of_requests(store, monkeypatch):
    from tasks.timing import TimingModel

    model = TimingModel(store.redis, prior_base_s=5, prior_rtf=0.1)
    store.create("r1", {}, due_at=10)
    model.learn(600, hit=False)
    executed = count_pipelines(store, monkeypatch)
    sent, reply = store.increment_with("r1", "submit_requests", model.ask)
    assert (sent, executed) == (1, [2]) and model.estimate_from(reply) == model.current()
    assert store.increment_with("r1", "submit_requests", model.ask)[0] == 2


def test_a_poll_reads_the_fleet_s_timing_with_its_record_and_learns_from_that_read(store, monkeypatch):
    from tasks.timing import TimingModel

    model = TimingModel(store.redis, prior_base_s=5, prior_rtf=0.1)
    store.create("r1", {"source": "/a.mp3"}, due_at=10)
    model.learn(600, hit=False)
    record, reply = store.get_with("r1", model.ask)
    fleet = model.estimate_from(reply)
    assert record.get("source") == "/a.mp3" and fleet == model.current() and fleet.misses == 1
    assert store.get_with("gone", model.ask)[0] is None
    # The poll's verdict goes with its count and the transcript: the step is taken from the estimate
    # read with the record, and nothing is read again.
    executed, reads = count_pipelines(store, monkeypatch), []
    real_hmget = store.redis.hmget
    monkeypatch.setattr(store.redis, "hmget", lambda *args: reads.append(args) or real_hmget(*args))
    lesson = model.lesson(600, True, now=fleet, once_for=store.key("r1"))
    assert store.increment_all("r1", "polls", also_set={"transcript": {"text": "x"}}, also_run=lesson) == [1]
    assert executed == [3] and reads == []
    assert model.current().hits == 1 and model.current().expected_s(600) < fleet.expected_s(600)
    assert store.get("r1").get("transcript") == {"text": "x"}
    # A later verdict of the same recording teaches nothing (its first one did).
    store.increment_all("r1", "polls", also_run=model.lesson(600, False, now=model.current(),
                                                             once_for=store.key("r1")))
    assert (model.current().misses, model.current().samples) == (1, 2)
    assert store.get("r1").number("timing_learned") == 2


def test_a_script_sent_in_a_pipeline_runs_alone_when_the_server_lost_it(store):
    from tasks.timing import TimingModel

    model = TimingModel(store.redis, prior_base_s=5, prior_rtf=0.1)
    store.create("r1", {}, due_at=10)
    store.redis.script_flush()  # as after a restart or a failover: the server has no script
    lesson = model.lesson(600, False, now=model.current(), once_for=store.key("r1"))
    assert store.increment_all("r1", "polls", also_run=lesson) == [1]
    assert model.current().misses == 1 and store.get("r1").number("timing_learned") == 1


# -- the entry task's hand-over ----------------------------------------------------------------


class Signature:
    def __init__(self) -> None:
        self.sent_with: dict[str, Any] | None = None

    def apply_async(self, **options: Any) -> None:
        self.sent_with = options


def entry(**request: Any) -> Any:
    defaults = {"id": "entry-id", "is_eager": False, "callbacks": None, "errbacks": None, "chain": None,
                "chord": None, "group": None}
    replaced = []
    task = SimpleNamespace(request=SimpleNamespace(**{**defaults, **request}),
                           replace=lambda sig: replaced.append(sig) or "replaced")
    return task, replaced


def test_the_entry_hands_its_id_to_the_chain_and_returns():
    from tasks.transcribe import HANDED_OVER, hand_over

    task, replaced = entry()
    chain = Signature()
    assert hand_over(task, lambda: chain) == HANDED_OVER
    assert chain.sent_with == {"task_id": "entry-id"} and not replaced
    # Given a way to send the chain without its canvas, the entry uses that, with its id.
    task, replaced = entry()
    built, sent = [], []
    assert hand_over(task, lambda: built.append("canvas") or Signature(), send=sent.append) == HANDED_OVER
    assert sent == ["entry-id"] and built == [] and not replaced  # no canvas built for nothing


def test_the_pipeline_is_sent_as_one_message_carrying_the_rest_of_its_chain(monkeypatch):
    from celery import Task

    from tasks.failures import StageName
    from tasks.transcribe import send_pipeline

    sent = []
    monkeypatch.setattr(Task, "apply_async", lambda self, args=None, kwargs=None, **options: sent.append(
        (self.name, args, options)))
    send_pipeline("r1", "token-1", task_id="entry-id", countdown=5)
    [(name, args, options)] = sent
    assert (name, args, options["countdown"]) == ("plaud.upload", ("r1",), 5)
    # The next task last, as Celery's trace pops it; deliver carries the entry's id.
    chain = options["chain"]
    assert [(link["task"], tuple(link["args"])) for link in chain] == [
        ("plaud.deliver", ("r1",)), ("plaud.poll", ("r1", "token-1")), ("plaud.submit", ("r1",))]
    assert chain[0]["options"]["task_id"] == "entry-id" and all(link["immutable"] for link in chain)
    sent.clear()
    send_pipeline("r1", "token-2", task_id=None, start=StageName.POLL)
    [(name, args, options)] = sent
    assert (name, args) == ("plaud.poll", ("r1", "token-2"))
    assert [link["task"] for link in options["chain"]] == ["plaud.deliver"]
    assert "task_id" not in options["chain"][0]["options"]


@pytest.mark.parametrize("request_fields", [{"callbacks": [{"task": "x"}]}, {"errbacks": [{"task": "x"}]},
                                            {"chain": [{"task": "x"}]}, {"chord": {"task": "x"}},
                                            {"group": "g1"}, {"is_eager": True}])
def test_an_entry_celery_must_rewire_is_replaced_as_before(request_fields):
    from tasks.transcribe import hand_over

    task, replaced = entry(**request_fields)
    chain = Signature()
    assert hand_over(task, lambda: chain) == "replaced"
    assert replaced == [chain] and chain.sent_with is None


def test_deliver_leaves_the_entry_s_started_state_alone():
    """The entry stored STARTED under its id; deliver, which runs under that id, would store it again."""
    from tasks.deliver import deliver
    from tasks.transcribe import transcribe
    from workers.celery_app import app

    assert app.conf.task_track_started and transcribe.track_started and not deliver.track_started


def test_the_entry_sends_no_task_succeeded_event_for_its_hand_over():
    from tasks.requests import EntryRequest

    sent = []
    request = object.__new__(EntryRequest)
    request._eventer = SimpleNamespace(enabled=True, send=lambda type, **fields: sent.append(type))
    request._task = SimpleNamespace(send_events=True)
    request.id = "entry-id"
    for event in ("task-received", "task-started", "task-succeeded", "task-failed"):
        request.send_event(event)
    assert sent == ["task-received", "task-started", "task-failed"]


def test_counters_go_up_together_and_with_the_fields_a_poll_saves(store, monkeypatch):
    store.create("r1", {}, due_at=10)
    assert store.increment_all("r1", "polls", "timing_learned") == [1, 1]
    assert store.increment_all("r1", "polls") == [2]
    assert store.increment("r1", "timing_learned") == 2
    executed = count_pipelines(store, monkeypatch)
    assert store.increment_all("r1", "polls", also_set={"transcript": {"text": "x"}, "plaud_status": "SUCCESS"}) == [3]
    assert executed == [2]  # the counter and the fields: one round trip
    record = store.get("r1")
    assert record.get("transcript") == {"text": "x"} and record.get("plaud_status") == "SUCCESS"
    assert record.number("polls") == 3 and record.number("updated_at") > 0


# -- the audio's duration --------------------------------------------------------------------------


def test_the_duration_of_a_known_format_is_read_by_its_own_reader_with_the_same_answer(tmp_path):
    import soundfile

    from plaud.sandbox.testaudio import make_recording
    from plaud.transcode import probe_duration_s

    mp3 = make_recording(str(tmp_path / "a.mp3"), 4.0, text="x").path
    # The MP3's own headers (plaud.mp3_frames) and mutagen's every-format path agree.
    assert probe_duration_s(mp3, "mp3") == pytest.approx(probe_duration_s(mp3), abs=1e-9)
    assert probe_duration_s(mp3, "mp3") == pytest.approx(4.0, abs=0.1)
    wav = str(tmp_path / "a.wav")
    soundfile.write(wav, [0.0] * 16000 * 3, 16000)
    assert probe_duration_s(wav, "mp3") == probe_duration_s(wav) == pytest.approx(3.0)  # mislabelled: every format
    (tmp_path / "junk.mp3").write_bytes(b"ID3" + b"\0" * 200)
    assert probe_duration_s(str(tmp_path / "junk.mp3"), "mp3") is None


# -- the upload's parts ------------------------------------------------------------------------------


class PartsApi:
    """Presigns ``size`` bytes in parts of ``chunk`` and completes whatever was sent."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk

    def presign(self, user_id: str, filesize: int, filetype: str) -> dict[str, Any]:
        count = -(-filesize // self.chunk)
        return {"FileId": "f1", "UploadId": "u1", "ChunkSize": self.chunk,
                "Parts": [{"PartNumber": n, "PresignedUrl": f"http://storage/{n}"} for n in range(1, count + 1)]}

    def complete(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"FileId": "f1", "DownloadUrl": "http://storage/f1"}


class ThreadRecordingTransport:
    def __init__(self) -> None:
        self.threads: list[str] = []

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        import threading

        self.threads.append(threading.current_thread().name)
        return SimpleNamespace(headers={"ETag": f'"etag-{url[-1]}"'})


@pytest.mark.parametrize("size, sent_from", [(100, {"MainThread"}), (250, {"plaud-part"})])
def test_one_part_goes_from_the_caller_s_thread_and_several_from_a_pool(size, sent_from):
    import io

    from plaud.sources import Source
    from plaud.upload import Uploader

    transport = ThreadRecordingTransport()
    data = bytes(range(256))[:size]
    source = Source("test", size, "mp3", lambda: io.BytesIO(data))
    result = Uploader(PartsApi(chunk=100), transport, parallel_parts=4).upload(source, user_id="u")  # type: ignore[arg-type]
    assert result.download_url == "http://storage/f1" and len(transport.threads) == -(-size // 100)
    assert {name.split("_")[0] for name in transport.threads} == sent_from


# -- the entry's STARTED and deliver's SUCCESS, in the record's round trips --------------------


def task_request(task_id: str, **fields: Any) -> Any:
    return SimpleNamespace(**{"id": task_id, "is_eager": False, **fields})


@pytest.fixture
def results(store):
    from celery import Celery

    from tasks.task_results import TaskResults

    app = Celery(backend="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.result_expires = 600
    backend = app.backend
    backend.client = store.redis  # Celery reads back what the scripts wrote, as a caller would
    return SimpleNamespace(backend=backend, writes=TaskResults(store.redis, in_records_redis=True))


def test_the_entry_stores_started_in_the_round_trip_that_creates_its_record(store, results, monkeypatch):
    from celery import states

    backend = results.backend
    started = results.writes.store_with_record(backend, task_request("entry-id", parent_id="p1"),
                                               {"pid": 7, "hostname": "w1"}, states.STARTED, recording_id="r1")
    waiting = store.redis.pubsub()  # a caller blocked on AsyncResult.get() listens on the result's key
    waiting.subscribe(backend.get_key_for_task("entry-id"))
    assert waiting.get_message(timeout=1)["type"] == "subscribe"
    pipelines = count_pipelines(store, monkeypatch)

    assert store.create("r1", {"source": "/a.mp3"}, due_at=10, also_run=started) is None
    assert pipelines == [2] and store.get("r1").state is RecordingState.QUEUED
    meta = backend.get_task_meta("entry-id")
    assert (meta["status"], meta["result"], meta["task_id"]) == ("STARTED", {"pid": 7, "hostname": "w1"}, "entry-id")
    assert meta["parent_id"] == "p1"
    assert 590 < store.redis.ttl(backend.get_key_for_task("entry-id")) <= 600
    assert backend.decode(waiting.get_message(timeout=1)["data"])["status"] == "STARTED"


def test_deliver_stores_success_with_the_move_that_ends_the_record_and_never_over_another_outcome(store, results):
    from celery import states

    backend = results.backend

    def success(recording_id: str, text: str) -> Any:
        return results.writes.store_with_record(backend, task_request(f"entry-{recording_id}"), {"text": text},
                                                states.SUCCESS, recording_id=recording_id,
                                                only_if=RecordingState.SUCCEEDED)

    store.create("live", {}, due_at=10)
    store.end("live", RecordingState.SUCCEEDED, {"result": {"text": "hello"}}, also_run=success("live", "hello"))
    assert backend.get_task_meta("entry-live")["status"] == "SUCCESS"
    assert backend.get_task_meta("entry-live")["result"] == {"text": "hello"}

    # Cancelled meanwhile: the caller's outcome stays the cancellation the record shows.
    store.create("cancelled", {}, due_at=10)
    store.end("cancelled", RecordingState.CANCELLED)
    store.redis.set(backend.get_key_for_task("entry-cancelled"),
                    backend.encode({"status": states.FAILURE, "result": backend.prepare_exception(ValueError("x"))}))
    ended = store.end("cancelled", RecordingState.SUCCEEDED, {"result": {"text": "late"}},
                      also_run=success("cancelled", "late"))
    assert ended.previous is RecordingState.CANCELLED
    assert backend.get_task_meta("entry-cancelled")["status"] == "FAILURE"

    # A stored SUCCESS stays, whatever comes after it (a redelivered entry's STARTED, a second deliver).
    success("live", "again").run(store.redis)
    results.writes.store_with_record(backend, task_request("entry-live"), {"pid": 1}, states.STARTED,
                                     recording_id="live").run(store.redis)
    assert backend.get_task_meta("entry-live")["result"] == {"text": "hello"}
    # And so does a value that is not a state Celery could read.
    store.redis.set(backend.get_key_for_task("entry-other"), b"\x80 not json")
    success_call = results.writes.store_with_record(backend, task_request("entry-other"), {"text": "x"},
                                                    states.SUCCESS, recording_id="live")
    assert success_call.run(store.redis) == 0 and store.redis.get(backend.get_key_for_task("entry-other")) == \
        b"\x80 not json"


def test_a_result_sent_after_a_move_the_server_could_not_run_runs_again_after_it(store, results):
    """The move runs alone after the server lost its script; the result's write, which had run
    before it and found the record not yet SUCCEEDED, runs again after it."""
    from celery import states

    from tasks.task_results import _STORE_UNLESS_SUCCESS

    store.create("r1", {}, due_at=10)
    store.redis.script_flush()
    store.redis.script_load(_STORE_UNLESS_SUCCESS)  # the result's script is there, the move's is not
    success = results.writes.store_with_record(results.backend, task_request("entry-id"), {"text": "hi"},
                                               states.SUCCESS, recording_id="r1", only_if=RecordingState.SUCCEEDED)
    assert store.end("r1", RecordingState.SUCCEEDED, also_run=success).previous is RecordingState.QUEUED
    assert results.backend.get_task_meta("entry-id")["status"] == "SUCCESS"


def test_results_the_script_cannot_write_as_celery_would_are_left_to_celery_s_backend(store, results):
    from celery import Celery, states

    from tasks.runtime import Runtime
    from tasks.settings import PipelineSettings
    from tasks.task_results import TaskResults

    def written(writes: Any, backend: Any, request: Any) -> bool:
        return writes.store_with_record(backend, request, {}, states.STARTED, recording_id="r1") is not None

    assert written(results.writes, results.backend, task_request("entry-id"))
    assert not written(TaskResults(store.redis, in_records_redis=False), results.backend, task_request("entry-id"))
    assert not written(results.writes, results.backend, task_request("entry-id", is_eager=True))
    for other in (Celery(backend="cache+memory://", set_as_current=False),
                  Celery(backend="redis://127.0.0.1:1/0", result_serializer="pickle", set_as_current=False),
                  Celery(backend="redis://127.0.0.1:1/0", result_compression="zlib", set_as_current=False)):
        assert not written(results.writes, other.backend, task_request("entry-id"))

    def built(**settings: str) -> bool:
        from plaud.config import PlaudConfig

        config = PlaudConfig.sandbox("http://127.0.0.1:1", user_id="u")
        return Runtime.build(PipelineSettings(**settings), config).task_results.in_records_redis

    assert built(redis_url="redis://h:6379/0")
    assert built(redis_url="redis://h:6379/0", result_backend="redis://h:6379/0")
    assert not built(redis_url="redis://h:6379/0", result_backend="redis://h:6379/1")


def test_a_stage_s_failure_is_stored_for_the_chain_and_its_retry_is_not():
    """Celery asks while it handles the exception; a poll asking again must not store a RETRY
    state, with its traceback, under a task id nobody reads."""
    from celery.exceptions import Retry

    from tasks.poll import poll

    assert poll.ignore_result and poll.store_errors_even_if_ignored  # outside any error
    for error, stored in ((Retry("again in 2 s", when=2), False), (ValueError("broken"), True)):
        try:
            raise error
        except Exception:
            assert poll.store_errors_even_if_ignored is stored
