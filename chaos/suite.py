"""A batch through the real pipeline while workers die, Redis crashes and freezes, and Plaud misbehaves.

    python -m chaos                                   # CI size: 12 good + 3 bad recordings, ~2 min
    python -m chaos --recordings 200 --enqueue-over-s 120 --fleet api:threads:8,uploads:prefork:2,polls:threads:8
    python -m chaos --redis sentinel                  # Redis behind Sentinels: the master is lost for good

The parts are real: a private redis-server writing an AOF (fsync always), a sandbox with seeded
faults (5 % 5xx, 2 % 429, 1 % dropped connections, 50 ms latency, the transcription budget
``--rate``, tight enough by default that requests wait for it as data while workers die),
worker processes split by role as compose and Kubernetes run them (by default: the API and polls
roles on thread pools, uploads on prefork), one beat (the reconciler), Flower, and a client
thread that enqueues the batch by name over a while, retrying a failed enqueue with the same
recording id, as a service should. On one timeline:

- every few seconds (seeded) a pool child or a whole worker is SIGKILLed, the workers by turns (a
  thread-pool worker has no children: it dies whole, with everything its threads ran and held);
  a dead worker is started again;
- once, Redis is SIGKILLed and restarted from its AOF; with ``--redis sentinel``, the master of a
  master, a replica and three Sentinels is SIGKILLed for good instead, and the replica takes over;
- once, Redis is frozen (SIGSTOP) for ``--freeze-s`` seconds: connections stay open and nothing
  answers, as in a network partition;
- ``--cancel`` more recordings are cancelled by name (``plaud.cancel``) once they are enqueued.

The recordings belong to two tenants, with every priority.

Then the batch drains, and the report counts: recordings enqueued, SUCCEEDED, FAILED with
reasons, never finished (lost), transcriptions the sandbox created per file (each good file
exactly once, except where the record flags a submit whose answer was lost in flight), the
longest enqueue call and its errors, and the time to drain. A secrets audit follows (see
``chaos.audit``). Exit status 0 only when every good recording SUCCEEDED, every bad one FAILED,
nothing was lost or billed twice outside that window, and the audit found nothing.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import os
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from celery.states import READY_STATES

from plaud.sandbox import SandboxProcess, admin
from plaud.sandbox.testaudio import make_recording
from tasks import names
from tasks.names import PRIORITIES
from workers.pools import ROLES, FleetMember, parse_fleet

from .audit import Needles, audit
from .stack import DurableRedis, Fleet, SentinelRedis, Service, start_flower

DEFAULT_FLEET = "api:threads:4,uploads:prefork:2,polls:threads:4"
# Short, so that what a killed worker held comes back within the run; the results wait this long.
VISIBILITY_TIMEOUT_S = 120
RESTORE_MARGIN_S = 30.0  # kombu looks for messages to restore every 10 s
NOT_SENT = "NOT SENT"  # a recording whose enqueue never went through

CLIENT_ID, SECRET_KEY, API_KEY = "chaos-client", "chaos-secret-key-7f3a9c", "chaos-api-key-51d2e8"
REDIS_PASSWORD = "chaos-redis-password-0b4c"
SENTINEL_PASSWORD = "chaos-sentinel-password-6f2a"
WEBHOOK_SECRET = "chaos-webhook-secret-3d8a"
FLOWER_USER, FLOWER_PASSWORD = "admin", "chaos-flower-password-9e1f"
SANDBOX_FAULTS = ("--fault-5xx", "0.05", "--fault-429", "0.02", "--fault-drop", "0.01", "--fault-latency-ms", "50",
                  "--processing-base-s", "1", "--processing-rtf", "0.05",
                  "--client-id", CLIENT_ID, "--secret-key", SECRET_KEY, "--api-key", API_KEY)
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclass
class Enqueued:
    recording_id: str
    source: str
    good: bool
    md5: str | None
    tenant: str = "default"
    priority: str = "normal"
    cancel: bool = False  # cancelled by name during the chaos
    cancel_sent: bool = False
    task_id: str | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    longest_call_s: float = 0.0


TENANTS = ("tenant-a", "tenant-b")


def make_batch(workdir: str, good: int, bad: int, cancelled: int, run: str) -> list[Enqueued]:
    batch = []
    for i in range(good + cancelled):
        path = make_recording(os.path.join(workdir, f"good{i}.mp3"), 3.0 + i % 4, text=f"chaos {i}", seed=i).path
        with open(path, "rb") as handle:
            md5 = hashlib.md5(handle.read()).hexdigest()
        to_cancel = i >= good
        batch.append(Enqueued(f"{run}-{'cancel' if to_cancel else 'good'}-{i}", path, True, md5,
                              tenant=TENANTS[i % 2], priority=PRIORITIES[i % 3], cancel=to_cancel))
    for i in range(bad):
        if i % 3 == 0:
            source = os.path.join(workdir, f"missing{i}.mp3")  # no such file
        elif i % 3 == 1:
            source = os.path.join(workdir, f"notaudio{i}.mp3")
            with open(source, "wb") as handle:
                handle.write(b"this is not audio " * 200)
        else:
            source = "http://127.0.0.1:9/unreachable.mp3"  # nothing listens on the discard port
        batch.append(Enqueued(f"{run}-bad-{i}", source, False, None))
    return batch


def enqueue_all(app: Any, batch: list[Enqueued], over_s: float, stop: threading.Event) -> None:
    """Send each recording by name, spread over ``over_s``; on an error, wait a second and send it again."""
    gap_s = over_s / max(len(batch), 1)
    for item in batch:
        while not stop.is_set():
            item.attempts += 1
            started = time.monotonic()
            try:
                result = app.send_task(names.TRANSCRIBE, kwargs={"source": item.source,
                                                                    "recording_id": item.recording_id,
                                                                    "tenant": item.tenant, "priority": item.priority})
                item.task_id = result.id
            except Exception as exc:  # what a caller sees when Redis is away
                item.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(1.0)
                continue
            finally:
                item.longest_call_s = max(item.longest_call_s, time.monotonic() - started)
            break
        stop.wait(gap_s)


def cancel_some(app: Any, batch: list[Enqueued]) -> list[str]:
    """Cancel by name the recordings flagged for it that are enqueued; returns what was sent."""
    sent = []
    for item in batch:
        if item.cancel and item.task_id and not item.cancel_sent:
            try:
                app.send_task(names.CANCEL, kwargs={"recording_id": item.recording_id})
            except Exception:  # Redis away: try again on the next pass
                continue
            item.cancel_sent = True
            sent.append(item.recording_id)
    return sent


def client_states(app: Any, batch: list[Enqueued]) -> dict[str, str]:
    """What each enqueuing caller sees: its entry task id's state."""
    return {item.recording_id: app.AsyncResult(item.task_id).state if item.task_id else NOT_SENT
            for item in batch}


