"""Who gets the budget when it is scarce (tenants, priorities): the live figures.

    python -m bench.fairness                       # R = 120/min, 150 low of tenant a, then 1 high of b
    python -m bench.fairness --rate 120/m --backlog 150 --shares-each 80

One worker (all queues, -c 4, no beat) against a sandbox that enforces R and processes a job in
2 s, the workers told the same R; every recording is sent by name from a bare Celery client.

- **unloaded**: tenant b's one high-priority recording alone: its time to SUCCEEDED.
- **behind a backlog**: tenant a enqueues ``--backlog`` low-priority recordings, then, a second
  later, b the same high one: b's time to SUCCEEDED beside its unloaded time (target: within one
  budget period of it), and how long a's backlog took.
- **shares**: tenants a and b, weights 3:1 (``PLAUD_TENANT_WEIGHTS``), ``--shares-each``
  recordings each, all at once: the share of submits each got while both lines were full (after
  the last upload, until one line ran out; before that a line can run empty while its uploads
  catch up), and recordings a minute overall against R/2.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis as redis_lib

from tasks import names

from .backlog import _float, _text, log, per_minute, read_records

SANDBOX = ("--processing-base-s", "2", "--processing-rtf", "0")
AUDIO_S = 4.0


@contextmanager
def stack(rate_text: str, extra_env: dict[str, str] | None = None) -> Iterator[tuple[Any, redis_lib.Redis]]:
    """A private Redis, a sandbox enforcing ``rate_text`` and one worker told the same: (client, redis)."""
    from celery import Celery

    from plaud.sandbox import SandboxProcess
    from workers.local_redis import RedisServer
    from workers.local_stack import WorkerProcess

    server = RedisServer().start()
    try:
        with SandboxProcess(*SANDBOX, "--tx-rate-limit", rate_text) as sandbox:
            env = {"PLAUD_BASE_URL": sandbox.base_url, "REDIS_URL": server.url, "PLAUD_TX_RATE_LIMIT": rate_text,
                   **(extra_env or {})}
            worker = WorkerProcess(env, concurrency=4, name="fairness").start()
            try:
                yield Celery(broker=server.url, backend=server.url), redis_lib.Redis.from_url(server.url)
            finally:
                worker.stop()
    finally:
        server.cleanup()


def send(client: Any, sample: str, recording_id: str, tenant: str, priority: str) -> None:
    client.send_task(names.TRANSCRIBE, kwargs={"source": sample, "recording_id": recording_id, "tenant": tenant,
                                               "priority": priority})


def wait_all(r: redis_lib.Redis, ids: list[str], timeout_s: float) -> list[dict[str, bytes | None]]:
    deadline = time.time() + timeout_s
    fields = ("state", "created_at", "at_UPLOADED", "at_SUBMITTED", "at_SUCCEEDED", "tenant", "waits")
    while True:
        rows = read_records(r, ids, fields)
        if all(_text(row["state"]) in ("SUCCEEDED", "FAILED", "CANCELLED") for row in rows):
            return rows
        if time.time() > deadline:
            raise SystemExit(f"not drained after {timeout_s:.0f} s: "
                             f"{sum(_text(row['state']) == 'SUCCEEDED' for row in rows)} of {len(ids)} SUCCEEDED")
        time.sleep(0.5)


def took_s(row: dict[str, bytes | None]) -> float:
    return (_float(row["at_SUCCEEDED"]) or float("nan")) - (_float(row["created_at"]) or float("nan"))


def unloaded(rate_text: str, sample: str) -> float:
    with stack(rate_text) as (client, r):
        rid = f"alone-{time.time_ns()}"
        send(client, sample, rid, "b", "high")
        [row] = wait_all(r, [rid], 120)
    return took_s(row)


def behind_a_backlog(rate_text: str, sample: str, backlog: int) -> dict[str, Any]:
    with stack(rate_text) as (client, r):
        run = f"behind-{time.time_ns()}"
        a_ids = [f"{run}-a-{i}" for i in range(backlog)]
        started = time.time()
        for rid in a_ids:
            send(client, sample, rid, "a", "low")
        time.sleep(1.0)
        b_id = f"{run}-b"
        send(client, sample, b_id, "b", "high")
        ideal_s = (2 * backlog + 2) / per_minute(rate_text) * 60
        rows = wait_all(r, [*a_ids, b_id], max(900.0, 4 * ideal_s))
    a_done = max(_float(row["at_SUCCEEDED"]) or 0.0 for row in rows[:-1])
    return {"b_s": took_s(rows[-1]), "b_submitted_after_s": (_float(rows[-1]["at_SUBMITTED"]) or 0.0)
            - (_float(rows[-1]["created_at"]) or 0.0), "a_backlog_s": a_done - started,
            "ok": all(_text(row["state"]) == "SUCCEEDED" for row in rows)}


def shares(rate_text: str, sample: str, each: int) -> dict[str, Any]:
    with stack(rate_text, {"PLAUD_TENANT_WEIGHTS": "a=3,b=1"}) as (client, r):
        run = f"shares-{time.time_ns()}"
        ids = [f"{run}-{tenant}-{i}" for i in range(each) for tenant in ("a", "b")]
        started = time.time()
        for rid in ids:
            send(client, sample, rid, rid.split("-")[-2], "normal")
        rate = per_minute(rate_text)
        rows = wait_all(r, ids, max(900.0, 4 * (2 * len(ids)) / rate * 60))
    # The shares apply while both tenants *wait*. Early on a submit reaches the line only once its
    # upload is done, so a line may run empty for a moment and the other tenant take the slot. So:
    # the submits granted after every upload was done (both lines full), until the first ran out.
    uploads_done = max(_float(row["at_UPLOADED"]) or 0.0 for row in rows)
    waited = sorted((_float(row["at_SUBMITTED"]) or 0.0, _text(row["tenant"]) or "") for row in rows
                    if int(_float(row["waits"]) or 0) > 0)
    last = {tenant: max(t for t, who in waited if who == tenant) for tenant in ("a", "b")}
    both_until = min(last.values())
    during = [who for t, who in waited if uploads_done < t <= both_until]
    done = max(_float(row["at_SUCCEEDED"]) or 0.0 for row in rows)
    return {"share_a": during.count("a") / len(during), "share_b": during.count("b") / len(during),
            "submits_while_both_waited": len(during), "recordings_per_min": len(ids) / ((done - started) / 60),
            "half_rate_per_min": rate / 2, "ok": all(_text(row["state"]) == "SUCCEEDED" for row in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", default="120/m")
    parser.add_argument("--backlog", type=int, default=150)
    parser.add_argument("--shares-each", type=int, default=150)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    from plaud.rates import Rate
    from plaud.sandbox.testaudio import make_recording

    workdir = tempfile.mkdtemp(prefix="plaud-fairness-")
    sample = make_recording(os.path.join(workdir, "short.mp3"), AUDIO_S, text="fair shares").path
    period_s = Rate.parse(args.rate).period_s
    figures: dict[str, Any] = {"rate": args.rate}
    log("unloaded: b's high recording alone")
    figures["b_unloaded_s"] = unloaded(args.rate, sample)
    log(f"behind a backlog: {args.backlog} low of a, then b's high")
    figures["behind"] = behind_a_backlog(args.rate, sample, args.backlog)
    log(f"shares: a and b at 3:1, {args.shares_each} each")
    figures["shares"] = shares(args.rate, sample, args.shares_each)
    behind, split = figures["behind"], figures["shares"]
    print(f"\nFairness at R = {args.rate}, one worker -c 4, no beat, jobs of 2 s\n")
    print("| | |\n|---|---|")
    print(f"| b's high recording alone | {figures['b_unloaded_s']:.1f} s to SUCCEEDED |")
    print(f"| the same behind a's {args.backlog} low | {behind['b_s']:.1f} s (submitted after "
          f"{behind['b_submitted_after_s']:.1f} s); {behind['b_s'] - figures['b_unloaded_s']:.1f} s more than alone, "
          f"one budget period is {period_s:.0f} s |")
    print(f"| a's backlog | drained in {behind['a_backlog_s']:.0f} s |")
    print(f"| shares at weights 3:1 while both waited in line | a {split['share_a']:.3f}, b {split['share_b']:.3f} "
          f"(of {split['submits_while_both_waited']} submits) |")
    print(f"| recordings/min overall (shares run) | {split['recordings_per_min']:.1f} (R/2 = "
          f"{split['half_rate_per_min']:.0f}) |")
    print(f"| every recording SUCCEEDED | {behind['ok'] and split['ok']} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
