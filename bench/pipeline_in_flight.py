"""10,000 recordings waiting on Plaud at once: memory of the workers and Redis, lateness of polls.

    python -m bench.pipeline_in_flight --recordings 10000
    python -m bench.pipeline_in_flight --recordings 10000 --fleet api:threads:16,uploads:prefork:2,polls:threads:16

The sandbox takes ``--processing-s`` per job and the workers expect exactly that (an accurate
estimate), so every recording is uploaded, submitted, and then waits in countdown hops until
its probes at 60 % and 85 % of the expected time. ``--fleet`` is the workers that carry them: one
per ``role:pool:concurrency`` (roles: api = celery + plaud.api, uploads, polls, all = every queue).
Reported, once every recording has had both probes: each worker's memory idle and at its peak as
PSS (shared pages split among the processes that share them, from /proc/PID/smaps_rollup, summed
over the worker's processes) beside summed RSS, the fleet's total, redis-server's, and how late the
probes fired against their scheduled time (p50, p99).
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
from workers.pools import parse_fleet

from .proc import children, pss_kib, tree_pss_kib, tree_rss_kib


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=10000)
    parser.add_argument("--fleet", default="all:prefork:8", help="role:pool:concurrency,... (see above)")
    parser.add_argument("--processing-s", type=float, default=600.0)
    parser.add_argument("--malloc-arena-max", default="", help="MALLOC_ARENA_MAX for the worker ('' = glibc default)")
    args = parser.parse_args()
    try:
        fleet = parse_fleet(args.fleet)
    except ValueError as exc:
        parser.error(str(exc))

    from celery import Celery

    from plaud.sandbox import SandboxProcess
    from plaud.sandbox.testaudio import make_recording
    from workers.local_redis import RedisServer
    from workers.local_stack import WorkerProcess

    workdir = tempfile.mkdtemp(prefix="bench-inflight-")
    sample = make_recording(os.path.join(workdir, "short.mp3"), 5.0, text="in flight").path
    server = RedisServer().start()
    peaks: dict[str, dict[str, int]] = {}
    stop = threading.Event()
    workers = []
    try:
        with SandboxProcess("--processing-base-s", str(args.processing_s), "--processing-rtf", "0",
                            "--token-rate-limit", "") as sb:
            env = {"PLAUD_BASE_URL": sb.base_url, "REDIS_URL": server.url,
                   "PLAUD_EXPECTED_BASE_S": str(args.processing_s), "PLAUD_EXPECTED_RTF": "0"}
            if args.malloc_arena_max:
                env["MALLOC_ARENA_MAX"] = args.malloc_arena_max
            for i, member in enumerate(fleet):
                worker = WorkerProcess(env, queues=member.queues, pool=member.pool, concurrency=member.concurrency,
                                       name=f"inflight-{member.role}{i}").start()
                workers.append((str(member), worker))
            time.sleep(3)
            idle = {name: (tree_pss_kib(w.proc.pid), tree_rss_kib(w.proc.pid)) for name, w in workers}
            peaks = {name: {"pss": 0, "rss": 0, "main_pss": 0} for name, _ in workers}
            peaks["redis"] = {"pss": 0, "rss": 0, "main_pss": 0}
            fleet_peak = [0]

            def sample_memory() -> None:
                while not stop.is_set():
                    total = 0
                    for name, w in workers:
                        pss = tree_pss_kib(w.proc.pid)
                        total += pss
                        peak = peaks[name]
                        peak["pss"] = max(peak["pss"], pss)
                        peak["rss"] = max(peak["rss"], tree_rss_kib(w.proc.pid))
                        peak["main_pss"] = max(peak["main_pss"], pss_kib(w.proc.pid))
                    fleet_peak[0] = max(fleet_peak[0], total)
                    peaks["redis"]["rss"] = max(peaks["redis"]["rss"], tree_rss_kib(server.proc.pid))
                    time.sleep(1.0)

            threading.Thread(target=sample_memory, daemon=True).start()
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
                        explain_stall(r, run, args.recordings)
                        raise TimeoutError(f"only {probed} of {args.recordings} probed twice")
                    # Reading every record is CPU this script takes from the fleet: not too often.
                    time.sleep(max(2.0, args.recordings / 1000))
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
                processes = {name: 1 + len(children(w.proc.pid)) for name, w in workers}
                for _, w in workers:
                    w.stop()
    finally:
        server.cleanup()
    mib = 1024
    print(f"{args.recordings} recordings in flight (sandbox processing {args.processing_s:.0f} s), fleet "
          f"{args.fleet} (MALLOC_ARENA_MAX={args.malloc_arena_max or 'default'})")
    print(f"  enqueued in {enqueued_s:.1f} s; every recording probed twice after {all_processing_s:.0f} s")
    print("  worker (role:pool:concurrency)   processes   PSS idle -> peak (main)     RSS summed idle -> peak")
    for name, _ in workers:
        peak = peaks[name]
        print(f"  {name:<32} {processes[name]:>9}   {idle[name][0] / mib:6.0f} -> {peak['pss'] / mib:5.0f} MiB "
              f"({peak['main_pss'] / mib:4.0f})   {idle[name][1] / mib:6.0f} -> {peak['rss'] / mib:5.0f} MiB")
    idle_total = sum(pss for pss, _ in idle.values())
    print(f"  fleet PSS: idle {idle_total / mib:.0f} MiB, peak {fleet_peak[0] / mib:.0f} MiB "
          f"({(fleet_peak[0] - idle_total) / args.recordings:.1f} KiB per recording in flight)")
    print(f"  redis-server RSS peak {peaks['redis']['rss'] / mib:.0f} MiB "
          f"(used_memory_peak {redis_memory['used_memory_peak_human']})")
    print(f"  poll lateness: p50 {percentile(late, 0.5):.2f} s, p99 {percentile(late, 0.99):.2f} s, "
          f"max {max(late):.2f} s over {len(late)} recordings (their latest probe); polls per recording "
          f"{statistics.mean(polls):.2f}")

def explain_stall(r: redis_lib.Redis, run: str, recordings: int) -> None:
    """Where the recordings not yet probed twice are: their states, and whether their poll sleeps,
    is queued or is held by a worker."""
    now = time.time()
    states: dict[str, int] = {}
    asleep, overdue = 0, 0
    for i in range(recordings):
        state, polls = r.hmget(names.record_key(f"{run}-{i}"), "state", "polls")
        if polls is not None and int(polls) >= 2:
            continue
        key = (state or b"?").decode()
        states[key] = states.get(key, 0) + 1
        wake_at = r.zscore(names.SLEEPING_POLLS, f"{run}-{i}")
        asleep += wake_at is not None
        overdue += wake_at is not None and wake_at < now
    print(f"  not probed twice, by state: {states}; their polls asleep {asleep} (past their wake time {overdue})")
    print("  queues: " + ", ".join(f"{q} {r.llen(q)}" for q in names.WORKER_QUEUES)
          + f"; held by workers {r.hlen(names.KOMBU_UNACKED)}")


if __name__ == "__main__":
    main()
