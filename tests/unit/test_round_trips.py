"""What makes a recording cheaper to carry: fewer Redis round trips, no needless Celery work.

Each step here used to be several round trips; the tests pin down that the single step does all
of what the several did, and nothing to a record it must leave alone.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tasks.names import DUE_INDEX, lease_key
from tasks.records import RecordingState
from tests.helpers import fake_record_store


@pytest.fixture
def store():
    return fake_record_store()


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


def test_a_checkpoint_writes_nothing_to_a_cancelled_recording(store):
    store.create("r1", {}, due_at=10)
    store.transition("r1", RecordingState.CANCELLED, {"cancelled": {"stage": "upload"}})
    assert store.checkpoint("r1", {"bytes_sent": 5}, due_at=99, lease_ttl_s=300) is RecordingState.CANCELLED
    assert store.get("r1").get("bytes_sent") is None and store.redis.zscore(DUE_INDEX, "r1") is None


# -- the entry task's hand-over ----------------------------------------------------------------


class Signature:
    def __init__(self) -> None:
        self.frozen_with: str | None = None
        self.sent = False

    def freeze(self, task_id: str) -> None:
        self.frozen_with = task_id

    def delay(self) -> None:
        self.sent = True


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
    assert hand_over(task, chain) == HANDED_OVER
    assert chain.frozen_with == "entry-id" and chain.sent and not replaced


@pytest.mark.parametrize("request_fields", [{"callbacks": [{"task": "x"}]}, {"errbacks": [{"task": "x"}]},
                                            {"chain": [{"task": "x"}]}, {"chord": {"task": "x"}},
                                            {"group": "g1"}, {"is_eager": True}])
def test_an_entry_celery_must_rewire_is_replaced_as_before(request_fields):
    from tasks.transcribe import hand_over

    task, replaced = entry(**request_fields)
    chain = Signature()
    assert hand_over(task, chain) == "replaced"
    assert replaced == [chain] and not chain.sent


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


# -- HTTP ---------------------------------------------------------------------------------------


def test_the_proxy_environment_is_read_once_per_origin_and_still_honoured(monkeypatch):
    import requests

    from plaud.transport import EnvironmentOnceSession

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "storage.internal")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/our-ca.pem")
    lookups = []
    real = requests.utils.get_environ_proxies
    monkeypatch.setattr(requests.utils, "get_environ_proxies",
                        lambda url, no_proxy=None: lookups.append(url) or real(url, no_proxy=no_proxy))
    session = EnvironmentOnceSession()
    ours = requests.Session()

    def settings(s: requests.Session, url: str) -> dict[str, Any]:
        return s.merge_environment_settings(url, {}, None, None, None)

    for url in ("https://api.plaud.example/a", "https://api.plaud.example/b?x=1", "https://storage.internal/p1"):
        assert settings(session, url) == settings(ours, url)  # what requests itself would use
    assert settings(session, "https://api.plaud.example/c")["proxies"]["https"] == "http://proxy.internal:3128"
    assert settings(session, "https://storage.internal/p2")["proxies"] == {}
    assert settings(session, "https://api.plaud.example/c")["verify"] == "/etc/ssl/our-ca.pem"
    assert lookups == ["https://api.plaud.example/a", "https://storage.internal/p1"]  # once per origin


def test_a_thread_pool_worker_keeps_a_connection_per_task_to_the_same_host():
    from plaud.transport import EnvironmentOnceSession
    from workers.pools import THREADS_CONCURRENCY

    session = EnvironmentOnceSession()
    for url in ("https://platform.plaud.ai/developer/api", "http://127.0.0.1:8080/"):
        # A smaller pool drops each extra connection after its request, and the next opens anew.
        assert session.get_adapter(url)._pool_maxsize >= THREADS_CONCURRENCY


def test_counters_go_up_together(store):
    store.create("r1", {}, due_at=10)
    assert store.increment_all("r1", "polls", "timing_learned") == [1, 1]
    assert store.increment_all("r1", "polls") == [2]
    assert store.increment("r1", "timing_learned") == 2


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
