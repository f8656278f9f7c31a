"""Waiting as data: upload slots for just-in-time uploads, and the reconciler beside the lines."""

from __future__ import annotations

import time

import fakeredis
import pytest

from tasks import names, reconcile
from tasks.records import RecordingState
from tasks.settings import PipelineSettings
from tasks.upload_slots import UploadSlots
from tests.helpers import FakeRuntime, fake_record_store


@pytest.fixture
def slots():
    return UploadSlots(fakeredis.FakeRedis(), capacity=2, stale_after_s=100)


def test_uploads_beyond_what_the_budget_can_submit_in_time_wait_in_order(slots):
    assert slots.take("a", order=1, now=1000) and slots.take("b", order=2, now=1000)
    assert not slots.take("d", order=4, now=1000) and not slots.take("c", order=3, now=1000)
    assert (slots.position("c"), slots.position("d")) == (0, 1)  # by order, not by arrival
    assert slots.take("a", order=1, now=1001)  # a slot already held is held (a redelivered upload)
    assert slots.release(now=1002) == []  # none free
    slots.done("a")  # a was submitted
    assert not slots.take("d", order=4, now=1003)  # c is first in line: d does not jump it
    assert slots.release(now=1003) == ["c"]
    assert slots.position("c") is None and slots.take("c", order=3, now=1004)  # woken: it holds its slot
    assert slots.queue().ahead == 2 and slots.queue().waiting == 1


def test_a_slot_whose_recording_vanished_frees_once_its_url_would_have_expired(slots):
    assert slots.take("a", order=1, now=1000) and slots.take("b", order=2, now=1050)
    assert not slots.take("c", order=3, now=1060)
    assert slots.release(now=1099) == []
    assert slots.release(now=1101) == ["c"]  # a's slot is stale: 100 s after it was taken


def test_the_upload_lead_must_leave_the_download_url_time_to_be_submitted():
    from plaud.errors import ConfigError

    with pytest.raises(ConfigError, match="PLAUD_UPLOAD_LEAD_S"):
        PipelineSettings(download_url_ttl_s=3600, upload_lead_s=3600)


def test_the_reconciler_leaves_waiting_recordings_to_the_dispatcher_and_revives_a_lost_wait(monkeypatch):
    sent = []
    monkeypatch.setattr(reconcile, "send_pipeline", lambda *args, **kwargs: sent.append((args[0], kwargs["start"])))
    store = fake_record_store()
    rt = FakeRuntime(store)
    now = time.time()
    for rid in ("waits-for-budget", "wait-lost"):
        store.create(rid, {"task_id": f"task-{rid}"}, due_at=now - 1)
        store.transition(rid, RecordingState.UPLOADED, {"waiting_for": "submit"}, due_at=now - 1)
    rt.in_line["waits-for-budget"] = "submit"  # still in the budget's wait list; the other's entry is gone
    assert reconcile.sweep(rt, now) == ["wait-lost"]
    assert sent == [("wait-lost", "submit")]
    assert store.redis.zscore(names.DUE_INDEX, "waits-for-budget") > now  # looked at again later
