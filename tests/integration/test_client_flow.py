"""The client against the sandbox over HTTP, with a real Redis for the shared state."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import time

import numpy as np
import pytest
import soundfile

from plaud.client import PlaudClient
from plaud.errors import BudgetSpent, NotFound, SourceError, UnsupportedAudio
from plaud.ratelimit import SAFETY_S
from plaud.rates import Rate
from plaud.transcriptions import TranscriptionStatus


def wait_done(client, transcription_id, timeout_s=30.0):
    give_up = time.monotonic() + timeout_s
    while True:
        state = client.get(transcription_id)
        if state.status.is_terminal:
            return state
        assert time.monotonic() < give_up, f"still {state.status} after {timeout_s} s"
        time.sleep(0.05)


@pytest.fixture
def client(plaud_config, redis_client):
    return PlaudClient(plaud_config, redis=redis_client)


def test_upload_submit_and_get_a_typed_transcript(client, api, speech_mp3):
    uploaded = client.upload(speech_mp3.path)
    assert uploaded.file_md5 == hashlib.md5(open(speech_mp3.path, "rb").read()).hexdigest()
    assert uploaded.filetype == "mp3" and uploaded.parts_sent == 1 and uploaded.restarts == 0
    tid = client.submit(uploaded.download_url, {"diarization": {"enabled": True}, "hotwords": "fox"})
    state = wait_done(client, tid)
    assert state.status is TranscriptionStatus.SUCCESS
    assert state.transcript.text == speech_mp3.text
    assert [s.speaker for s in state.transcript.segments][:2] == ["Speaker 1", "Speaker 2"]
    assert state.transcript.duration_s == pytest.approx(12.0, abs=0.1)


def test_parts_go_up_in_parallel_and_progress_is_reported(plaud_config, redis_client, api, configure, tmp_path):
    configure(chunk_size_bytes=64 * 1024, fault_latency_ms=50)
    data = b"ID3" + os.urandom(64 * 1024 * 10)
    path = tmp_path / "big.mp3"
    path.write_bytes(data)
    seen = []
    client = PlaudClient(plaud_config, redis=redis_client)
    uploaded = client.upload(str(path), on_progress=lambda done, total: seen.append((done, total)))
    assert uploaded.parts_sent == 11 and uploaded.file_md5 == hashlib.md5(data).hexdigest()
    assert seen[0] == (0, len(data)) and seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert api.stats()["peak_concurrent_part_uploads"] == 4


def test_wav_is_transcoded_to_mp3_and_bytes_saved_reported(client, tmp_path):
    wav = tmp_path / "voice.wav"
    t = np.arange(16000 * 5) / 16000
    soundfile.write(str(wav), (0.3 * np.sin(2 * np.pi * 200 * t)).astype("float32"), 16000)
    uploaded = client.upload(str(wav))
    assert uploaded.filetype == "mp3"
    assert uploaded.transcoded.via == "lame" and uploaded.transcoded.bytes_saved > 0
    state = wait_done(client, client.submit(uploaded.download_url))
    assert state.status is TranscriptionStatus.SUCCESS
    assert state.transcript.duration_s == pytest.approx(5.0, abs=0.2)


def test_m4a_without_ffmpeg_names_the_fix(plaud_config, redis_client, tmp_path):
    config = dataclasses.replace(plaud_config, ffmpeg_path="/nonexistent/ffmpeg")
    m4a = tmp_path / "phone.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + os.urandom(4000))
    with pytest.raises(UnsupportedAudio, match="install ffmpeg"):
        PlaudClient(config, redis=redis_client).upload(str(m4a))


@pytest.mark.parametrize("make, words", [
    (lambda d: str(d / "missing.mp3"), "no such file"),
    (lambda d: str(d), "is a directory"),
    (lambda d: (d / "empty.mp3").write_bytes(b"") or str(d / "empty.mp3"), "is empty"),
    (lambda d: "ftp://example.org/a.mp3", "unsupported URL scheme 'ftp'"),
])
def test_bad_sources_fail_with_a_reason(client, tmp_path, make, words):
    with pytest.raises(SourceError, match=words):
        client.upload(make(tmp_path))


def test_bytes_that_are_not_audio(client, tmp_path):
    path = tmp_path / "notes.mp3"
    path.write_bytes(b"Dear diary, today I uploaded a text file." * 50)
    with pytest.raises(UnsupportedAudio, match="not audio"):
        client.upload(str(path))


def test_unreadable_file(client, tmp_path):
    if os.geteuid() == 0:  # root reads anything: make it unreadable another way
        path = tmp_path / "dangling.mp3"
        path.symlink_to(tmp_path / "nowhere")
        with pytest.raises(SourceError, match="no such file"):
            client.upload(str(path))
        return
    path = tmp_path / "locked.mp3"
    path.write_bytes(b"ID3" + b"x" * 100)
    path.chmod(0)
    with pytest.raises(SourceError, match="cannot be read"):
        client.upload(str(path))


def test_upload_from_an_open_stream(client, speech_mp3):
    data = open(speech_mp3.path, "rb").read()
    uploaded = client.upload(io.BytesIO(data), size=len(data))
    assert uploaded.file_md5 == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("suffix", ["", ".chunked"])
def test_upload_from_a_url_with_and_without_content_length(client, file_server, speech_mp3, suffix):
    directory, origin = file_server
    data = open(speech_mp3.path, "rb").read()
    (directory / "remote.mp3").write_bytes(data)
    uploaded = client.upload(f"{origin}/remote.mp3{suffix}?sig=secret")
    assert uploaded.file_md5 == hashlib.md5(data).hexdigest() and uploaded.filesize == len(data)


def test_a_url_that_404s(client, file_server):
    _, origin = file_server
    with pytest.raises(SourceError, match="answered HTTP 404") as info:
        client.upload(f"{origin}/nothing.mp3?X-Amz-Signature=abc")
    assert "abc" not in str(info.value)


def test_fleet_wide_budget_is_shared_through_redis(plaud_config, redis_client, api):
    # Unpaced: the window's limit itself is what this shows (paced, 3/min would send one every 20 s).
    config = dataclasses.replace(plaud_config, tx_rate_limit=Rate(3, 60), tx_pace_slices=1)
    first, second = PlaudClient(config, redis=redis_client), PlaudClient(config, redis=redis_client)
    for client in (first, second, first):
        with pytest.raises(NotFound, match="TRANSCRIPTION_NOT_FOUND"):
            client.get("task_exec_unknown")
    with pytest.raises(BudgetSpent) as info:
        second.get("task_exec_unknown")
    assert 0 < info.value.retry_after_s <= 60 + SAFETY_S  # the window is a safety margin longer
    assert api.stats()["requests"]["get_transcription"] == {"404": 3}
