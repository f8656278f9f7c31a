"""The same batch with 1, 2 and 4 worker processes: recordings per second, and nothing run twice.

    python -m bench.pipeline_scaling --recordings 60 --latency-ms 100

Each process is a worker replica of its own (``-c 1``), as replicas are added in production.
The sandbox adds ``--latency-ms`` to every request, so the work is I/O-bound like real Plaud;
every recording is a distinct file, so the sandbox's per-MD5 counters show any duplicate
upload or transcription.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from celery import Celery

from tasks import names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=60)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()

    from plaud.sandbox import SandboxProcess, admin
    from plaud.sandbox.testaudio import make_recording
    from workers.local_redis import RedisServer
    from workers.local_stack import WorkerProcess

    workdir = tempfile.mkdtemp(prefix="bench-scaling-")
    files = [make_recording(os.path.join(workdir, f"r{i}.mp3"), 4.0, seed=i, text=f"recording {i}").path
             for i in range(args.recordings)]
    print(f"{args.recordings} recordings, sandbox adding {args.latency_ms:g} ms per request, instant processing")
    for count in args.processes:
        server = RedisServer().start()
        try:
            with SandboxProcess("--fault-latency-ms", str(args.latency_ms), "--processing-base-s", "0",
                                "--processing-rtf", "0", "--token-rate-limit", "") as sb:
                env = {"PLAUD_BASE_URL": sb.base_url, "REDIS_URL": server.url, "PLAUD_EXPECTED_BASE_S": "0.2",
                       "PLAUD_EXPECTED_RTF": "0", "PLAUD_POLL_MIN_INTERVAL_S": "0.2"}
                workers = [WorkerProcess(env, concurrency=1, name=f"scale{count}-{i}").start() for i in range(count)]
                try:
                    client = Celery(broker=server.url, backend=server.url)
                    started = time.monotonic()
                    handles = [client.send_task(names.TRANSCRIBE, kwargs={"source": path})
                               for path in files]
                    while not all(h.ready() for h in handles):
                        if time.monotonic() - started > 1800:
                            raise TimeoutError("batch did not finish")
                        time.sleep(0.1)
                    elapsed = time.monotonic() - started
                    failed = sum(1 for h in handles if h.failed())
                    stats = admin(sb.origin, "stats")
                finally:
                    for worker in workers:
                        worker.stop()
        finally:
            server.cleanup()
        per_md5 = stats["transcriptions_per_md5"]
        twice = sum(1 for n in per_md5.values() if n > 1)
        print(f"  {count} process(es): {args.recordings / elapsed:5.2f} recordings/s ({elapsed:.1f} s), failed "
              f"{failed}, uploads {stats['uploads_completed']}, transcriptions {stats['transcriptions_created']}, "
              f"files transcribed twice {twice}")


if __name__ == "__main__":
    main()
