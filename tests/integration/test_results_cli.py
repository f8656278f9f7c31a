"""plaud-workers transcribe / status / result / retry, run as a user runs them, against the pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import srt

CLI = [sys.executable, "-m", "workers.cli"]


def run(pipeline, *args, timeout=120):
    env = {**os.environ, **pipeline.env}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_transcribe_wait_with_a_failing_recording_and_exports(pipeline, good_files, tmp_path):
    good, text = good_files[0]
    out_dir = tmp_path / "subs"
    r = run(pipeline, "transcribe", good, str(tmp_path / "missing.mp3"), "--wait", "--diarize", "--format", "srt",
            "--output-dir", str(out_dir), "--timeout-s", "90")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 succeeded, 1 failed" in r.stdout
    assert "FAILED missing.mp3" in r.stdout and "no such file" in r.stdout
    written = list(out_dir.glob("*.srt"))
    assert len(written) == 1
    subtitles = list(srt.parse(written[0].read_text()))
    assert " ".join(s.content.split(": ", 1)[1] for s in subtitles) == text


def test_transcribe_without_wait_status_and_result(pipeline, good_files):
    path, text = good_files[1]
    recording_id = f"cli-{time.time_ns()}"
    r = run(pipeline, "transcribe", path, "--recording-id", recording_id)
    assert r.returncode == 0 and r.stdout.startswith(recording_id + "\t")
    deadline = time.monotonic() + 60
    while True:
        status = run(pipeline, "status", recording_id, "--json")
        assert status.returncode == 0, status.stderr
        if json.loads(status.stdout)["state"] == "SUCCEEDED":
            break
        assert time.monotonic() < deadline
        time.sleep(0.3)
    r = run(pipeline, "result", recording_id, "--format", "txt")
    assert r.returncode == 0 and r.stdout.strip() == text
    listing = run(pipeline, "status")
    assert listing.returncode == 0 and recording_id in listing.stdout and "SUCCEEDED" in listing.stdout


def test_unknown_recording_and_usage_errors(pipeline):
    assert run(pipeline, "status", "no-such-recording").returncode == 4
    assert run(pipeline, "result", "no-such-recording").returncode == 4
    r = run(pipeline, "transcribe", "a.mp3", "b.mp3", "--recording-id", "x")
    assert r.returncode == 2 and "one SOURCE" in r.stderr


def test_redis_unreachable_is_exit_5(pipeline):
    env = {**os.environ, **pipeline.env, "REDIS_URL": "redis://127.0.0.1:1/0"}
    r = subprocess.run([*CLI, "status"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 5 and "cannot reach Redis at redis://127.0.0.1:1/0" in r.stderr


def test_retry_redrives_a_failed_recording(pipeline, configure, good_files):
    path, text = good_files[2]
    recording_id = f"retry-{time.time_ns()}"
    configure(fault_task_failure=1.0)
    r = run(pipeline, "transcribe", path, "--recording-id", recording_id, "--wait", "--timeout-s", "60")
    assert r.returncode == 1 and "Plaud reported FAILURE" in r.stdout
    assert run(pipeline, "result", recording_id).returncode == 1
    configure(fault_task_failure=0.0)
    r = run(pipeline, "retry", recording_id)
    assert r.returncode == 0 and "re-driven from submit" in r.stdout, r.stdout + r.stderr
    deadline = time.monotonic() + 60
    while (state := json.loads(run(pipeline, "status", recording_id, "--json").stdout)["state"]) != "SUCCEEDED":
        assert state != "FAILED" and time.monotonic() < deadline, state
        time.sleep(0.3)
    assert run(pipeline, "result", recording_id, "--format", "txt").stdout.strip() == text
    again = run(pipeline, "retry", recording_id)
    assert again.returncode == 1 and "not FAILED" in again.stderr


def test_transcribe_with_a_tenant_and_a_priority_shows_them_in_status(pipeline, good_files):
    good, _ = good_files[9]
    r = run(pipeline, "transcribe", good, "--tenant", "acme", "--priority", "high")
    assert r.returncode == 0, r.stderr
    recording_id = r.stdout.split("\t")[0]
    shown = json.loads(run(pipeline, "status", recording_id, "--json").stdout)
    assert (shown["tenant"], shown["priority"]) == ("acme", "high")
    refused = run(pipeline, "transcribe", good, "--priority", "urgent")
    assert refused.returncode == 2 and "urgent" in refused.stderr