def states(client: redis.Redis, batch: list[Enqueued]) -> dict[str, dict[str, Any]]:
    out = {}
    for item in batch:
        fields = client.hgetall(names.record_key(item.recording_id))
        record = {}
        for key, raw in fields.items():
            try:
                record[key.decode()] = json.loads(raw)
            except ValueError:
                record[key.decode()] = raw.decode(errors="replace")
        out[item.recording_id] = record
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    workdir = tempfile.mkdtemp(prefix="plaud-chaos-")
    logdir = os.path.join(workdir, "logs")
    os.makedirs(logdir)
    run_id = f"chaos{args.seed}-{time.time_ns() % 10**8}"
    batch = make_batch(workdir, args.recordings, args.bad, args.cancel, run_id)
    rng.shuffle(batch)
    server: DurableRedis | SentinelRedis = (SentinelRedis(REDIS_PASSWORD, SENTINEL_PASSWORD) if args.redis == "sentinel"
                                            else DurableRedis(REDIS_PASSWORD)).start()
    events: list[tuple[float, str]] = []
    with SandboxProcess(*SANDBOX_FAULTS, "--tx-rate-limit", args.rate, "--fault-seed", str(args.seed)) as sandbox:
        env = {"PLAUD_BASE_URL": sandbox.base_url, "REDIS_URL": server.url, "PLAUD_CLIENT_ID": CLIENT_ID,
               "PLAUD_SECRET_KEY": SECRET_KEY, "PLAUD_API_KEY": API_KEY, "PLAUD_TX_RATE_LIMIT": args.rate,
               "PLAUD_WEBHOOK_SECRET": WEBHOOK_SECRET,
               "PLAUD_EXPECTED_BASE_S": "1", "PLAUD_EXPECTED_RTF": "0.05", "PLAUD_POLL_MIN_INTERVAL_S": "1",
               # Short clocks so the reconciler acts within the run: a recording with no live stage
               # for 15 s is re-driven; leases lapse 10 s after a worker dies.
               "PLAUD_RECONCILE_EVERY_S": "5", "PLAUD_RECONCILE_GRACE_S": "15", "PLAUD_LEASE_TTL_S": "10",
               "PLAUD_POLL_HOLD_HORIZON_S": "2", "PLAUD_UPLOAD_TIME_LIMIT_S": "60", "PLAUD_API_TIME_LIMIT_S": "30",
               "PLAUD_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
               # Within the submit's time limit above: a submit rides out the 30-s freeze, not beyond.
               "PLAUD_REDIS_FAILOVER_WAIT_S": "40", **server.env}
        fleet = Fleet(env, args.fleet, logdir=logdir).start()
        beat = Service(["beat", "--loglevel", "INFO", "-s", os.path.join(workdir, "beat-schedule")], env,
                       os.path.join(logdir, "beat.log"))
        flower, flower_url = start_flower(env, logdir, FLOWER_USER, FLOWER_PASSWORD)
        # Before workers.celery_app is imported: its module-level app must not point at any other Redis.
        os.environ.update({"REDIS_URL": server.url, **server.env})
        from tasks.redis_connection import connect
        from tasks.settings import PipelineSettings
        from workers.celery_app import make_app
        settings = PipelineSettings.from_env(env)
        app = make_app(settings)  # the enqueuing client follows a failover too
        stop = threading.Event()
        t0 = time.monotonic()
        enqueuer = threading.Thread(target=enqueue_all, args=(app, batch, args.enqueue_over_s, stop), daemon=True)
        enqueuer.start()
        crash_at = args.enqueue_over_s * 0.3
        freeze_at = args.enqueue_over_s * 0.6
        chaos_until = max(args.enqueue_over_s, freeze_at + args.freeze_s) + 5
        crashed = frozen = False
        next_kill = t0 + rng.uniform(args.kill_min_s, args.kill_max_s)
        try:
            while time.monotonic() - t0 < chaos_until:
                now = time.monotonic()
                if not crashed and now - t0 >= crash_at:
                    events.append((now - t0, server.crash()))
                    crashed = True
                elif not frozen and now - t0 >= freeze_at:
                    server.freeze()
                    events.append((now - t0, f"redis frozen for {args.freeze_s:g} s"))
                    time.sleep(args.freeze_s)
                    server.thaw()
                    events.append((time.monotonic() - t0, "redis thawed"))
                    frozen = True
                elif now - t0 >= args.enqueue_over_s / 2 and (cancels := cancel_some(app, batch)):
                    events.extend((now - t0, f"plaud.cancel sent for {rid}") for rid in cancels)
                elif revived := fleet.revive_dead():
                    events.extend((now - t0, what) for what in revived)
                elif now >= next_kill:
                    events.append((now - t0, "SIGKILL " + fleet.kill_one(rng)))
                    next_kill = now + rng.uniform(args.kill_min_s, args.kill_max_s)
                time.sleep(0.2)
            chaos_over = time.monotonic()
            enqueuer.join(timeout=args.drain_timeout_s)
            while any(item.cancel and not item.cancel_sent for item in batch) and \
                    time.monotonic() - chaos_over < args.drain_timeout_s:
                sent = cancel_some(app, batch)
                events.extend((time.monotonic() - t0, f"plaud.cancel sent for {rid}") for rid in sent)
                time.sleep(1.0)
            client = connect(dataclasses.replace(settings, redis_socket_timeout_s=10.0))
            deadline = time.monotonic() + args.drain_timeout_s
            while True:
                events.extend((time.monotonic() - t0, what) for what in fleet.revive_dead())
                current = states(client, batch)
                if all(r.get("state") in TERMINAL for r in current.values()) or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
            drained = time.monotonic()
            # The client's view too: each entry task id resolves (the chain's last task carries it,
            # or the recording's end writes it for a follower). A message a killed worker had
            # reserved and not yet run (a duplicate enqueue's plaud.follow, say) comes back only when
            # the broker restores it, after the visibility timeout: so wait that long for the last.
            resolved = client_states(app, batch)
            while any(state not in (*READY_STATES, NOT_SENT) for state in resolved.values()) and \
                    time.monotonic() - drained < VISIBILITY_TIMEOUT_S + RESTORE_MARGIN_S:
                events.extend((time.monotonic() - t0, what) for what in fleet.revive_dead())
                time.sleep(2.0)
                resolved = client_states(app, batch)
            results_settled_s = time.monotonic() - drained
            stats = admin(sandbox.origin, "stats")
            issued = admin(sandbox.origin, "issued")["signatures"]
            time.sleep(2)  # Flower takes in the last events
            flower_alive = flower.alive()
            report = audit(needles=Needles({"PLAUD_SECRET_KEY": SECRET_KEY, "PLAUD_API_KEY": API_KEY,
                                            "Redis password": REDIS_PASSWORD, "Flower password": FLOWER_PASSWORD,
                                            "Sentinel password": SENTINEL_PASSWORD,
                                            "PLAUD_WEBHOOK_SECRET": WEBHOOK_SECRET},
                                           issued),
                           redis_client=client, aof=server.aof_bytes(),
                           logs={os.path.basename(p): p for p in [*fleet.logs(), beat.logfile, flower.logfile,
                                                                  *server.logs()]},
                           flower_url=flower_url if flower_alive else None,
                           flower_auth=(FLOWER_USER, FLOWER_PASSWORD))
        finally:
            stop.set()
            flower.stop()
            beat.stop()
            fleet.stop()
            server.cleanup()
    summary = summarize(batch, current, resolved, stats, events, fleet.kills, report, flower_alive,
                        total_s=drained - t0, drain_s=drained - chaos_over, logdir=logdir)
    summary["redis"] = args.redis
    summary["client_results_settled_after_drain_s"] = round(results_settled_s, 1)
    if isinstance(server, SentinelRedis) and server.failover_s is not None:
        summary["failover_s"] = round(server.failover_s, 2)  # from the SIGKILL to a new master taking writes
    return summary


