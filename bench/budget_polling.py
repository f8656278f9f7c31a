"""How well the fleet spends Plaud's Transcription API budget: learned polling beside a fixed 5-s clock.

    python -m bench.budget_polling --recordings 300 --rate 600/m

Plaud allows R requests per minute for submits and polls together, so the most a fleet can do
is R/2 recordings per minute: one submit and one poll each. Every run here is the real pipeline
(one worker, all queues) against a sandbox that enforces R per minute, with processing times
from the audio (base + rtf x duration, scaled by a random +/-10 %), on a batch of recordings of
mixed length enqueued at once:

- learned, cold: the timing model starts from the workers' prior (5 s + 0.1 x audio), which
  overestimates this sandbox about threefold, and learns during the batch;
- learned, warm: a second batch, with what the first one taught kept in Redis;
- fixed 5 s: the same pipeline and limiter, polling every 5 s as Plaud's sample apps do;
- fixed 5 s, no limiter: as a client without a fleet-wide budget runs; it meets Plaud's 429s and
  backs off (``--skip-naive`` leaves it out).

Recordings per minute count from the first enqueue to the last detection. A fresh window lets
R requests through at once, so a batch of R/2 recordings with one poll each fits in under a
minute; with a larger batch (``--recordings 1200``) the rate over the middle half of the
detections is printed too, which is what the budget sustains. Detection delay is
from the moment the sandbox's task finished to the poll that saw it. Requests, 429s and the
busiest minute are counted at the sandbox.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import tempfile
import time
from typing import Any

import redis
from celery import Celery

from tasks import names

DURATIONS_S = (20, 45, 90, 180, 360, 720)
SANDBOX_TIMING = ("--processing-base-s", "2", "--processing-rtf", "0.03", "--processing-jitter", "0.1")


def q(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def _value(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")  # a state name, or a sealed field


def run_batch(label: str, *, sandbox: Any, redis_url: str, files: list[str], n: int, env: dict[str, str],
              concurrency: int, admin: Any) -> dict[str, Any]:
    from workers.local_stack import WorkerProcess

    admin(sandbox.origin, "reset", "POST")
    worker = WorkerProcess(env, concurrency=concurrency, name="budget").start()
    client = Celery(broker=redis_url, backend=redis_url)
    try:
        run = f"{re.sub('[^a-z0-9]+', '-', label)}-{time.time_ns()}"
        started = time.time()
        handles = [client.send_task(names.TRANSCRIBE, kwargs={"source": files[i % len(files)],
                                                                 "recording_id": f"{run}-{i}"})
                   for i in range(n)]
        deadline = time.monotonic() + 1800
        pending = handles
        while pending and time.monotonic() < deadline:
            pending = [h for h in pending if not h.ready()]
            time.sleep(0.2)
        failed = sum(1 for h in handles if h.ready() and h.failed())
        redis = client.backend.client
        records = []
        for i in range(n):
            fields = redis.hgetall(names.record_key(f"{run}-{i}"))
            records.append({k.decode(): _value(v) for k, v in fields.items()})
        timings = admin(sandbox.origin, "transcriptions")
        stats = admin(sandbox.origin, "stats")
        model = {k.decode(): v.decode() for k, v in redis.hgetall(names.TIMING_KEY).items()}
    finally:
        worker.stop()
    done = [r for r in records if r.get("done_seen_at")]
    last_seen = max((r["done_seen_at"] for r in done), default=float("nan"))
    delays = [r["done_seen_at"] - timings[r["transcription_id"]]["finishes_at"] for r in done
              if timings.get(r.get("transcription_id"), {}).get("finishes_at")]
    requests = {endpoint: sum(counts.values()) for endpoint, counts in stats["requests"].items()}
    rejected = sum(counts.get("429", 0) for endpoint, counts in stats["requests"].items()
                   if endpoint in ("submit_transcription", "get_transcription"))
    # The sustained rate: the middle half of the detections, free of the burst a fresh window
    # allows at the start (a batch of R/2 fits in one window with one poll each) and of the tail.
    seen = sorted(r["done_seen_at"] for r in done)
    quarter, three_quarters = seen[len(seen) // 4], seen[3 * len(seen) // 4] if seen else 0.0
    sustained = (len(seen) // 2) / (three_quarters - quarter) * 60 if len(seen) >= 400 else None
    return {"label": label, "n": n, "done": len(done), "failed": failed, "pending": len(pending),
            "makespan_s": last_seen - started, "sustained_per_min": sustained,
            "polls": [r.get("polls", 0) for r in records],
            "delays": delays, "gets": requests.get("get_transcription", 0),
            "submits": requests.get("submit_transcription", 0), "rejected_429": rejected,
            "peak_per_minute": stats["peak_tx_requests_per_minute"], "model": model}


def report(result: dict[str, Any], rate_per_min: int) -> None:
    per_min = result["done"] / result["makespan_s"] * 60 if result["done"] else 0.0
    model = result["model"]
    learned = ""
    if model.get("log_rtf"):
        learned = (f"; model now {math.exp(float(model['log_base'])):.2f} s + "
                   f"{math.exp(float(model['log_rtf'])):.4f} x audio ({model.get('hits', 0)} hits, "
                   f"{model.get('misses', 0)} misses)")
    print(f"{result['label']:<24} {result['done']:>4}/{result['n']:<4} {result['makespan_s']:7.1f} s "
          f"{per_min:7.1f} {per_min / (rate_per_min / 2):6.0%} {statistics.mean(result['polls']):6.2f} "
          f"{q(result['delays'], 0.5):6.1f} s {q(result['delays'], 0.95):6.1f} s "
          f"{result['submits']:>5} {result['gets']:>5} {result['rejected_429']:>4} {result['peak_per_minute']:>5}"
          f"{learned}")
    if result["sustained_per_min"] is not None:
        print(f"{'':<24} sustained (middle half of the detections): {result['sustained_per_min']:.1f} "
              f"recordings/min, {result['sustained_per_min'] / (rate_per_min / 2):.0%} of R/2")
    if result["failed"] or result["pending"]:
        print(f"{'':<24} failed {result['failed']}, still pending {result['pending']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=300)
    parser.add_argument("--rate", default="600/m", help="the Transcription API budget R (default 600/m)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--skip-naive", action="store_true", help="leave out fixed 5-s polling without the limiter")
    args = parser.parse_args()

    from plaud.rates import Rate
    from plaud.sandbox import SandboxProcess, admin
    from plaud.sandbox.testaudio import make_recording
    from workers.local_redis import RedisServer

    rate = Rate.parse(args.rate)
    rate_per_min = round(rate.limit * 60 / rate.period_s)
    workdir = tempfile.mkdtemp(prefix="bench-budget-")
    files = [make_recording(os.path.join(workdir, f"{d}s.mp3"), float(d), text=f"{d} seconds").path
             for d in DURATIONS_S]
    results = []
    with SandboxProcess(*SANDBOX_TIMING, "--tx-rate-limit", args.rate) as sandbox:
        base_env = {"PLAUD_BASE_URL": sandbox.base_url, "PLAUD_TX_RATE_LIMIT": args.rate}
        runs = [("learned, cold", {}, True), ("learned, warm", {}, False),
                ("fixed 5 s", {"PLAUD_POLL_FIXED_INTERVAL_S": "5"}, True)]
        if not args.skip_naive:
            runs.append(("fixed 5 s, no limiter", {"PLAUD_POLL_FIXED_INTERVAL_S": "5", "PLAUD_TX_RATE_LIMIT": ""},
                         True))
        server = None
        try:
            for label, extra, fresh_redis in runs:
                if fresh_redis:
                    if server is not None:
                        server.cleanup()
                    server = RedisServer().start()
                else:
                    # Keep what the model learned; start the limiter's window afresh, as the sandbox's.
                    connection = redis.Redis.from_url(server.url)
                    for key in connection.scan_iter(names.TX_BUDGET_PREFIX + "*"):
                        connection.delete(key)
                env = {**base_env, "REDIS_URL": server.url, **extra}
                results.append(run_batch(label, sandbox=sandbox, redis_url=server.url, files=files,
                                         n=args.recordings, env=env, concurrency=args.concurrency, admin=admin))
                print(f"  ({label}: done in {results[-1]['makespan_s']:.0f} s)", flush=True)
        finally:
            if server is not None:
                server.cleanup()
    print(f"\n{args.recordings} recordings of {', '.join(f'{d}' for d in DURATIONS_S)} s audio; sandbox processing "
          f"2 s + 0.03 x audio, +/-10 %; budget R = {rate_per_min}/min, so at most {rate_per_min // 2} recordings/min")
    print(f"{'run':<24} {'done':>9} {'makespan':>9} {'rec/min':>7} {'of R/2':>6} {'polls':>6} "
          f"{'delay p50':>8} {'p95':>8} {'submits':>5} {'gets':>5} {'429':>4} {'peak/min':>5}")
    for result in results:
        report(result, rate_per_min)


if __name__ == "__main__":
    main()
