"""10,000 recordings waiting on Plaud at once: memory of workers and Redis, lateness of polls.

    python -m bench.pipeline_in_flight --recordings 10000

The sandbox takes ``--processing-s`` per job and the workers expect exactly that (an accurate
estimate), so every recording is uploaded, submitted, and then waits in countdown hops until
its probes at 60 % and 85 % of the expected time. Reported, once every recording has had both
probes: peak RSS of the worker (main process plus pool children, summed) and of redis-server,
and how late the probes fired against their scheduled time (p50, p99).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time

import redis as redis_lib

from tasks import names

from .proc import status_kib, tree_rss_kib


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--processing-s", type=float, default=600.0)
    parser.add_argument("--malloc-arena-max", default="", help="MALLOC_ARENA_MAX for the worker ('' = glibc default)")
    args = parser.parse_args()

    from celery import Celery

    from plaud.sandbox import SandboxProcess
    from plaud.sandbox.testaudio import make_recording
    from workers.local_redis import RedisServer
    from workers.local_stack import WorkerProcess

    workdir = tempfile.mkdtemp(prefix="bench-inflight-")
    sample = make_recording(os.path.join(workdir, "short.mp3"), 5.0, text="in flight").path
    server = RedisServer().start()
    peaks = {"worker": 0, "main": 0, "redis": 0}
    stop = threading.Event()
    try:
        with SandboxProcess("--processing-base-s", str(args.processing_s), "--processing-rtf", "0",
                            "--token-rate-limit", "") as sb:
            env = {"PLAUD_BASE_URL": sb.base_url, "REDIS_URL": server.url,
                   "PLAUD_EXPECTED_BASE_S": str(args.processing_s), "PLAUD_EXPECTED_RTF": "0"}
            if args.malloc_arena_max:
                env["MALLOC_ARENA_MAX"] = args.malloc_arena_max
            worker = WorkerProcess(env, concurrency=args.concurrency, name="inflight").start()
            time.sleep(2)
            idle_kib = tree_rss_kib(worker.proc.pid)

            def sample_rss() -> None:
                while not stop.is_set():
                    peaks["worker"] = max(peaks["worker"], tree_rss_kib(worker.proc.pid))
                    peaks["main"] = max(peaks["main"], status_kib(worker.proc.pid))
                    peaks["redis"] = max(peaks["redis"], tree_rss_kib(server.proc.pid))
                    time.sleep(0.5)

            threading.Thread(target=sample_rss, daemon=True).start()
            try:
                client = Celery(broker=server.url, backend=server.url)
                run = f"inflight-{time.time_ns()}"
                started = time.monotonic()
                for i in range(args.recordings):
                    client.send_task(names.TRANSCRIBE, kwargs={"source": sample, "recording_id": f"{run}-{i}"})
                enqueued_s = time.monotonic() - started
                r = redis_lib.Redis.from_url(server.url)
                keys = [names.record_key(f"{run}-{i}") for i in range(args.recordings)]
                while True:
                    pipe = r.pipeline()
                    for key in keys:
                        pipe.hget(key, "polls")
                    probed = sum(1 for p in pipe.execute() if p is not None and int(p) >= 2)
                    if probed == args.recordings:
                        break
                    if time.monotonic() - started > args.processing_s * 3:
                        raise TimeoutError(f"only {probed} of {args.recordings} probed twice")
                    time.sleep(2)
                all_processing_s = time.monotonic() - started
                pipe = r.pipeline()
                for key in keys:
                    pipe.hmget(key, "last_poll_late_s", "polls")
                rows = pipe.execute()
                late = [float(x) for x, _ in rows if x is not None]
                polls = [int(p or 0) for _, p in rows]
                redis_memory = r.info("memory")
            finally:
                stop.set()
                worker.stop()
    finally:
        server.cleanup()
    print(f"{args.recordings} recordings in flight (sandbox processing {args.processing_s:.0f} s), one worker "
          f"(prefork, concurrency {args.concurrency}, MALLOC_ARENA_MAX={args.malloc_arena_max or 'default'})")
    print(f"  enqueued in {enqueued_s:.1f} s; every recording probed twice after {all_processing_s:.0f} s")
    print(f"  worker RSS: idle {idle_kib / 1024:.0f} MiB, peak {peaks['worker'] / 1024:.0f} MiB (main + "
          f"{args.concurrency} children), main process peak {peaks['main'] / 1024:.0f} MiB")
    print(f"  peak RSS: worker {peaks['worker'] / 1024:.0f} MiB (main + children), "
          f"redis-server {peaks['redis'] / 1024:.0f} MiB (used_memory_peak {redis_memory['used_memory_peak_human']})")
    print(f"  poll lateness: p50 {percentile(late, 0.5):.2f} s, p99 {percentile(late, 0.99):.2f} s, "
          f"max {max(late):.2f} s over {len(late)} recordings (their latest probe); polls per recording "
          f"{statistics.mean(polls):.2f}")


if __name__ == "__main__":
    main()
