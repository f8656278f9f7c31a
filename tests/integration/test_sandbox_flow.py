"""The whole documented flow over real HTTP, and what comes back."""

from __future__ import annotations

import ast
import hashlib
import inspect
import math
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from plaud.sandbox import contract_client
from plaud.sandbox.transcripts import placeholder_text


def test_contract_client_gets_back_the_text_embedded_in_the_mp3(sandbox, speech_mp3):
    s = sandbox.settings
    result = contract_client.transcribe(speech_mp3.path, base_url=sandbox.base_url, client_id=s.client_id,
                                        secret_key=s.secret_key, api_key=s.api_key, poll_interval_s=0.05)
    assert result["status"] == "SUCCESS"
    assert result["data"]["text"] == speech_mp3.text
    assert " ".join(seg["text"] for seg in result["data"]["results"]) == speech_mp3.text


def test_contract_client_uses_no_project_code():
    tree = ast.parse(inspect.getsource(contract_client))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert not any(isinstance(node, ast.ImportFrom) and node.level > 0 for node in ast.walk(tree))
    assert imported <= {"__future__", "hashlib", "json", "os", "sys", "time", "typing", "requests"}


def test_segments_follow_the_speech_regions_and_speakers(api, speech_mp3):
    data = open(speech_mp3.path, "rb").read()
    result = api.transcribe_bytes(data, {"diarization": {"enabled": True}})
    segments = result["data"]["results"]
    assert len(segments) == len(speech_mp3.regions)
    for seg, planned in zip(segments, speech_mp3.regions, strict=False):
        assert abs(seg["start"] - planned.start_s) < 0.1
        assert abs(seg["end"] - planned.end_s) < 0.1
        assert seg["speaker_id"] == f"Speaker {planned.speaker + 1}"
        assert seg["language"] == "en" and 0 < seg["language_probability"] <= 1
    assert abs(result["data"]["duration"] - speech_mp3.duration_s) < 0.1
    assert "embeddings" not in result["data"]


def test_without_diarization_there_are_no_speaker_labels(api, speech_mp3):
    result = api.transcribe_bytes(open(speech_mp3.path, "rb").read())
    assert {seg["speaker_id"] for seg in result["data"]["results"]} == {None}


def test_embeddings_one_unit_vector_of_256_per_speaker(api, speech_mp3):
    result = api.transcribe_bytes(open(speech_mp3.path, "rb").read(),
                                  {"diarization": {"enabled": True, "return_embedding": True}})
    embeddings = result["data"]["embeddings"]
    assert sorted(embeddings) == ["Speaker 1", "Speaker 2"]
    for vector in embeddings.values():
        assert len(vector) == 256
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, abs_tol=1e-3)
    assert embeddings["Speaker 1"] != embeddings["Speaker 2"]


def test_decode_silence_adds_segments_for_the_silent_regions(api, speech_mp3):
    data = open(speech_mp3.path, "rb").read()
    plain = api.transcribe_bytes(data)["data"]["results"]
    with_silence = api.transcribe_bytes(data, {"vad": {"decode_silence": True}})["data"]["results"]
    silent = [seg for seg in with_silence if seg["text"] == ""]
    assert len(silent) >= len(speech_mp3.regions)  # the lead-in, the gaps and the tail
    assert [seg for seg in with_silence if seg["text"]] == plain


def test_untagged_audio_gets_a_placeholder_naming_its_md5(api, untagged_mp3):
    data = open(untagged_mp3.path, "rb").read()
    result = api.transcribe_bytes(data)
    assert result["data"]["text"] == placeholder_text(hashlib.md5(data).hexdigest())


def test_explicit_language_is_reported(api, speech_mp3):
    result = api.transcribe_bytes(open(speech_mp3.path, "rb").read(), {"transcribe": {"language": "ja"}})
    assert result["data"]["language"] == "ja"


def test_bytes_that_are_not_audio_end_in_failure_with_a_reason(api):
    result = api.transcribe_bytes(os.urandom(50_000))
    assert result["status"] == "FAILURE"
    assert "audio could not be decoded" in result["message"]
    assert result["data"] == {}


def test_status_moves_through_the_documented_progression(api, configure, speech_mp3):
    configure(processing_base_s=1.5)
    download_url = api.upload_bytes(open(speech_mp3.path, "rb").read())["DownloadUrl"]
    transcription_id = api.submit(download_url).json()["transcription_id"]
    seen = []
    while not seen or seen[-1] != "SUCCESS":
        status = api.get(transcription_id).json()["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
    assert seen == ["PENDING", "RECEIVED", "STARTED", "PROGRESS", "SUCCESS"]


def test_processing_time_grows_with_audio_duration(api, configure, speech_mp3):
    configure(processing_base_s=0.0, processing_rtf=0.1)  # 12 s of audio -> 1.2 s
    download_url = api.upload_bytes(open(speech_mp3.path, "rb").read())["DownloadUrl"]
    transcription_id = api.submit(download_url).json()["transcription_id"]
    assert api.get(transcription_id).json()["status"] != "SUCCESS"
    assert api.wait(transcription_id)["status"] == "SUCCESS"


@pytest.fixture
def file_server(tmp_path):
    """A plain HTTP server for audio the sandbox must download itself (a file_url not its own)."""
    handler = lambda *a, **kw: SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **kw)  # noqa: E731
    SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_file_url_elsewhere_is_downloaded(api, file_server, speech_mp3):
    directory, origin = file_server
    (directory / "remote.mp3").write_bytes(open(speech_mp3.path, "rb").read())
    transcription_id = api.submit(f"{origin}/remote.mp3").json()["transcription_id"]
    result = api.wait(transcription_id)
    assert result["status"] == "SUCCESS"
    assert result["data"]["text"] == speech_mp3.text


def test_a_file_url_that_404s_ends_in_failure(api, file_server):
    _, origin = file_server
    result = api.wait(api.submit(f"{origin}/missing.mp3").json()["transcription_id"])
    assert result["status"] == "FAILURE"
    assert result["message"] == "file_url could not be read: the server answered HTTP 404"


def test_stats_count_requests_uploads_and_transcriptions_per_file(api, speech_mp3):
    data = open(speech_mp3.path, "rb").read()
    download_url = api.upload_bytes(data)["DownloadUrl"]
    first = api.submit(download_url).json()["transcription_id"]
    api.submit(download_url)
    api.wait(first)
    stats = api.stats()
    assert stats["partner_tokens_issued"] == 1
    assert stats["user_tokens_issued"] == 1
    assert stats["uploads_completed"] == 1
    assert stats["transcriptions_created"] == 2
    assert stats["transcriptions_per_md5"] == {hashlib.md5(data).hexdigest(): 2}
    assert stats["bytes_stored"] == len(data)
    assert stats["requests"]["submit_transcription"] == {"200": 2}
    assert stats["requests"]["part_upload"] == {"200": 1}


def test_reset_clears_state(api, sandbox, speech_mp3):
    api.upload_bytes(open(speech_mp3.path, "rb").read())
    api.http.post(f"{api.origin}/_sandbox/reset", timeout=10).raise_for_status()
    stats = api.stats()
    assert stats["uploads_completed"] == 0 and stats["bytes_stored"] == 0
    assert os.listdir(os.path.join(sandbox.running.ctx.state.data_dir, "files")) == []
