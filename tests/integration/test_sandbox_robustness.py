"""Malformed requests, seeded faults, and load: the server answers and nothing else breaks."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import threading
import time

import pytest
import requests

from tests.helpers import complete_body


@pytest.mark.parametrize("body, code, words", [
    ({}, "PARAMS_INVALID", "file_url"),
    ({"file_url": "ftp://example/a.mp3"}, "PARAMS_INVALID", "http(s)"),
    ({"file_url": 42}, "PARAMS_INVALID", "file_url"),
    ({"file_url": "http://h/a.mp3", "params": []}, "PARAMS_INVALID", "params must be"),
    ({"file_url": "http://h/a.mp3", "params": {"transcribe": "en"}}, "PARAMS_INVALID", "params.transcribe"),
    ({"file_url": "http://h/a.mp3", "params": {"transcribe": {"model": "whisper-9000"}}}, "MODEL_INVALID",
     "whisper-9000"),
    ({"file_url": "http://h/a.mp3", "params": {"transcribe": {"language": "english!"}}}, "LANGUAGE_INVALID",
     "BCP-47"),
    ({"file_url": "http://h/a.mp3", "params": {"diarization": {"enabled": "yes"}}}, "PARAMS_INVALID",
     "diarization.enabled"),
])
def test_submit_validation(api, body, code, words):
    r = api.http.post(f"{api.base_url}/open/partner/ai/transcriptions/", json=body, headers=api.api_headers(),
                      timeout=10)
    assert (r.status_code, r.json()["code"]) == (400, code)
    assert words in r.json()["message"]
    assert api.stats()["transcriptions_created"] == 0


def test_unknown_params_are_passed_through(api, speech_mp3):
    params = {"transcribe": {"language": "auto", "model": "plaud-omni-3", "detection_level": "segment"},
              "hotwords": "fox,dog"}
    result = api.transcribe_bytes(open(speech_mp3.path, "rb").read(), params)
    assert result["status"] == "SUCCESS"


def test_get_unknown_transcription(api):
    r = api.get("task_exec_doesnotexist")
    assert (r.status_code, r.json()["code"]) == (404, "TRANSCRIPTION_NOT_FOUND")


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_malformed_json_bodies(api, raw):
    token = api.new_user_token()
    r = api.http.post(f"{api.base_url}/open/partner/files/upload/generate-presigned-urls", data=raw,
                      headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}, timeout=10)
    assert (r.status_code, r.json()["code"]) == (400, "PARAMS_INVALID")


def test_unknown_route_and_wrong_method_answer_json(api):
    r = api.http.get(f"{api.base_url}/open/partner/nothing-here", timeout=10)
    assert (r.status_code, r.json()["code"]) == (404, "NOT_FOUND")
    r = api.http.get(f"{api.base_url}/oauth/partner/access-token", timeout=10)
    assert (r.status_code, r.json()["code"]) == (405, "METHOD_NOT_ALLOWED")


def test_garbage_between_uploads_corrupts_nothing(api, configure):
    configure(chunk_size_bytes=32 * 1024)
    data = os.urandom(100_000)
    token = api.new_user_token()
    presigned = api.presign(token, len(data)).json()
    first = presigned["Parts"][0]["PresignedUrl"]
    # Noise aimed at the same upload and the server: bad signatures, aborted bodies, junk JSON.
    requests.put(first.replace("X-Amz-Signature=", "X-Amz-Signature=00"), data=b"junk" * 100, timeout=10)
    requests.put(first.rsplit("/", 1)[0] + "/99?" + first.split("?")[1], data=b"junk", timeout=10)
    api.complete(token, {"upload_id": presigned["UploadId"], "file_id": presigned["FileId"], "part_list": "x"})
    api.http.post(f"{api.base_url}/open/partner/users/access-token", data=b"\x00" * 1000, timeout=10)
    part_list = api.put_parts(presigned, data)
    done = api.complete(token, complete_body(presigned, part_list, data))
    assert done.status_code == 200 and done.json()["FileMd5"] == hashlib.md5(data).hexdigest()


def _statuses(api, n):
    out = []
    for _ in range(n):
        try:
            out.append(api.partner_token().status_code)
        except requests.ConnectionError:
            out.append("dropped")
    return out


def test_faults_are_seeded_and_repeatable(api, configure, sandbox):
    configure(fault_seed=7, fault_5xx=0.2, fault_429=0.1, fault_429_bare=0.1, fault_drop=0.1,
              token_rate_limit="")
    first = _statuses(api, 60)
    api.http.post(f"{api.origin}/_sandbox/reset", timeout=10)
    assert _statuses(api, 60) == first
    assert {500, 502, 503} & set(first) and 429 in first and "dropped" in first and 200 in first
    configure(fault_seed=8, fault_5xx=0.2, fault_429=0.1, fault_429_bare=0.1, fault_drop=0.1, token_rate_limit="")
    assert _statuses(api, 60) != first


def test_injected_429_with_and_without_retry_after(api, configure):
    configure(fault_429=1.0)
    r = api.partner_token()
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    configure(fault_429=0.0, fault_429_bare=1.0)
    r = api.partner_token()
    assert r.status_code == 429 and "Retry-After" not in r.headers


def test_injected_faults_on_storage_answer_s3_xml(api, configure):
    configure(chunk_size_bytes=1024)
    token = api.new_user_token()
    url = api.presign(token, 1000).json()["Parts"][0]["PresignedUrl"]
    configure(chunk_size_bytes=1024, fault_5xx=1.0)
    r = requests.put(url, data=b"x" * 1000, timeout=10)
    assert r.status_code >= 500 and "<Code>InternalError</Code>" in r.text


def test_injected_latency(api, configure):
    configure(fault_latency_ms=300)
    started = time.monotonic()
    assert api.partner_token().status_code == 200
    assert time.monotonic() - started >= 0.3


def test_injected_task_failure(api, configure, speech_mp3):
    configure(fault_task_failure=1.0)
    result = api.transcribe_bytes(open(speech_mp3.path, "rb").read())
    assert result["status"] == "FAILURE" and "fault injection" in result["message"]


def test_dropped_connections_are_counted(api, configure):
    configure(fault_drop=1.0)
    with pytest.raises(requests.ConnectionError):
        api.partner_token()
    assert api.stats()["requests"]["partner_token"] == {"dropped": 1}


def test_runtime_config_refuses_bad_values(api):
    for body in ({"fault_5xx": 2}, {"port": 1}, {"nonsense": 1}, {"tx_rate_limit": "fast"}):
        r = api.http.patch(f"{api.origin}/_sandbox/config", json=body, timeout=10)
        assert (r.status_code, r.json()["code"]) == (400, "PARAMS_INVALID")
    r = api.http.get(f"{api.origin}/_sandbox/config", timeout=10)
    assert r.json()["api_key"] == "***" and r.json()["secret_key"] == "***"


def test_64_concurrent_part_uploads(api):
    """64 parts of 5 MiB in flight at once: all held open together, all stored intact."""
    parts = 64
    chunk = 5 * 1024 * 1024
    data = os.urandom(1024 * 1024) * (parts * chunk // (1024 * 1024))
    token = api.new_user_token()
    presigned = api.presign(token, len(data)).json()
    assert presigned["ChunkSize"] == chunk and len(presigned["Parts"]) == parts
    everyone_started = threading.Barrier(parts, timeout=60)

    def body(number):
        piece = memoryview(data)[(number - 1) * chunk:number * chunk]
        yield bytes(piece[:65536])
        everyone_started.wait()  # each request is open on the server before any finishes
        for offset in range(65536, chunk, 1024 * 1024):
            yield bytes(piece[offset:offset + 1024 * 1024])

    def put(part):
        r = requests.put(part["PresignedUrl"], data=body(part["PartNumber"]), timeout=120)
        assert r.status_code == 200, r.text
        return {"PartNumber": part["PartNumber"], "ETag": r.headers["ETag"]}

    with concurrent.futures.ThreadPoolExecutor(parts) as pool:
        part_list = list(pool.map(put, presigned["Parts"]))
    stats = api.stats()
    assert stats["peak_concurrent_part_uploads"] == parts
    assert stats["concurrent_part_uploads"] == 0
    done = api.complete(token, complete_body(presigned, part_list, data))
    assert done.status_code == 200, done.text
    assert done.json()["FileMd5"] == hashlib.md5(data).hexdigest()
