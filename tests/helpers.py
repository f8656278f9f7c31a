"""A thin, non-raising client of the sandbox for tests: every call returns the raw response."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import requests

TIMEOUT_S = 30


class SandboxApi:
    def __init__(self, base_url: str, settings: Any) -> None:
        self.base_url = base_url
        self.origin = base_url.rsplit("/developer/api", 1)[0]
        self.settings = settings
        self.http = requests.Session()

    # -- raw calls ----------------------------------------------------------------------

    def partner_token(self, auth: tuple[str, str] | None = None, **kwargs: Any) -> requests.Response:
        auth = auth or (self.settings.client_id, self.settings.secret_key)
        return self.http.post(f"{self.base_url}/oauth/partner/access-token", auth=auth, timeout=TIMEOUT_S, **kwargs)

    def user_token(self, partner_token: str, user_id: str = "test-user", **body: Any) -> requests.Response:
        return self.http.post(f"{self.base_url}/open/partner/users/access-token",
                              headers={"Authorization": f"Bearer {partner_token}"},
                              json={"user_id": user_id, **body}, timeout=TIMEOUT_S)

    def presign(self, user_token: str, filesize: Any, filetype: Any = "mp3") -> requests.Response:
        return self.http.post(f"{self.base_url}/open/partner/files/upload/generate-presigned-urls",
                              headers={"Authorization": f"Bearer {user_token}"},
                              json={"filesize": filesize, "filetype": filetype}, timeout=TIMEOUT_S)

    def complete(self, user_token: str, body: dict[str, Any]) -> requests.Response:
        return self.http.post(f"{self.base_url}/open/partner/files/upload/complete-upload",
                              headers={"Authorization": f"Bearer {user_token}"}, json=body, timeout=TIMEOUT_S)

    def submit(self, file_url: str, params: dict[str, Any] | None = None, *, api_key: str | None = None,
               client_id: str | None = None) -> requests.Response:
        body: dict[str, Any] = {"file_url": file_url}
        if params is not None:
            body["params"] = params
        return self.http.post(f"{self.base_url}/open/partner/ai/transcriptions/", json=body,
                              headers=self.api_headers(api_key, client_id), timeout=TIMEOUT_S)

    def get(self, transcription_id: str, *, api_key: str | None = None) -> requests.Response:
        return self.http.get(f"{self.base_url}/open/partner/ai/transcriptions/{transcription_id}",
                             headers=self.api_headers(api_key), timeout=TIMEOUT_S)

    def api_headers(self, api_key: str | None = None, client_id: str | None = None) -> dict[str, str]:
        return {"X-Client-Id": client_id or self.settings.client_id,
                "X-Client-Api-Key": api_key or self.settings.api_key}

    def stats(self) -> dict[str, Any]:
        return self.http.get(f"{self.origin}/_sandbox/stats", timeout=TIMEOUT_S).json()

    # -- composed steps (raise on unexpected failure) -----------------------------------

    def new_user_token(self, user_id: str = "test-user") -> str:
        partner = self.partner_token()
        assert partner.status_code == 200, partner.text
        user = self.user_token(partner.json()["access_token"], user_id)
        assert user.status_code == 200, user.text
        return user.json()["access_token"]

    def put_parts(self, presigned: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
        chunk = presigned["ChunkSize"]
        part_list = []
        for part in presigned["Parts"]:
            start = (part["PartNumber"] - 1) * chunk
            r = requests.put(part["PresignedUrl"], data=data[start:start + chunk], timeout=TIMEOUT_S)
            assert r.status_code == 200, r.text
            part_list.append({"PartNumber": part["PartNumber"], "ETag": r.headers["ETag"]})
        return part_list

    def upload_bytes(self, data: bytes, filetype: str = "mp3", user_token: str | None = None) -> dict[str, Any]:
        """The whole upload; returns the complete-upload body (with DownloadUrl)."""
        token = user_token or self.new_user_token()
        presigned = self.presign(token, len(data), filetype)
        assert presigned.status_code == 200, presigned.text
        part_list = self.put_parts(presigned.json(), data)
        done = self.complete(token, complete_body(presigned.json(), part_list, data, filetype))
        assert done.status_code == 200, done.text
        return done.json()

    def transcribe_bytes(self, data: bytes, params: dict[str, Any] | None = None,
                         timeout_s: float = 30.0) -> dict[str, Any]:
        download_url = self.upload_bytes(data)["DownloadUrl"]
        submitted = self.submit(download_url, params)
        assert submitted.status_code == 200, submitted.text
        return self.wait(submitted.json()["transcription_id"], timeout_s)

    def wait(self, transcription_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        give_up = time.monotonic() + timeout_s
        while True:
            r = self.get(transcription_id)
            assert r.status_code == 200, r.text
            if r.json()["status"] in ("SUCCESS", "FAILURE", "REVOKED"):
                return r.json()
            assert time.monotonic() < give_up, f"still {r.json()['status']} after {timeout_s} s"
            time.sleep(0.05)


def complete_body(presigned: dict[str, Any], part_list: list[dict[str, Any]], data: bytes,
                  filetype: str = "mp3") -> dict[str, Any]:
    return {"file_id": presigned["FileId"], "upload_id": presigned["UploadId"], "part_list": part_list,
            "filetype": filetype, "file_md5": hashlib.md5(data).hexdigest()}


# -- pipeline helpers ---------------------------------------------------------------------


def outcome(handle, timeout_s=60.0):
    """The result or the exception, by checking state with timeouts (never a bare get())."""
    deadline = time.monotonic() + timeout_s
    while not handle.ready():
        assert time.monotonic() < deadline, f"no result after {timeout_s} s (state {handle.state})"
        time.sleep(0.1)
    try:
        return handle.get(timeout=10)
    except Exception as exc:
        return exc


def wait_for_state(pipeline, recording_id, states, timeout_s=30.0, check=lambda r: True):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = pipeline.record(recording_id)
        if record.get("state") in states and check(record):
            return record
        time.sleep(0.05)
    raise AssertionError(f"{recording_id} never reached {states}: {pipeline.record(recording_id)}")


def wait_http_ok(url: str, timeout_s: float = 30.0, explain=lambda: "") -> None:
    """Until ``url`` answers 200 (a server still starting refuses connections)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer: {explain()}"
        time.sleep(0.3)


