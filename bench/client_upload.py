"""Upload a large file with the client: its peak RSS above idle, and throughput, by parallelism.

    python -m bench.client_upload --size-mib 1024 --parallel 1 4 --latency-ms 20

Each run is a fresh process (so its peak RSS is its own) uploading the same file to a sandbox
that adds ``--latency-ms`` to every request. The bound to hold: peak - idle <= 64 MiB +
ChunkSize x parallel parts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from .proc import status_kib

MIB = 1024 * 1024


def child(path: str, base_url: str, parallel: int) -> None:
    import dataclasses

    from plaud.client import PlaudClient
    from plaud.config import PlaudConfig

    client = PlaudClient(dataclasses.replace(PlaudConfig.sandbox(base_url), parallel_parts=parallel))
    client.tokens.user_token(client.config.user_id)  # warm: imports, connections, tokens
    idle = status_kib("self", "VmRSS")
    started = time.monotonic()
    result = client.upload(path)
    elapsed = time.monotonic() - started
    print(json.dumps({"idle_kib": idle, "peak_kib": status_kib("self", "VmHWM"), "seconds": elapsed,
                      "md5": result.file_md5, "parts": result.parts_sent}))


def make_file(size: int) -> str:
    fd, path = tempfile.mkstemp(prefix="bench-upload-", suffix=".mp3")
    block = b"ID3" + os.urandom(MIB - 3)
    with os.fdopen(fd, "wb") as out:
        for _ in range(size // MIB):
            out.write(block)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return

    from plaud.sandbox import SandboxProcess

    path = make_file(args.size_mib * MIB)
    try:
        with SandboxProcess("--fault-latency-ms", str(args.latency_ms), "--token-rate-limit", "") as sb:
            print(f"{args.size_mib} MiB file, sandbox adding {args.latency_ms:g} ms per request")
            for parallel in args.parallel:
                out = subprocess.run([sys.executable, "-m", "bench.client_upload", "--child", path, sb.base_url,
                                      str(parallel)], capture_output=True, text=True, check=True)
                run = json.loads(out.stdout.strip().splitlines()[-1])
                above = (run["peak_kib"] - run["idle_kib"]) / 1024
                bound = 64 + 5 * parallel
                print(f"  parallel {parallel}: {args.size_mib / run['seconds']:6.1f} MiB/s ({run['seconds']:.1f} s, "
                      f"{run['parts']} parts); RSS idle {run['idle_kib'] / 1024:.1f} MiB, peak "
                      f"{run['peak_kib'] / 1024:.1f} MiB, {above:.1f} MiB above idle (bound {bound} MiB)")
    finally:
        os.remove(path)


if __name__ == "__main__":
    main()
