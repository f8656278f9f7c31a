"""A plain client of the documented flow, written only from the API contract (docs/plaud-api.md).

It imports nothing from this project (a test checks that), so it shows what a client written
from the contract alone gets from the sandbox. It is deliberately naive: no retries, no token
cache, the whole flow in one function. The production client is ``plaud`` itself.

    PLAUD_BASE_URL=... PLAUD_CLIENT_ID=... PLAUD_SECRET_KEY=... PLAUD_API_KEY=... \\
        python -m plaud.sandbox.contract_client recording.mp3
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any

import requests

TIMEOUT_S = 30
TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}


def transcribe(path: str, *, base_url: str, client_id: str, secret_key: str, api_key: str,
               user_id: str = "contract-client", params: dict[str, Any] | None = None,
               poll_interval_s: float = 1.0, deadline_s: float = 600.0) -> dict[str, Any]:
    """Upload ``path``, submit it and poll until a terminal status; returns the last GET body."""
    http = requests.Session()

    # 1. partner token (HTTP Basic), 2. user token (Bearer partner token)
    r = http.post(f"{base_url}/oauth/partner/access-token", auth=(client_id, secret_key), timeout=TIMEOUT_S)
    r.raise_for_status()
    partner_token = r.json()["access_token"]
    r = http.post(f"{base_url}/open/partner/users/access-token",
                  headers={"Authorization": f"Bearer {partner_token}"},
                  json={"user_id": user_id, "expires_in": 86400}, timeout=TIMEOUT_S)
    r.raise_for_status()
    user_auth = {"Authorization": f"Bearer {r.json()['access_token']}"}

    # 3. presign, 4. PUT each ChunkSize slice, 5. complete with the whole file's MD5
    size = os.path.getsize(path)
    filetype = os.path.splitext(path)[1].lstrip(".").lower()
    r = http.post(f"{base_url}/open/partner/files/upload/generate-presigned-urls", headers=user_auth,
                  json={"filesize": size, "filetype": filetype}, timeout=TIMEOUT_S)
    r.raise_for_status()
    presigned = r.json()
    whole = hashlib.md5()
    part_list = []
    with open(path, "rb") as audio:
        for part in presigned["Parts"]:
            audio.seek((part["PartNumber"] - 1) * presigned["ChunkSize"])
            chunk = audio.read(presigned["ChunkSize"])
            whole.update(chunk)
            put = requests.put(part["PresignedUrl"], data=chunk, timeout=120)
            put.raise_for_status()
            part_list.append({"PartNumber": part["PartNumber"], "ETag": put.headers["ETag"].strip('"')})
    r = http.post(f"{base_url}/open/partner/files/upload/complete-upload", headers=user_auth,
                  json={"file_id": presigned["FileId"], "upload_id": presigned["UploadId"],
                        "part_list": part_list, "filetype": filetype, "file_md5": whole.hexdigest()},
                  timeout=TIMEOUT_S)
    r.raise_for_status()
    download_url = r.json()["DownloadUrl"]

    # 6. submit, 7. poll
    api_headers = {"X-Client-Id": client_id, "X-Client-Api-Key": api_key}
    body: dict[str, Any] = {"file_url": download_url}
    if params is not None:
        body["params"] = params
    r = http.post(f"{base_url}/open/partner/ai/transcriptions/", headers=api_headers, json=body, timeout=TIMEOUT_S)
    r.raise_for_status()
    transcription_id = r.json()["transcription_id"]
    give_up = time.monotonic() + deadline_s
    while True:
        r = http.get(f"{base_url}/open/partner/ai/transcriptions/{transcription_id}", headers=api_headers,
                     timeout=TIMEOUT_S)
        r.raise_for_status()
        result = r.json()
        if result["status"] in TERMINAL:
            return result
        if time.monotonic() > give_up:
            raise TimeoutError(f"{transcription_id} still {result['status']} after {deadline_s} s")
        time.sleep(poll_interval_s)


def main(argv: list[str]) -> int:
    env = os.environ
    base_url = env.get("PLAUD_BASE_URL", "http://127.0.0.1:8765/developer/api")
    client_id = env.get("PLAUD_CLIENT_ID", "sandbox-client-id")
    secret_key = env.get("PLAUD_SECRET_KEY", "sandbox-secret-key")
    api_key = env.get("PLAUD_API_KEY", "sandbox-api-key")
    for path in argv:
        result = transcribe(path, base_url=base_url, client_id=client_id, secret_key=secret_key, api_key=api_key)
        print(json.dumps({"file": path, "status": result["status"], "text": result["data"].get("text"),
                          "message": result.get("message")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