def fake_record_store() -> Any:
    """A record store on fakeredis, for unit tests of the Redis-backed pipeline logic."""
    import fakeredis

    from plaud.sealing import Sealer
    from tasks.records import RecordStore

    return RecordStore(fakeredis.FakeRedis(), Sealer("test-secret"), ttl_s=3600)


class FakeRuntime:
    """Just what the reconciler reads of a runtime: the store (and its Redis) and the default settings."""

    def __init__(self, store: Any) -> None:
        from tasks.settings import PipelineSettings
        from tasks.sleeping_polls import SleepingPolls

        self.store = store
        self.redis = store.redis
        self.settings = PipelineSettings()
        self.sleeping_polls = SleepingPolls(store.redis)
        self.in_line: dict[str, str] = {}  # recording id -> what it waits for in line

    def in_line_for(self, recording_id: str) -> str | None:
        return self.in_line.get(recording_id)

    def leave_lines(self, recording_id: str) -> None:
        self.in_line.pop(recording_id, None)
        self.sleeping_polls.forget(recording_id)


def wait_until(check, what: str, timeout_s: float = 30.0, step_s: float = 0.1):
    """Until ``check()`` returns something true (which it returns); fails naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(step_s)
    return found


def md5(path: str) -> str:
    """The file's MD5, as the sandbox counts transcriptions per file."""
    with open(path, "rb") as handle:
        return hashlib.md5(handle.read()).hexdigest()

