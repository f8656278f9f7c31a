"""Pipeline throughput on one host, beside a no-op chain of the same length, in the same run.

    python -m bench.pipeline_throughput --recordings 500 --concurrency 8

A private redis-server, a sandbox subprocess with near-instant processing, and one worker
(``--pool``, all queues). Recordings are enqueued by name from a bare Celery client; the run
ends when every result is in. The baseline sends chains of 4 no-op tasks (the pipeline's
upload, submit, poll, deliver) plus an entry task, through the same worker and queues.
Per recording (and per no-op chain) it also reports the Redis commands the server ran
(INFO commandstats, every client: workers, the dispatcher and the enqueuing client; a command a
Lua script runs counts as one), the HTTP requests the sandbox answered, and the CPU each process
used (from /proc: the worker's main process and its pool, the sandbox, redis-server and this
client), since all of them share the host's cores; and the CPU ratio with the sandbox's share
left out, since Plaud answers from its own machines in production.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

from celery import Celery, chain
from celery.states import READY_STATES

from bench.proc import cpu_s, pool_cpu_s
from bench.sandbox_storage import KINDS, sandbox_storage
from tasks import names


def wait_all(backend, handles, timeout_s: float) -> float:
    """When every result is in. One MGET of the pending results per pass: asking each handle would
    be a round trip per result every pass, CPU this client would take from the workers (more
    from the slower of the two runs, skewing their ratio)."""
    deadline = time.monotonic() + timeout_s
    pending = [backend.get_key_for_task(h.id) for h in handles]
    while pending:
        found = backend.client.mget(pending)
        pending = [key for key, raw in zip(pending, found, strict=True)
                   if raw is None or json.loads(raw)["status"] not in READY_STATES]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} still pending")
        if pending:
            time.sleep(0.1)
    return time.monotonic()


def redis_commands(connection) -> int:
    return sum(int(stats["calls"]) for stats in connection.info("commandstats").values())


def http_requests(stats: dict) -> int:
    return sum(sum(by_status.values()) for by_status in stats["requests"].values())


def cpu_by_process(worker_pid: int, sandbox_pid: int, redis_pid: int) -> dict[str, float]:
    """CPU seconds used so far: the worker's main process, its pool, the sandbox, Redis, this client."""
    return {"worker main": cpu_s(worker_pid), "worker pool": pool_cpu_s(worker_pid),
            "sandbox": cpu_s(sandbox_pid) + pool_cpu_s(sandbox_pid), "redis": cpu_s(redis_pid), "client": cpu_s()}


def per_item_ms(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {name: (after[name] - before[name]) / n * 1000 for name in before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--sandbox-storage", choices=KINDS, default="memory",
                        help="where the sandbox keeps uploads (bench/sandbox_storage.py)")
    args = parser.parse_args()

    from plaud.sandbox import SandboxProcess, admin
    from plaud.sandbox.testaudio import make_recording
    from workers.local_redis import RedisServer
    from workers.local_stack import WorkerProcess

    workdir = tempfile.mkdtemp(prefix="bench-throughput-")
    sample = make_recording(os.path.join(workdir, "short.mp3"), 5.0, text="throughput").path
    server = RedisServer().start()
    try:
        with sandbox_storage(args.sandbox_storage) as storage, \
                SandboxProcess("--processing-base-s", "0", "--processing-rtf", "0", "--token-rate-limit", "",
                               *storage) as sb:
            env = {"PLAUD_BASE_URL": sb.base_url, "REDIS_URL": server.url, "PLAUD_EXPECTED_BASE_S": "0.2",
                   "PLAUD_EXPECTED_RTF": "0", "PLAUD_POLL_MIN_INTERVAL_S": "0.2"}
            worker = WorkerProcess(env, concurrency=args.concurrency, pool=args.pool, name="bench",
                                   extra_args=("-I", "bench.noop_tasks")).start()
            try:
                client = Celery(broker=server.url, backend=server.url)
                client.conf.task_routes = {"bench.noop": {"queue": names.API_QUEUE}}
                counter = client.backend.client
                assert worker.proc is not None and sb.proc is not None and server.proc is not None
                pids = (worker.proc.pid, sb.proc.pid, server.proc.pid)
                # Baseline: entry + a 4-task chain of no-ops per item.
                cpu_before = cpu_by_process(*pids)
                commands_before = redis_commands(counter)
                started = time.monotonic()
                noops = [chain(*(client.signature("bench.noop", immutable=True) for _ in range(5))).apply_async()
                         for _ in range(args.recordings)]
                noop_s = wait_all(client.backend, noops, 600) - started
                noop_commands = redis_commands(counter) - commands_before
                noop_cpu = per_item_ms(cpu_before, cpu_by_process(*pids), args.recordings)
                cpu_before = cpu_by_process(*pids)
                http_before = http_requests(admin(sb.origin, "stats"))
                commands_before = redis_commands(counter)

                started = time.monotonic()
                run = f"bench-{time.time_ns()}"
                handles = [client.send_task(names.TRANSCRIBE, kwargs={"source": sample,
                                                                         "recording_id": f"{run}-{i}"})
                           for i in range(args.recordings)]
                pipeline_s = wait_all(client.backend, handles, 1800) - started
                pipeline_commands = redis_commands(counter) - commands_before
                pipeline_cpu = per_item_ms(cpu_before, cpu_by_process(*pids), args.recordings)
                failed = sum(1 for h in handles if h.failed())
                stats = admin(sb.origin, "stats")
                pipeline_http = http_requests(stats) - http_before
                polls = [int(client.backend.client.hget(names.record_key(f"{run}-{i}"), "polls") or 0)
                         for i in range(args.recordings)]
            finally:
                worker.stop()
    finally:
        server.cleanup()
    n = args.recordings
    print(f"{n} recordings, one worker ({args.pool}, concurrency {args.concurrency}), 2-core host, "
          f"the sandbox's uploads on {args.sandbox_storage}")
    print(f"  pipeline: {n / pipeline_s:6.1f} recordings/s ({pipeline_s:.1f} s), failed {failed}, "
          f"polls/recording {statistics.mean(polls):.2f}")
    print(f"  no-op chain of 5 tasks: {n / noop_s:6.1f} chains/s ({noop_s:.1f} s)")
    print(f"  pipeline / no-op ceiling: {noop_s / pipeline_s:.0%}")
    print(f"  Redis commands per recording {pipeline_commands / n:.1f} (per no-op chain {noop_commands / n:.1f}); "
          f"HTTP requests per recording {pipeline_http / n:.1f}")
    for label, cpu in (("recording", pipeline_cpu), ("no-op chain", noop_cpu)):
        print(f"  CPU per {label}: {sum(cpu.values()):.1f} ms (" +
              ", ".join(f"{name} {ms:.1f}" for name, ms in cpu.items()) + ")")
    # The sandbox stands in for Plaud, whose CPU is not on the workers' hosts in production.
    ours = sum(pipeline_cpu.values()) - pipeline_cpu["sandbox"]
    print(f"  no-op chain's CPU / the recording's without the sandbox's: {sum(noop_cpu.values()) / ours:.0%}")
    print(f"  sandbox: {stats['uploads_completed']} uploads, {stats['transcriptions_created']} transcriptions, "
          f"{stats['partner_tokens_issued']} partner token(s)")


if __name__ == "__main__":
    main()
