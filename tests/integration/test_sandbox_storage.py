"""Presigned storage URLs and complete-upload's checks."""

from __future__ import annotations

import hashlib
import os
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests

from tests.helpers import complete_body

CHUNK = 64 * 1024


@pytest.fixture
def small_chunks(configure):
    configure(chunk_size_bytes=CHUNK)


@pytest.fixture
def started(api, small_chunks):
    """A started upload of 2.5 chunks: (user token, presign body, data)."""
    data = os.urandom(CHUNK * 2 + CHUNK // 2)
    token = api.new_user_token()
    r = api.presign(token, len(data))
    assert r.status_code == 200
    return token, r.json(), data


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def xml_code(response: requests.Response) -> str:
    assert response.headers["Content-Type"].startswith("application/xml")
    return response.text.split("<Code>")[1].split("</Code>")[0]


def test_presign_hands_out_one_part_per_chunk(started):
    _, presigned, data = started
    assert presigned["ChunkSize"] == CHUNK
    assert [p["PartNumber"] for p in presigned["Parts"]] == [1, 2, 3]
    assert presigned["FileId"].startswith("file_") and presigned["UploadId"].startswith("upload_")
    assert all("X-Amz-Signature=" in p["PresignedUrl"] for p in presigned["Parts"])


def test_part_put_answers_the_quoted_md5_as_etag(started):
    _, presigned, data = started
    r = requests.put(presigned["Parts"][0]["PresignedUrl"], data=data[:CHUNK], timeout=10)
    assert r.status_code == 200
    assert r.headers["ETag"] == f'"{hashlib.md5(data[:CHUNK]).hexdigest()}"'


@pytest.mark.parametrize("change, code", [
    ({"X-Amz-Signature": "0" * 64}, "SignatureDoesNotMatch"),
    ({"X-Amz-Expires": "999999"}, "SignatureDoesNotMatch"),
])
def test_tampered_part_url_is_refused_with_s3_xml(started, change, code):
    _, presigned, data = started
    r = requests.put(with_query(presigned["Parts"][0]["PresignedUrl"], **change), data=data[:CHUNK], timeout=10)
    assert r.status_code == 403 and xml_code(r) == code


def test_unsigned_part_url_is_refused(started):
    _, presigned, data = started
    url = presigned["Parts"][0]["PresignedUrl"].split("?")[0]
    r = requests.put(url, data=data[:CHUNK], timeout=10)
    assert r.status_code == 403 and xml_code(r) == "AccessDenied"


def test_a_part_url_for_another_part_is_refused(started):
    _, presigned, data = started
    url = presigned["Parts"][0]["PresignedUrl"].replace("/1?", "/2?")
    r = requests.put(url, data=data[CHUNK:2 * CHUNK], timeout=10)
    assert r.status_code == 403 and xml_code(r) == "SignatureDoesNotMatch"


def test_expired_part_url(api, configure, small_chunks):
    configure(presign_ttl_s=1)
    token = api.new_user_token()
    presigned = api.presign(token, 100).json()
    time.sleep(1.1)
    r = requests.put(presigned["Parts"][0]["PresignedUrl"], data=b"x" * 100, timeout=10)
    assert r.status_code == 403 and xml_code(r) == "AccessDenied"
    assert "expired" in r.text


def test_an_oversized_part_is_refused(started):
    _, presigned, _ = started
    r = requests.put(presigned["Parts"][0]["PresignedUrl"], data=b"x" * (CHUNK + 1), timeout=10)
    assert r.status_code == 400 and xml_code(r) == "EntityTooLarge"


def test_oversized_streamed_part_without_length_is_refused(started):
    _, presigned, _ = started
    body = (b"x" * 4096 for _ in range(CHUNK // 4096 + 2))  # chunked: no Content-Length up front
    r = requests.put(presigned["Parts"][0]["PresignedUrl"], data=body, timeout=10)
    assert r.status_code == 400 and xml_code(r) == "EntityTooLarge"


def test_complete_accepts_quoted_and_bare_etags(api, started):
    token, presigned, data = started
    part_list = api.put_parts(presigned, data)
    part_list[1]["ETag"] = part_list[1]["ETag"].strip('"')
    r = api.complete(token, complete_body(presigned, part_list, data))
    assert r.status_code == 200
    body = r.json()
    assert body["FileMd5"] == hashlib.md5(data).hexdigest() and body["FileType"] == "mp3"
    assert requests.get(body["DownloadUrl"], timeout=10).content == data


def test_a_one_part_upload_completes_after_a_refused_md5_and_serves_its_bytes(api, small_chunks):
    data = os.urandom(CHUNK // 2)
    token = api.new_user_token()
    presigned = api.presign(token, len(data)).json()
    body = complete_body(presigned, api.put_parts(presigned, data), data)
    wrong = api.complete(token, {**body, "file_md5": "0" * 32})
    assert (wrong.status_code, wrong.json()["code"]) == (400, "FILE_MD5_NOT_MATCH")
    r = api.complete(token, body)  # the part is still there to complete with
    assert r.status_code == 200 and r.json()["FileMd5"] == hashlib.md5(data).hexdigest()
    assert requests.get(r.json()["DownloadUrl"], timeout=10).content == data
    assert api.stats()["bytes_stored"] == len(data)


def test_complete_without_file_md5_is_accepted(api, started):
    token, presigned, data = started
    body = complete_body(presigned, api.put_parts(presigned, data), data)
    del body["file_md5"]
    assert api.complete(token, body).status_code == 200


def test_completing_twice_is_refused(api, started):
    token, presigned, data = started
    body = complete_body(presigned, api.put_parts(presigned, data), data)
    assert api.complete(token, body).status_code == 200
    r = api.complete(token, body)
    assert (r.status_code, r.json()["code"]) == (404, "UPLOAD_NOT_FOUND")
    late = requests.put(presigned["Parts"][0]["PresignedUrl"], data=data[:CHUNK], timeout=10)
    assert late.status_code == 404 and xml_code(late) == "NoSuchUpload"


def test_another_users_upload_cannot_be_completed(api, started):
    _, presigned, data = started
    body = complete_body(presigned, api.put_parts(presigned, data), data)
    r = api.complete(api.new_user_token("another-user"), body)
    assert (r.status_code, r.json()["code"]) == (404, "UPLOAD_NOT_FOUND")


def _complete_with(api, started, mutate):
    token, presigned, data = started
    body = complete_body(presigned, api.put_parts(presigned, data), data)
    mutate(body)
    return api.complete(token, body)


@pytest.mark.parametrize("mutate, status, code, words", [
    (lambda b: b["part_list"].pop(), 400, "FILE_UPLOAD_FAILED", "missing [3]"),
    (lambda b: b["part_list"].append({"PartNumber": 4, "ETag": "x"}), 400, "FILE_UPLOAD_FAILED", "unknown [4]"),
    (lambda b: b["part_list"].append(dict(b["part_list"][0])), 400, "FILE_UPLOAD_FAILED", "listed twice"),
    (lambda b: b["part_list"][1].update(ETag='"' + "0" * 32 + '"'), 400, "FILE_UPLOAD_FAILED", "ETag of part 2"),
    (lambda b: b.update(file_md5="0" * 32), 400, "FILE_MD5_NOT_MATCH", "does not match"),
    (lambda b: b.update(file_md5="not-an-md5"), 400, "PARAMS_INVALID", "32 hexadecimal"),
    (lambda b: b.update(filetype="opus"), 400, "FILE_TYPE_INVALID", "'mp3'"),
    (lambda b: b.update(part_list=[]), 400, "PARAMS_INVALID", "part_list"),
    (lambda b: b.update(part_list=[{"PartNumber": "1"}]), 400, "PARAMS_INVALID", "PartNumber"),
    (lambda b: b.update(upload_id="upload_nope"), 404, "UPLOAD_NOT_FOUND", "no open upload"),
    (lambda b: b.update(file_id="file_nope"), 404, "UPLOAD_NOT_FOUND", "no open upload"),
])
def test_complete_checks(api, started, mutate, status, code, words):
    r = _complete_with(api, started, mutate)
    assert (r.status_code, r.json()["code"]) == (status, code)
    assert words in r.json()["message"]


def test_complete_with_a_part_never_uploaded(api, started):
    token, presigned, data = started
    part_list = api.put_parts({**presigned, "Parts": presigned["Parts"][:2]}, data)
    part_list.append({"PartNumber": 3, "ETag": hashlib.md5(data[2 * CHUNK:]).hexdigest()})
    r = api.complete(token, complete_body(presigned, part_list, data))
    assert (r.status_code, r.json()["code"]) == (400, "FILE_UPLOAD_FAILED")
    assert "part 3 was never uploaded" in r.json()["message"]


def test_complete_with_a_short_middle_part(api, started):
    token, presigned, data = started
    part_list = api.put_parts(presigned, data)
    short = data[CHUNK:CHUNK + 100]
    r = requests.put(presigned["Parts"][1]["PresignedUrl"], data=short, timeout=10)
    part_list[1]["ETag"] = r.headers["ETag"]
    r = api.complete(token, complete_body(presigned, part_list, data))
    assert (r.status_code, r.json()["code"]) == (400, "FILE_UPLOAD_FAILED")
    assert "part 2 holds 100 bytes" in r.json()["message"]


def test_a_part_can_be_sent_again_before_complete(api, started):
    token, presigned, data = started
    requests.put(presigned["Parts"][0]["PresignedUrl"], data=b"wrong" * 100, timeout=10)
    part_list = api.put_parts(presigned, data)
    assert api.complete(token, complete_body(presigned, part_list, data)).status_code == 200


@pytest.mark.parametrize("filesize, filetype, code", [
    (0, "mp3", "PARAMS_INVALID"), (-1, "mp3", "PARAMS_INVALID"), ("100", "mp3", "PARAMS_INVALID"),
    (True, "mp3", "PARAMS_INVALID"), (100, "", "PARAMS_INVALID"), (100, None, "PARAMS_INVALID"),
    (100, "wav", "FILE_TYPE_INVALID"), (100, "m4a", "FILE_TYPE_INVALID"),
])
def test_presign_validation(api, filesize, filetype, code):
    r = api.presign(api.new_user_token(), filesize, filetype)
    assert (r.status_code, r.json()["code"]) == (400, code)


def test_presign_over_the_size_limit(api, configure):
    configure(max_file_size_bytes=1000)
    r = api.presign(api.new_user_token(), 1001)
    assert (r.status_code, r.json()["code"]) == (400, "FILE_SIZE_INVALID")


def test_accepted_filetypes_are_configurable(api, configure):
    configure(accepted_filetypes="mp3,opus,wav")
    assert api.presign(api.new_user_token(), 100, "WAV").status_code == 200


def test_download_url_expires_and_is_signed(api, configure, started):
    configure(download_ttl_s=1)
    token, presigned, data = started
    done = api.complete(token, complete_body(presigned, api.put_parts(presigned, data), data)).json()
    tampered = requests.get(with_query(done["DownloadUrl"], **{"X-Amz-Signature": "f" * 64}), timeout=10)
    assert tampered.status_code == 403 and xml_code(tampered) == "SignatureDoesNotMatch"
    time.sleep(1.1)
    expired = requests.get(done["DownloadUrl"], timeout=10)
    assert expired.status_code == 403 and "expired" in expired.text
    result = api.wait(api.submit(done["DownloadUrl"]).json()["transcription_id"])
    assert result["status"] == "FAILURE"
    assert "file_url could not be read: storage answered 403" in result["message"]
