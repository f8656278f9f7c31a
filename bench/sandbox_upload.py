"""Upload a large file through the sandbox and print its peak RSS and the throughput.

    python -m bench.sandbox_upload --size-mib 1024 --parallel 8

The sandbox runs as a subprocess, so its peak RSS (VmHWM) is its own. The file's bytes are
generated as they are sent (distinct per part), so the client holds no more than one slice
per part in flight either.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import time

import requests

from plaud.sandbox import SandboxProcess, admin

from .proc import status_kib

SLICE_BYTES = 256 * 1024
MIB = 1024 * 1024


def part_bytes(part_number: int, size: int):
    """Deterministic, distinct bytes for one part, produced a slice at a time."""
    seed = hashlib.sha256(str(part_number).encode()).digest() * (SLICE_BYTES // 32)
    sent = 0
    while sent < size:
        piece = seed[:min(SLICE_BYTES, size - sent)]
        sent += len(piece)
        yield piece


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    size = args.size_mib * MIB

    with SandboxProcess("--token-rate-limit", "") as sb:
        idle_kib = status_kib(sb.pid, "VmRSS")
        http = requests.Session()
        partner = http.post(f"{sb.base_url}/oauth/partner/access-token",
                            auth=("sandbox-client-id", "sandbox-secret-key"), timeout=30).json()["access_token"]
        user = http.post(f"{sb.base_url}/open/partner/users/access-token", json={"user_id": "bench-user"},
                         headers={"Authorization": f"Bearer {partner}"}, timeout=30).json()["access_token"]
        auth = {"Authorization": f"Bearer {user}"}
        presigned = http.post(f"{sb.base_url}/open/partner/files/upload/generate-presigned-urls", headers=auth,
                              json={"filesize": size, "filetype": "mp3"}, timeout=30).json()
        chunk = presigned["ChunkSize"]

        def put(part):
            n = part["PartNumber"]
            length = min(chunk, size - (n - 1) * chunk)
            r = requests.put(part["PresignedUrl"], data=part_bytes(n, length), timeout=300)
            r.raise_for_status()
            return {"PartNumber": n, "ETag": r.headers["ETag"]}

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
            part_list = list(pool.map(put, presigned["Parts"]))
        uploaded_s = time.monotonic() - started
        whole = hashlib.md5()
        for part in presigned["Parts"]:
            n = part["PartNumber"]
            for piece in part_bytes(n, min(chunk, size - (n - 1) * chunk)):
                whole.update(piece)
        done = http.post(f"{sb.base_url}/open/partner/files/upload/complete-upload", headers=auth, timeout=600,
                         json={"file_id": presigned["FileId"], "upload_id": presigned["UploadId"],
                               "part_list": part_list, "filetype": "mp3", "file_md5": whole.hexdigest()})
        done.raise_for_status()
        total_s = time.monotonic() - started
        peak_kib = status_kib(sb.pid, "VmHWM")
        stats = admin(sb.origin, "stats")

    assert done.json()["FileMd5"] == whole.hexdigest()
    print(f"uploaded {args.size_mib} MiB in {len(part_list)} parts, {args.parallel} in parallel")
    print(f"  part PUTs:            {uploaded_s:6.1f} s  {args.size_mib / uploaded_s:7.1f} MiB/s")
    print(f"  with complete-upload: {total_s:6.1f} s  {args.size_mib / total_s:7.1f} MiB/s (merge + MD5 check)")
    print(f"  sandbox RSS: idle {idle_kib / 1024:.1f} MiB, peak {peak_kib / 1024:.1f} MiB")
    print(f"  peak concurrent part uploads: {stats['peak_concurrent_part_uploads']}")


if __name__ == "__main__":
    main()