def summarize(batch: list[Enqueued], records: dict[str, dict[str, Any]], resolved: dict[str, str],
              stats: dict[str, Any], events: list[tuple[float, str]], kills: list[str], report: Any,
              flower_alive: bool, *, total_s: float, drain_s: float, logdir: str) -> dict[str, Any]:
    per_md5 = stats["transcriptions_per_md5"]
    to_cancel = [b for b in batch if b.cancel]
    good = [b for b in batch if b.good and not b.cancel]
    bad = [b for b in batch if not b.good]
    state = {b.recording_id: records[b.recording_id].get("state", "NO RECORD") for b in batch}
    lost_in_flight = [b.recording_id for b in good if per_md5.get(b.md5, 0) > 1
                      and records[b.recording_id].get("possible_duplicate_submit")]
    duplicates = [b.recording_id for b in good + to_cancel
                  if per_md5.get(b.md5, 0) > 1 and b.recording_id not in lost_in_flight]
    failures = collections.Counter((records[b.recording_id].get("failure") or {}).get("reason", "?")
                                   for b in batch if state[b.recording_id] == "FAILED")
    summary = {
        "enqueued": sum(1 for b in batch if b.task_id), "good": len(good), "bad": len(bad),
        "good_succeeded": sum(1 for b in good if state[b.recording_id] == "SUCCEEDED"),
        "bad_failed": sum(1 for b in bad if state[b.recording_id] == "FAILED"),
        "succeeded": sum(1 for s in state.values() if s == "SUCCEEDED"),
        "failed": sum(1 for s in state.values() if s == "FAILED"),
        "failure_reasons": dict(failures),
        "lost": sorted(r for r, s in state.items() if s not in TERMINAL),
        "client_results": dict(collections.Counter(resolved.values())),
        "transcriptions_per_good_file": dict(collections.Counter(per_md5.get(b.md5, 0) for b in good)),
        "duplicates_lost_in_flight": lost_in_flight, "duplicates_unexplained": duplicates,
        "reconciled": sum(int(records[b.recording_id].get("reconciled", 0) or 0) for b in batch),
        # Cancelled during the chaos: each ends CANCELLED (or had finished first, and says so), and
        # one cancelled before its submit created no Plaud task.
        "cancel_requested": len(to_cancel),
        "cancelled": sum(1 for b in to_cancel if state[b.recording_id] == "CANCELLED"),
        "cancel_too_late": sum(1 for b in to_cancel if state[b.recording_id] == "SUCCEEDED"),
        "cancelled_but_billed_before_submit": sorted(
            b.recording_id for b in to_cancel if state[b.recording_id] == "CANCELLED"
            and not (records[b.recording_id].get("cancelled") or {}).get("after_submit") and per_md5.get(b.md5)),
        "tenants": dict(collections.Counter(b.tenant for b in batch)),
        # Recordings that waited for the budget (or an upload slot) as data while workers died.
        "waited": sum(1 for b in batch if int(records[b.recording_id].get("waits", 0) or 0) > 0),
        "enqueue_errors": sum(len(b.errors) for b in batch),
        "enqueue_error_kinds": sorted({e.split(":")[0] for b in batch for e in b.errors}),
        "enqueue_error_example": next((e for b in batch for e in b.errors), None),
        "longest_enqueue_call_s": round(max(b.longest_call_s for b in batch), 2),
        "kills": len(kills), "whole_workers_killed": sum(1 for k in kills if k.startswith("whole")),
        "workers_exited_by_themselves": sum(1 for _, what in events if "exited by itself" in what),
        "events": [f"{t:6.1f} s  {what}" for t, what in events],
        "sandbox_faults": {endpoint: counts for endpoint, counts in stats["requests"].items()
                           if set(counts) - {"200"}},
        "flower_survived": flower_alive,
        "audit_places": report.places_checked, "audit_findings": report.findings,
        "total_s": round(total_s, 1), "drain_s": round(drain_s, 1), "logs": logdir,
    }
    summary["ok"] = (summary["good_succeeded"] == len(good) and summary["bad_failed"] == len(bad)
                     and not summary["lost"] and not duplicates and not report.findings and flower_alive
                     and summary["client_results"].get("SUCCESS", 0) == len(good) + summary["cancel_too_late"]
                     and summary["cancelled"] + summary["cancel_too_late"] == len(to_cancel)
                     and not summary["cancelled_but_billed_before_submit"])
    return summary


