"""Many processes uploading at once share one partner token through Redis.

    python -m bench.token_sharing --processes 8 --uploads 50

Starts a fresh sandbox (subprocess) and a private redis-server, runs N processes of M uploads
each, and prints the sandbox's counters: partner tokens issued should stay at 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def child(path: str, uploads: int) -> None:
    import redis

    from plaud.client import PlaudClient
    from plaud.config import PlaudConfig

    client = PlaudClient(PlaudConfig.sandbox(os.environ["PLAUD_BASE_URL"]),
                         redis=redis.Redis.from_url(os.environ["REDIS_URL"]))
    for _ in range(uploads):
        client.upload(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("path", nargs="?")
    args = parser.parse_args()
    if args.child:
        child(args.path, args.uploads)
        return

    from plaud.sandbox import SandboxProcess, admin
    from plaud.sandbox.testaudio import make_recording
    from workers.local_redis import RedisServer

    workdir = tempfile.mkdtemp(prefix="bench-token-")
    sample = make_recording(os.path.join(workdir, "sample.mp3"), 20.0, text="bench").path
    server = RedisServer().start()
    try:
        with SandboxProcess() as sb:
            env = {**os.environ, "PLAUD_BASE_URL": sb.base_url, "REDIS_URL": server.url}
            cmd = [sys.executable, "-m", "bench.token_sharing", "--child", "--uploads", str(args.uploads), sample]
            started = time.monotonic()
            procs = [subprocess.Popen(cmd, env=env) for _ in range(args.processes)]
            codes = [p.wait() for p in procs]
            elapsed = time.monotonic() - started
            stats = admin(sb.origin, "stats")
    finally:
        server.cleanup()
    print(f"{args.processes} processes x {args.uploads} uploads in {elapsed:.1f} s; exit codes {set(codes)}")
    print(f"  uploads completed:      {stats['uploads_completed']}")
    print(f"  partner tokens issued:  {stats['partner_tokens_issued']}")
    print(f"  user tokens issued:     {stats['user_tokens_issued']}")
    print(f"  partner-token requests: {stats['requests'].get('partner_token')}")


if __name__ == "__main__":
    main()
