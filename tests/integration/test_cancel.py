"""Cancelling at every stage, bulk operations from the CLI, and a reused recording_id with another request."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest
import requests

from plaud.sandbox.testaudio import make_recording
from tasks import names
from tests.conftest import PipelineStack
from tests.helpers import md5, outcome, wait_until

CLI = [sys.executable, "-m", "workers.cli"]
# One Transcription API request a minute, and room to upload one recording ahead of its submit:
# whatever comes after the first recording waits, as data, long enough to be cancelled there.
TIGHT = {"PLAUD_TX_RATE_LIMIT": "1/m", "PLAUD_DOWNLOAD_URL_TTL_S": "120", "PLAUD_UPLOAD_LEAD_S": "60",
         "PLAUD_PARALLEL_PARTS": "1"}


def cli(stack, *args):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **stack.env})


def sandbox_stats(stack):
    return requests.get(stack.env["PLAUD_BASE_URL"].replace("/developer/api", "/_sandbox/stats"), timeout=10).json()


@pytest.fixture(scope="module")
def tight(sandbox_thread, tmp_path_factory):
    """A worker (no beat) under a budget of one request a minute, on a Redis of its own."""
    stack = PipelineStack(sandbox_thread, tmp_path_factory.mktemp("tight"))
    stack.env.update(TIGHT)
    stack.start_worker(extra_args=())
    yield stack
    stack.stop()


@pytest.fixture(autouse=True)
def nothing_left_live(tight):
    """Cancel whatever a test left alive (one that failed half-way): under a budget of one request a
    minute, its waiting recordings would hold the budget and the upload slot the next test needs."""
    yield
    live = [raw.decode() for raw in tight.redis.zrange(names.DUE_INDEX, 0, -1)]  # every recording not yet ended
    if live:
        cli(tight, "cancel", *live)


def test_cancel_while_waiting_for_an_upload_slot_for_budget_and_while_polling(tight, sandbox, good_files):
    run = f"cancel-{time.time_ns()}"
    files = [good_files[i][0] for i in range(3)]
    ids = [f"{run}-{i}" for i in range(3)]
    handles = [tight.send(source=f, recording_id=r, tenant="t1", priority="high", callback_task="billing.on_event")
               for f, r in zip(files, ids, strict=True)]
    # Which recording got the upload slot first is a race; then one is submitted and its poll waits
    # for the budget, one is uploaded and its submit waits, and one waits for the upload slot. Each
    # role is read from the record's state as well as what it waits for, and each must be held by
    # exactly one recording: a record read just before it moved on cannot pass for another role.

    def roles():
        records = {r: tight.record(r) for r in ids}
        submitted = [r for r, rec in records.items() if rec.get("transcription_id")]
        waits_submit = [r for r, rec in records.items()
                        if rec.get("state") == "UPLOADED" and rec.get("waiting_for") == "submit"]
        waits_upload = [r for r, rec in records.items()
                        if rec.get("state") == "QUEUED" and rec.get("waiting_for") == "upload"]
        found = (submitted, waits_submit, waits_upload)
        return [held for held, in found] if all(len(held) == 1 for held in found) else None

    first, second, third = wait_until(roles, "one submitted, one waiting for budget, one for its upload slot")
    files = [files[ids.index(r)] for r in (first, second, third)]
    handles = [handles[ids.index(r)] for r in (first, second, third)]
    # The budget holds the second's submit until a period after the first's: all of this runs well within it.
    assert time.time() - float(tight.record(first)["submitted_at"]) < 30, {r: tight.record(r) for r in ids}

    # The same request again, for the one waiting as data: this caller follows it, kept on the record.
    follower = tight.send(source=files[2], recording_id=third, tenant="t1", priority="high")
    wait_until(lambda: follower.id in tight.record(third).get("followers", ""), "the second caller follows")
    done = cli(tight, "cancel", third)
    assert done.returncode == 0 and "was cancelled at upload" in done.stdout and "no Plaud task" in done.stdout, (
        done.stdout, {r: tight.record(r) for r in ids})
    by_name = tight.client.send_task(names.CANCEL, kwargs={"recording_id": second})  # as a service would
    [answer] = outcome(by_name)
    assert answer["cancelled"] and not answer["after_submit"] and "at submit" in answer["message"]
    after = cli(tight, "cancel", first)
    assert after.returncode == 0 and "still runs and is billed" in after.stdout

    for recording_id, stage in ((first, "poll"), (second, "submit"), (third, "upload")):
        record = tight.record(recording_id)
        assert record["state"] == "CANCELLED" and json.loads(record["cancelled"])["stage"] == stage
    for handle in (*handles, follower):  # each caller's result says so, whatever was alive of its chain
        failure = outcome(handle, timeout_s=30)
        assert isinstance(failure, Exception) and "was cancelled" in str(failure)
    per_md5 = sandbox_stats(tight)["transcriptions_per_md5"]
    assert per_md5.get(md5(files[0])) == 1  # submitted before the cancel: Plaud runs it anyway
    assert md5(files[1]) not in per_md5 and md5(files[2]) not in per_md5  # no Plaud task at all
    budget = json.loads(cli(tight, "status", "--budget", "--json").stdout)
    assert budget["waiting"] == {"submit": 0, "poll": 0} and budget["uploads"]["waiting"] == 0
    again = cli(tight, "cancel", first)
    assert again.returncode == 0 and "CANCELLED already: nothing changed" in again.stdout
    # Each caller's callback task got the news, with the recording's tenant and priority.
    def event_in(raw):
        _, kwargs, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
        return kwargs["event"]

    events = [event_in(raw) for raw in tight.redis.lrange(names.CALLBACKS_QUEUE, 0, -1)]
    cancelled = [e for e in events if e["recording_id"] in ids]
    assert sorted(e["recording_id"] for e in cancelled) == sorted(ids)
    assert {(e["type"], e["tenant"], e["priority"]) for e in cancelled} == {("recording.cancelled", "t1", "high")}


def test_cancel_during_an_upload_stops_it_between_parts(tight, configure, tmp_path):
    configure(chunk_size_bytes=64 * 1024, fault_latency_ms=400)  # many small, slow parts
    path = make_recording(str(tmp_path / "long.mp3"), 300.0, seed=11, text="A long one.").path
    recording_id = f"uploading-{time.time_ns()}"
    handle = tight.send(source=path, recording_id=recording_id)
    wait_until(lambda: tight.record(recording_id).get("state") == "UPLOADING"
               and int(float(tight.record(recording_id).get("bytes_sent", 0))) > 0, "the upload under way")
    assert cli(tight, "cancel", recording_id).returncode == 0
    failure = outcome(handle, timeout_s=30)
    assert "was cancelled at upload" in str(failure)
    time.sleep(1.5)  # a part on the wire when the cancel came may still land; nothing after it
    record = tight.record(recording_id)
    stats = sandbox_stats(tight)
    assert record["state"] == "CANCELLED" and "file_id" not in record
    assert stats["uploads_completed"] == 0 and md5(path) not in stats["transcriptions_per_md5"]


def test_bulk_cancel_asks_first_then_cancels_a_tenants_live_recordings(tight, good_files):
    run = f"bulk-{time.time_ns()}"
    for i in range(3):
        tight.send(source=good_files[3 + i][0], recording_id=f"{run}-{i}", tenant=run, priority="low")
    other = tight.send(source=good_files[6][0], recording_id=f"{run}-other", tenant="someone-else")
    wait_until(lambda: all(tight.record(f"{run}-{i}").get("state") for i in range(3)), "the records")
    asked = cli(tight, "cancel", "--tenant", run)
    assert asked.returncode == 2 and "3 recording(s)" in asked.stdout and "add --yes" in asked.stderr
    assert {tight.record(f"{run}-{i}")["state"] for i in range(3)} != {"CANCELLED"}  # nothing changed
    done = cli(tight, "cancel", "--tenant", run, "--yes")
    assert done.returncode == 0, done.stderr
    assert {tight.record(f"{run}-{i}")["state"] for i in range(3)} == {"CANCELLED"}
    assert tight.record(f"{run}-other")["state"] != "CANCELLED"
    assert tight.record(f"{run}-0")["tenant"] == run and tight.record(f"{run}-0")["priority"] == "low"
    tight.client.send_task(names.CANCEL, kwargs={"recording_id": f"{run}-other"})
    assert "was cancelled" in str(outcome(other, timeout_s=30))


def test_bulk_retry_by_tenant_and_kind(pipeline, tmp_path):
    run = f"bulk-retry-{time.time_ns()}"
    handles = [pipeline.send(source=str(tmp_path / f"missing-{i}.mp3"), recording_id=f"{run}-{i}", tenant=run)
               for i in range(2)]
    for handle in handles:
        assert "no such file" in str(outcome(handle))
    env = {**os.environ, **pipeline.env}
    asked = subprocess.run([*CLI, "retry", "--failed", "--tenant", run, "--kind", "source"], capture_output=True,
                           text=True, timeout=60, env=env)
    assert asked.returncode == 2 and "2 recording(s)" in asked.stdout
    none = subprocess.run([*CLI, "retry", "--failed", "--tenant", run, "--kind", "plaud_failed", "--yes"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert none.returncode == 0 and "0 recording(s)" in none.stdout
    done = subprocess.run([*CLI, "retry", "--failed", "--tenant", run, "--kind", "source", "--since", "1h",
                           "--yes"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("re-driven from upload") == 2
    for i in range(2):
        assert int(pipeline.record(f"{run}-{i}").get("retried", 0)) == 1


def test_a_recording_id_reused_for_another_request_is_refused_naming_the_field(pipeline, good_files):
    recording_id = f"reused-{time.time_ns()}"
    first = pipeline.send(source=good_files[7][0], recording_id=recording_id)
    wait_until(lambda: pipeline.record(recording_id).get("state"), "the first request's record")
    other = pipeline.send(source=good_files[8][0], recording_id=recording_id)
    same = pipeline.send(source=good_files[7][0], recording_id=recording_id)
    refused = outcome(other)
    assert isinstance(refused, Exception) and "different request" in str(refused) and "source" in str(refused)
    assert outcome(first)["text"] == good_files[7][1] and outcome(same) == outcome(first)
    moved = outcome(pipeline.send(source=good_files[7][0], recording_id=recording_id, tenant="another"))
    assert isinstance(moved, Exception) and "tenant" in str(moved)
    assert pipeline.record(recording_id)["state"] == "SUCCEEDED"  # the first recording is untouched