def fleet_arg(text: str) -> list[FleetMember]:
    try:
        return parse_fleet(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=12, help="good recordings (default 12)")
    parser.add_argument("--bad", type=int, default=3, help="recordings that must fail alone (default 3)")
    parser.add_argument("--cancel", type=int, default=2,
                        help="more good recordings, cancelled by name during the chaos (default 2)")
    parser.add_argument("--enqueue-over-s", type=float, default=30.0)
    parser.add_argument("--freeze-s", type=float, default=30.0, help="how long Redis stops answering")
    parser.add_argument("--kill-min-s", type=float, default=2.0)
    parser.add_argument("--kill-max-s", type=float, default=6.0)
    parser.add_argument("--fleet", type=fleet_arg, default=DEFAULT_FLEET,
                        help=f"the workers, role:pool:concurrency,... (roles: {', '.join(ROLES)}; default "
                             f"{DEFAULT_FLEET}: the roles and pools compose and Kubernetes run)")
    parser.add_argument("--rate", default="20/m",
                        help="the fleet's budget, enforced by the sandbox too (default 20/m: tight enough that "
                             "requests wait while workers die)")
    parser.add_argument("--drain-timeout-s", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis", choices=("durable", "sentinel"), default="durable",
                        help="durable (default): one Redis, SIGKILLed once and restarted from its AOF; sentinel: a "
                             "master, a replica and three Sentinels, and the master is SIGKILLed for good (failover)")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    summary = run(args)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text)
    return 0 if summary["ok"] else 1
