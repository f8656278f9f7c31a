"""Backlogs at Plaud's pace (issue 12): how fast a burst drains through the budget, and what waiting costs.

    python -m bench.backlog                                    # drain 150 + 1 at R = 120/min
    python -m bench.backlog --recordings 1200 --rate 600/m
    python -m bench.backlog --skip-drain --memory 10000 50000  # backlog memory only

Everything goes through the public contract: a bare Celery client sends ``plaud.transcribe``
by name, and the figures come from the recording records in Redis (``plaud:rec:<id>``), the
broker's lists, the sandbox's admin endpoints and ``/proc``.

**Drain.** One worker (prefork, all queues, ``--concurrency`` 4), no beat, against a sandbox
that enforces R Transcription API requests a minute and processes a job in 2 s; the workers
are told the same R (``PLAUD_TX_RATE_LIMIT``). N recordings of a few seconds are enqueued at
once, then, ``--last-after-s`` later, one more. Reported: the time until every recording is
SUCCEEDED beside the ideal ((2N + 2) requests at R a minute; and the requests the sandbox really
saw, at R), beside the window-bound ideal (a window that starts empty admits R requests at once,
so the last of Q requests can go 60 s x floor((Q - 1) / R) after the first), recordings a
minute, the busiest and the idlest full minute of requests at the sandbox while work waited
(minutes counted from the first request, up to the last), the most in any 60-s window (never
above R, or the fleet overspent), 429s, polls per recording, and how long the recording
enqueued last took. Beside them, the sparsest 60-s window while a submit still waited, with the
tasks waiting in the broker then: a budget spent in bursts (R at once, then nothing until the
window frees) makes that window sparse even when no budget is wasted, so read it with the broker
queues (granted tasks not yet run show there) and the full minutes. A run that has not drained
after ``--drain-timeout-s`` stops there and says how many finished.

**Backlog memory.** A budget of ``--memory-rate`` (1/min) so nearly everything waits, a
DownloadUrl life of ``--download-ttl-s`` and an upload lead of ``--upload-lead-s`` so only the
first few recordings upload. N recordings are enqueued; once a record exists for each and the
broker's queues (celery, plaud.api, plaud.uploads) are empty, the worker's PSS (shared pages
split, main process plus pool children, from ``/proc/PID/smaps_rollup``) is compared with its
PSS at idle, and Redis's ``used_memory`` growth is divided by N. Records say what each waits
for (``waiting_for``: upload, submit or poll). A backlog that does not settle in
``--settle-timeout-s`` (by default 300 s + 40 ms per recording) fails the run.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis as redis_lib

from tasks import names

from .proc import children, pss_kib, status_kib, tree_pss_kib, tree_rss_kib

MINUTE_S = 60.0
AUDIO_S = 4.0
DRAIN_SANDBOX = ("--processing-base-s", "2", "--processing-rtf", "0")
BROKER_QUEUES = (names.ENTRY_QUEUE, names.API_QUEUE, names.UPLOADS_QUEUE)
SAMPLED_QUEUES = (*BROKER_QUEUES, names.POLLS_QUEUE)
CHUNK = 5000  # Redis pipeline size for per-record reads


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def per_minute(rate_text: str) -> float:
    from plaud.rates import Rate

    rate = Rate.parse(rate_text)
    return rate.limit * MINUTE_S / rate.period_s


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode(errors="replace")


def _float(value: bytes | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def read_records(r: redis_lib.Redis, ids: list[str], fields: tuple[str, ...]) -> list[dict[str, bytes | None]]:
    rows: list[dict[str, bytes | None]] = []
    for start in range(0, len(ids), CHUNK):
        pipe = r.pipeline(transaction=False)
        for recording_id in ids[start:start + CHUNK]:
            pipe.hmget(names.record_key(recording_id), list(fields))
        rows += [dict(zip(fields, values, strict=True)) for values in pipe.execute()]
    return rows


def minute_extremes(times: list[float], start: float, end: float) -> tuple[int, int, float] | None:
    """The most and the fewest of ``times`` (sorted) in any window [s, s + 60) with start <= s <= end - 60,
    and the start of the (first) fewest."""
    if end - start < MINUTE_S:
        return None
    last = end - MINUTE_S
    candidates = {start, last}
    for t in times:  # counts change only when a window's edge crosses a request
        candidates.update((t, t + 1e-6, t - MINUTE_S, t - MINUTE_S + 1e-6))
    counts = [(bisect.bisect_left(times, s + MINUTE_S) - bisect.bisect_left(times, s), s)
              for s in sorted(candidates) if start <= s <= last]
    return max(counts)[0], min(counts)[0], min(counts)[1]


def sandbox_arrivals(admin: Any, origin: str) -> dict[str, Any] | None:
    """``GET /_sandbox/tx_arrivals``, or None from a sandbox that predates it."""
    import urllib.error

    try:
        return dict(admin(origin, "tx_arrivals"))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def queue_means(samples: list[tuple[float, dict[str, int]]], lo: float, hi: float,
                how: Any = statistics.mean) -> dict[str, float]:
    """Tasks waiting in each broker queue over [lo, hi): the mean (or ``how``) of the samples."""
    inside = [q for t, q in samples if lo <= t < hi]
    return {name: round(float(how(q[name] for q in inside)), 1) for name in SAMPLED_QUEUES} if inside else {}


def log_problems(text: str) -> dict[str, Any]:
    lines = text.splitlines()
    bad = [line for line in lines if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", line)]
    warnings = [line for line in lines if " WARNING" in line or "WARNING/" in line]
    return {"errors": len(bad), "warnings": len(warnings), "first_errors": bad[:5], "first_warnings": warnings[:5]}


# -- drain -----------------------------------------------------------------------------------

def run_drain(n: int, rate_text: str, *, concurrency: int, last_after_s: float, timeout_s: float | None,
              workdir: str) -> dict[str, Any]:
    from celery import Celery

    from plaud.sandbox import SandboxProcess, admin
    from plaud.sandbox.testaudio import make_recording
    from workers.local_redis import RedisServer
    from workers.local_stack import WorkerProcess

    rate = per_minute(rate_text)
    ideal_s = (2 * n + 2) / rate * MINUTE_S
    timeout_s = timeout_s or max(900.0, 4 * ideal_s)
    sample = make_recording(os.path.join(workdir, "drain.mp3"), AUDIO_S, text="a backlog").path
    server = RedisServer().start()
    try:
        with SandboxProcess(*DRAIN_SANDBOX, "--tx-rate-limit", rate_text) as sandbox:
            env = {"PLAUD_BASE_URL": sandbox.base_url, "REDIS_URL": server.url, "PLAUD_TX_RATE_LIMIT": rate_text}
            worker = WorkerProcess(env, concurrency=concurrency, name="backlog-drain").start()
            try:
                admin(sandbox.origin, "reset", "POST")
                client = Celery(broker=server.url, backend=server.url)
                run = f"drain{time.time_ns()}"
                ids = [f"{run}-{i}" for i in range(n + 1)]
                log(f"drain: enqueueing {n} recordings at R = {rate_text}, then one more {last_after_s:g} s later; "
                    f"ideal {ideal_s:.0f} s, stop after {timeout_s:.0f} s; worker log {worker.logfile}")
                started = time.time()
                for recording_id in ids[:-1]:
                    client.send_task(names.TRANSCRIBE, kwargs={"source": sample, "recording_id": recording_id})
                time.sleep(last_after_s)
                last_sent = time.time()
                client.send_task(names.TRANSCRIBE, kwargs={"source": sample, "recording_id": ids[-1]})
                r = redis_lib.Redis.from_url(server.url)
                deadline = started + timeout_s
                next_report = time.time() + 30
                queue_samples: list[tuple[float, dict[str, int]]] = []  # tasks waiting in the broker
                while True:
                    states = [_text(row["state"]) for row in read_records(r, ids, ("state",))]
                    pipe = r.pipeline(transaction=False)
                    for q in SAMPLED_QUEUES:
                        pipe.llen(q)
                    queue_samples.append((time.time(), dict(zip(SAMPLED_QUEUES, pipe.execute(), strict=True))))
                    terminal = sum(1 for s in states if s in ("SUCCEEDED", "FAILED"))
                    if terminal == len(ids) or time.time() >= deadline:
                        break
                    if time.time() >= next_report:
                        log(f"drain: {states.count('SUCCEEDED')} of {len(ids)} SUCCEEDED after "
                            f"{time.time() - started:.0f} s")
                        next_report += 30
                    time.sleep(0.5)
                stopped = time.time()
                fields = ("state", "created_at", "at_SUBMITTED", "at_PROCESSING", "at_SUCCEEDED", "polls",
                          "failure", "waiting_for")
                rows = read_records(r, ids, fields)
                stats = admin(sandbox.origin, "stats")
                arrivals = sandbox_arrivals(admin, sandbox.origin)
                queues = {q: int(r.llen(q)) for q in (*BROKER_QUEUES, names.POLLS_QUEUE)}
                unacked = int(r.hlen(names.KOMBU_UNACKED))
            finally:
                worker.stop()
            problems = log_problems(worker.log_text())
    finally:
        server.cleanup()
    return drain_figures(n=n, rate_text=rate_text, rate=rate, ideal_s=ideal_s, timeout_s=timeout_s, started=started,
                         stopped=stopped, last_sent=last_sent, rows=rows, stats=stats, arrivals=arrivals,
                         queues=queues, unacked=unacked, problems=problems, logfile=worker.logfile,
                         concurrency=concurrency, queue_samples=queue_samples)


def drain_figures(*, n: int, rate_text: str, rate: float, ideal_s: float, timeout_s: float, started: float,
                  stopped: float, last_sent: float, rows: list[dict[str, bytes | None]], stats: dict[str, Any],
                  arrivals: dict[str, Any] | None, queues: dict[str, int], unacked: int, problems: dict[str, Any],
                  logfile: str, concurrency: int, queue_samples: list[tuple[float, dict[str, int]]]
                  ) -> dict[str, Any]:
    states = collections.Counter(_text(row["state"]) or "missing" for row in rows)
    done_at = [t for row in rows if _text(row["state"]) == "SUCCEEDED" and (t := _float(row["at_SUCCEEDED"]))]
    finished = len(done_at) == len(rows)
    end = max(done_at) if finished else stopped
    elapsed_s = end - started
    tx = {endpoint: counts for endpoint, counts in stats["requests"].items()
          if endpoint in ("submit_transcription", "get_transcription")}
    requests_seen = sum(sum(counts.values()) for counts in tx.values())
    refused = sum(counts.get("429", 0) for counts in tx.values())
    submits = sum(tx.get("submit_transcription", {}).values())
    gets = sum(tx.get("get_transcription", {}).values())
    admitted_ideal_s = (requests_seen - refused) / rate * MINUTE_S
    window_ideal_s = MINUTE_S * ((2 * n + 2 - 1) // rate)
    polls = [int(p) for row in rows if _text(row["state"]) == "SUCCEEDED" and (p := _float(row["polls"])) is not None]
    last_row = rows[-1]
    last_done = _float(last_row["at_SUCCEEDED"]) if _text(last_row["state"]) == "SUCCEEDED" else None

    busiest_sliding = busiest_sliding_all = idlest_sliding = idlest_from = None
    full_minutes: list[int] = []
    submitted_at = sorted(t for row in rows if (t := _float(row["at_SUBMITTED"]) or _float(row["at_PROCESSING"])))
    all_submitted = len(submitted_at) == len(rows)
    timeline: list[dict[str, Any]] = []
    admitted_at: list[float] = []
    refused_at: list[float] = []
    if arrivals is not None:
        origin = float(arrivals["started_at"])
        refused_set = collections.Counter(arrivals["refused_s"])
        all_at = [origin + t for t in arrivals["arrivals_s"]]
        for t in arrivals["arrivals_s"]:
            if refused_set[t]:
                refused_set[t] -= 1
                refused_at.append(origin + t)
            else:
                admitted_at.append(origin + t)
        if all_at:
            # Full minutes from the first request, while work was left (to the last request, or the stop).
            first, run_end = all_at[0], min(all_at[-1], stopped)
            k = 0
            while first + (k + 1) * MINUTE_S <= run_end:
                lo = first + k * MINUTE_S
                full_minutes.append(bisect.bisect_left(admitted_at, lo + MINUTE_S)
                                    - bisect.bisect_left(admitted_at, lo))
                k += 1
            # Any 60-s window: never more than R; the sparsest one while a submit still waited for budget.
            waited_until = min(submitted_at[-1] if all_submitted else stopped, stopped)
            extremes = minute_extremes(admitted_at, first, max(run_end, first + MINUTE_S))
            busiest_sliding = extremes[0] if extremes else None
            extremes = minute_extremes(all_at, first, max(run_end, first + MINUTE_S))
            busiest_sliding_all = extremes[0] if extremes else None
            extremes = minute_extremes(admitted_at, first, waited_until)
            if extremes:
                _, idlest_sliding, idlest_from = extremes
        arrivals_dropped = int(arrivals["dropped"])
    else:
        arrivals_dropped = None
    for minute in range(int((end - started) // MINUTE_S) + 1):
        lo, hi = started + minute * MINUTE_S, started + (minute + 1) * MINUTE_S

        def between(times: Iterable[float], lo: float = lo, hi: float = hi) -> int:
            return sum(1 for t in times if lo <= t < hi)

        timeline.append({"minute": minute + 1, "submitted": between(submitted_at), "succeeded": between(done_at),
                         "tx_admitted": between(admitted_at), "tx_429": between(refused_at),
                         "broker_mean": queue_means(queue_samples, lo, hi)})
    idlest_window = None
    if idlest_from is not None:
        idlest_window = {"from_s": round(idlest_from - started, 1), "to_s": round(idlest_from - started + MINUTE_S, 1),
                         "broker_mean": queue_means(queue_samples, idlest_from, idlest_from + MINUTE_S),
                         "broker_max": queue_means(queue_samples, idlest_from, idlest_from + MINUTE_S, max)}
    failures = [_text(row["failure"]) for row in rows if _text(row["state"]) == "FAILED"][:3]
    waiting_for = collections.Counter(_text(row["waiting_for"]) for row in rows
                                      if _text(row["state"]) not in ("SUCCEEDED", "FAILED"))
    fields_kept = ("created_at", "at_SUBMITTED", "at_SUCCEEDED", "polls")
    return {
        "kind": "drain", "recordings": n, "plus_one": 1, "rate": rate_text, "rate_per_min": rate,
        "concurrency": concurrency, "timeout_s": timeout_s,
        "finished": finished, "succeeded": len(done_at), "states": dict(states),
        "elapsed_s": round(elapsed_s, 1), "ideal_s": round(ideal_s, 1),
        "ideal_ratio": round(ideal_s / elapsed_s, 3) if finished else None,
        "ideal_from_requests_s": round(admitted_ideal_s, 1),
        "ideal_from_requests_ratio": round(admitted_ideal_s / elapsed_s, 3) if finished else None,
        "window_ideal_s": window_ideal_s,
        "window_ideal_ratio": round(window_ideal_s / elapsed_s, 3) if finished else None,
        "last_submit_after_s": round(submitted_at[-1] - started, 1) if all_submitted else None,
        "recordings_per_min": round(len(done_at) / elapsed_s * MINUTE_S, 1),
        "requests_seen": requests_seen, "requests_ideal": 2 * n + 2, "submits": submits, "gets": gets,
        "rejected_429": refused, "peak_per_minute_sandbox": stats.get("peak_tx_requests_per_minute"),
        "requests_per_full_minute": full_minutes,
        "busiest_minute": max(full_minutes) if full_minutes else None,
        "idlest_minute": min(full_minutes) if full_minutes else None,
        "busiest_60s_window": busiest_sliding, "busiest_60s_window_incl_429": busiest_sliding_all,
        "idlest_60s_window_while_submits_waited": idlest_sliding, "idlest_window": idlest_window,
        "arrivals_after_start_s": {"admitted": [round(t - started, 3) for t in admitted_at],
                                   "refused": [round(t - started, 3) for t in refused_at]},
        "records": [{"state": _text(row["state"]), **{f: _float(row[f]) for f in fields_kept}} for row in rows],
        "arrivals_dropped": arrivals_dropped,
        "polls_per_recording": round(statistics.mean(polls), 3) if polls else None,
        "gets_per_recording": round(gets / len(rows), 3),
        "last_recording_s": round(last_done - last_sent, 1) if last_done else None,
        "last_recording_state": _text(last_row["state"]),
        "uploads_completed": stats.get("uploads_completed"),
        "transcriptions_created": stats.get("transcriptions_created"),
        "timeline": timeline, "failures": failures, "still_waiting_for": {str(k): v for k, v in waiting_for.items()},
        "queue_samples": [[round(t - started, 1), q] for t, q in queue_samples], "queues_at_end": queues,
        "unacked_at_end": unacked, "worker_log": logfile, "worker_log_problems": problems,
    }


def report_drain(d: dict[str, Any]) -> None:
    print(f"\nDrain: {d['recordings']} + 1 recordings of {AUDIO_S:g} s at R = {d['rate']} "
          f"({d['rate_per_min']:g} requests/min), one worker -c {d['concurrency']}, no beat, processing 2 s")
    if d["finished"]:
        outcome = f"all {d['succeeded']} SUCCEEDED in {d['elapsed_s']:.1f} s"
    else:
        outcome = (f"NOT DRAINED: stopped after {d['elapsed_s']:.0f} s with {d['succeeded']} of "
                   f"{d['recordings'] + 1} SUCCEEDED; states {d['states']}")
    rows = [
        ("outcome", outcome),
        ("ideal ((2N+2)/R)", f"{d['ideal_s']:.1f} s" + (f"; ideal / actual **{d['ideal_ratio']:.0%}**"
                                                         if d["ideal_ratio"] else "")),
        ("window-bound ideal (R at once, then R a minute)",
         f"{d['window_ideal_s']:.0f} s" + (f"; ideal / actual **{d['window_ideal_ratio']:.0%}**"
                                           if d["window_ideal_ratio"] else "")),
        ("requests the sandbox saw", f"{d['requests_seen']} ({d['submits']} submits, {d['gets']} gets; "
                                     f"ideal {d['requests_ideal']}); at R: {d['ideal_from_requests_s']:.1f} s"
                                     + (f", {d['ideal_from_requests_ratio']:.0%} of the time taken"
                                        if d["ideal_from_requests_ratio"] else "")),
        ("recordings/min", f"{d['recordings_per_min']:.1f} (R/2 = {d['rate_per_min'] / 2:g})"),
        ("busiest / idlest full minute at the sandbox (from the first request)", _minutes(d)),
        ("any 60-s window at the sandbox", _windows(d)),
        ("429s", str(d["rejected_429"])),
        ("polls per recording", f"{d['polls_per_recording']} (sandbox gets per recording {d['gets_per_recording']})"),
        ("the recording enqueued last", f"{d['last_recording_s']} s to SUCCEEDED" if d["last_recording_s"] is not None
         else f"not done ({d['last_recording_state']})"),
    ]
    _table(rows)
    print("  per minute since the first enqueue: " + "; ".join(
        f"{m['minute']}: {m['submitted']} submitted, {m['succeeded']} done, {m['tx_admitted']} requests"
        + (f" (+{m['tx_429']} 429)" if m["tx_429"] else "") for m in d["timeline"]))
    if d["idlest_window"]:
        w = d["idlest_window"]
        print(f"  tasks waiting in the broker during the idlest minute ({w['from_s']:.0f}-{w['to_s']:.0f} s): "
              f"mean {_queues(w['broker_mean'])}; max {_queues(w['broker_max'])}")
    problems = d["worker_log_problems"]
    if problems["errors"] or problems["warnings"]:
        print(f"  worker log ({d['worker_log']}): {problems['errors']} error lines, {problems['warnings']} warnings")
        for line in problems["first_errors"] + problems["first_warnings"]:
            print(f"    {line[:200]}")
    if not d["finished"]:
        print(f"  at the stop: waiting_for {d['still_waiting_for']}, queues {d['queues_at_end']}, "
              f"unacked {d['unacked_at_end']}, failures {d['failures']}")


def _minutes(d: dict[str, Any]) -> str:
    if d["arrivals_dropped"] is None:
        return f"(sandbox without /_sandbox/tx_arrivals) peak {d['peak_per_minute_sandbox']}"
    if not d["requests_per_full_minute"]:
        return "(the requests took less than a minute)"
    rate = d["rate_per_min"]
    return (f"**{d['busiest_minute']} / {d['idlest_minute']}** admitted ({d['busiest_minute'] / rate:.0%} / "
            f"{d['idlest_minute'] / rate:.0%} of R); each: {', '.join(map(str, d['requests_per_full_minute']))}")


def _windows(d: dict[str, Any]) -> str:
    if d["busiest_60s_window"] is None:
        return "(no data)"
    text = f"at most {d['busiest_60s_window']} admitted ({d['busiest_60s_window_incl_429']} with 429s)"
    if d["idlest_60s_window_while_submits_waited"] is not None:
        w = d["idlest_window"]
        text += (f"; the sparsest while submits waited: {d['idlest_60s_window_while_submits_waited']} "
                 f"({w['from_s']:.0f}-{w['to_s']:.0f} s after the first enqueue)")
    return text


def _queues(q: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:g}" for name, value in q.items()) or "(no samples)"


def _table(rows: list[tuple[str, str]]) -> None:
    print("| | |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


# -- backlog memory --------------------------------------------------------------------------

class PssSampler:
    """The worker's tree PSS every ``every_s`` in a thread: the peak between ``start`` and ``stop``."""

    def __init__(self, pid: int, every_s: float = 2.0) -> None:
        self.pid = pid
        self.every_s = every_s
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, tree_pss_kib(self.pid))
            self._stop.wait(self.every_s)

    def start(self) -> PssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


def worker_memory(pid: int) -> dict[str, Any]:
    per_process = {}
    for p in [pid, *children(pid)]:
        try:
            per_process[p] = {"pss_kib": pss_kib(p), "rss_kib": status_kib(p)}
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            pass
    return {"pss_kib": tree_pss_kib(pid), "rss_kib": tree_rss_kib(pid),
            "main_pss_kib": per_process.get(pid, {}).get("pss_kib"), "processes": len(per_process),
            "children_pss_kib": sorted(v["pss_kib"] for p, v in per_process.items() if p != pid)}


def key_census(r: redis_lib.Redis, run: str, sample: int = 100) -> list[dict[str, Any]]:
    """Keys grouped by shape (ids replaced by ``*``), with their estimated memory (``MEMORY USAGE``)."""
    groups: dict[str, list[bytes]] = collections.defaultdict(list)
    uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    for key in r.scan_iter(count=5000):
        shape = uuid.sub("*", re.sub(re.escape(run) + r"-\d+", "*", key.decode(errors="replace")))
        groups[shape].append(key)
    census = []
    for shape, keys in groups.items():
        picked = keys[:: max(1, len(keys) // sample)][:sample]
        pipe = r.pipeline(transaction=False)
        for key in picked:
            pipe.memory_usage(key, samples=0)
        sizes = [s for s in pipe.execute() if s]
        estimate = statistics.mean(sizes) * len(keys) if sizes else 0
        census.append({"keys": shape, "count": len(keys), "bytes": int(estimate)})
    return sorted(census, key=lambda c: -c["bytes"])


def enqueue_and_settle(client: Any, r: redis_lib.Redis, ids: list[str], sample: str, settle_timeout_s: float,
                       worker: Any, pid: int) -> float:
    """Enqueue a recording for each id, then wait until each has its record and the broker's queues
    are empty (every entry task has run); returns how long the enqueueing took."""
    n = len(ids)
    started = time.monotonic()
    for recording_id in ids:
        client.send_task(names.TRANSCRIBE, kwargs={"source": sample, "recording_id": recording_id})
    enqueue_s = time.monotonic() - started
    log(f"memory: enqueued {n} in {enqueue_s:.1f} s")
    next_report = time.monotonic() + 30
    while True:
        existing = 0
        for start in range(0, n, CHUNK):
            pipe = r.pipeline(transaction=False)
            for recording_id in ids[start:start + CHUNK]:
                pipe.exists(names.record_key(recording_id))
            existing += sum(pipe.execute())
        queued = {q: int(r.llen(q)) for q in BROKER_QUEUES}
        if existing == n and not any(queued.values()):
            return enqueue_s
        elapsed = time.monotonic() - started
        if elapsed > settle_timeout_s:
            raise TimeoutError(
                f"the backlog of {n} did not settle in {settle_timeout_s:.0f} s: {existing} records, "
                f"queues {queued}, unacked {r.hlen(names.KOMBU_UNACKED)}; worker log {worker.logfile}:\n"
                f"{worker.log_tail(15)}")
        if time.monotonic() >= next_report:
            log(f"memory: {existing} of {n} records, queues {queued}, after {elapsed:.0f} s; "
                f"worker PSS {tree_pss_kib(pid) / 1024:.1f} MiB")
            next_report += 30
        time.sleep(1)


def run_memory(n: int, *, rate_text: str, concurrency: int, pool: str, warm_up: int, ttl_s: int, lead_s: int,
               settle_timeout_s: float | None, workdir: str, trace: str = "") -> dict[str, Any]:
    from celery import Celery

    from plaud.sandbox import SandboxProcess, admin
    from plaud.sandbox.testaudio import make_recording
    from workers.local_redis import RedisServer
    from workers.local_stack import WorkerProcess

    settle_timeout_s = settle_timeout_s or 300.0 + 0.04 * n
    sample = make_recording(os.path.join(workdir, "memory.mp3"), AUDIO_S, text="waiting").path
    server = RedisServer().start()
    try:
        with SandboxProcess(*DRAIN_SANDBOX, "--tx-rate-limit", rate_text, "--download-ttl-s", str(ttl_s)) as sandbox:
            env = {"PLAUD_BASE_URL": sandbox.base_url, "REDIS_URL": server.url, "PLAUD_TX_RATE_LIMIT": rate_text,
                   "PLAUD_DOWNLOAD_URL_TTL_S": str(ttl_s), "PLAUD_UPLOAD_LEAD_S": str(lead_s)}
            snapshot_dir = os.path.join(workdir, f"snapshots-{n}")
            if trace:  # snapshots on SIGUSR2 (bench.memory_probe); tracemalloc from the start (one frame)
                os.makedirs(snapshot_dir, exist_ok=True)
                env.update(PLAUD_BENCH_SNAPSHOT_DIR=snapshot_dir)
                if trace == "tracemalloc":
                    env.update(PYTHONTRACEMALLOC="1")
            worker = WorkerProcess(env, concurrency=concurrency, pool=pool, name="backlog-memory",
                                   extra_args=("-I", "bench.memory_probe") if trace else ()).start()
            assert worker.proc is not None
            pid = worker.proc.pid
            snapshots: dict[str, str] = {}
            sampler = PssSampler(pid)
            try:
                r = redis_lib.Redis.from_url(server.url)
                time.sleep(5)  # let the pool children finish starting
                idle = worker_memory(pid)
                if trace:
                    snapshots["idle"] = take_snapshot(pid, snapshot_dir)
                redis_before = r.info("memory")["used_memory"]
                sampler.start()
                client = Celery(broker=server.url, backend=server.url)
                run = f"mem{time.time_ns()}"
                warm = None
                if warm_up:
                    # A worker that has run some work first: what it grows to for running at all
                    # (warm-up), apart from what it would grow for recordings waiting.
                    warm_ids = [f"{run}-warm-{i}" for i in range(warm_up)]
                    log(f"memory: warm-up, {warm_up} recordings first")
                    enqueue_and_settle(client, r, warm_ids, sample, settle_timeout_s, worker, pid)
                    time.sleep(5)
                    warm = worker_memory(pid)
                    if trace:
                        snapshots["warm"] = take_snapshot(pid, snapshot_dir)
                    redis_before = r.info("memory")["used_memory"]
                ids = [f"{run}-{i}" for i in range(n)]
                log(f"memory: enqueueing {n} recordings at R = {rate_text} (TTL {ttl_s} s, upload lead {lead_s} s); "
                    f"settle timeout {settle_timeout_s:.0f} s; worker log {worker.logfile}; idle PSS "
                    f"{idle['pss_kib'] / 1024:.1f} MiB")
                started = time.monotonic()
                enqueue_s = enqueue_and_settle(client, r, ids, sample, settle_timeout_s, worker, pid)
                settle_s = time.monotonic() - started
                time.sleep(5)  # what the worker holds once the last entry tasks have ended
                loaded = worker_memory(pid)
                if trace:
                    snapshots["loaded"] = take_snapshot(pid, snapshot_dir)
                redis_after = r.info("memory")["used_memory"]
                rows = read_records(r, ids, ("state", "waiting_for"))
                states = collections.Counter(_text(row["state"]) or "missing" for row in rows)
                waiting = collections.Counter(_text(row["waiting_for"]) or "-" for row in rows)
                queues = {q: int(r.llen(q)) for q in (*BROKER_QUEUES, names.POLLS_QUEUE)}
                unacked = int(r.hlen(names.KOMBU_UNACKED))
                census = key_census(r, run)
                stats = admin(sandbox.origin, "stats")
            finally:
                sampler.stop()
                worker.stop()
            problems = log_problems(worker.log_text())
    finally:
        server.cleanup()
    return {
        "kind": "memory", "recordings": n, "rate": rate_text, "concurrency": concurrency, "pool": pool,
        "download_url_ttl_s": ttl_s, "upload_lead_s": lead_s, "enqueue_s": round(enqueue_s, 1),
        "settle_s": round(settle_s, 1), "idle": idle, "loaded": loaded, "peak_pss_kib": max(sampler.peak_kib,
                                                                                             loaded["pss_kib"]),
        "pss_ratio": round(loaded["pss_kib"] / idle["pss_kib"], 3), "warm_up": warm_up, "warm": warm,
        "warm_pss_ratio": round(loaded["pss_kib"] / warm["pss_kib"], 3) if warm else None,
        "redis_used_memory_before": redis_before, "redis_used_memory_after": redis_after,
        "redis_bytes_per_recording": round((redis_after - redis_before) / n),
        "states": dict(states), "waiting_for": dict(waiting), "queues": queues, "unacked": unacked,
        "uploads_completed": stats.get("uploads_completed"),
        "transcriptions_created": stats.get("transcriptions_created"),
        "redis_keys": census[:8], "worker_log": worker.logfile, "worker_log_problems": problems,
        "traced": traced_growth(snapshots) if trace else None,
    }


def take_snapshot(pid: int, directory: str, timeout_s: float = 120.0) -> str:
    """Ask the worker (``bench.memory_probe``) for a snapshot; returns its path without extension."""
    before = set(os.listdir(directory))
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = [f for f in set(os.listdir(directory)) - before if f.endswith(".json")]
        if new:
            return os.path.join(directory, new[0][:-len(".json")])
        time.sleep(0.5)
    raise TimeoutError(f"the worker wrote no snapshot to {directory} in {timeout_s:.0f} s")


def traced_growth(snapshots: dict[str, str], top: int = 12) -> dict[str, Any]:
    """What Python allocations and gc-tracked objects grew between the idle snapshot and each later one."""
    import tracemalloc

    def load(base: str) -> tuple[Any, dict[str, Any]]:
        with open(base + ".json") as handle:
            census = json.load(handle)
        path = base + ".snapshot"
        return (tracemalloc.Snapshot.load(path) if os.path.exists(path) else None), census

    idle_snapshot, idle_census = load(snapshots["idle"])
    growth = {}
    for phase in ("warm", "loaded"):
        if phase not in snapshots:
            continue
        snapshot, census = load(snapshots[phase])
        stats = snapshot.compare_to(idle_snapshot, "lineno") if snapshot and idle_snapshot else []
        types = {t: census["types"].get(t, 0) - idle_census["types"].get(t, 0)
                 for t in set(census["types"]) | set(idle_census["types"])}
        growth[phase] = {
            "traced_kib": round(((census["traced_bytes"] or 0) - (idle_census["traced_bytes"] or 0)) / 1024, 1),
            "pss_kib": [idle_census["pss_kib"], census["pss_kib"]],
            "pss_after_trim_kib": [idle_census["pss_after_trim_kib"], census["pss_after_trim_kib"]],
            "threads": [idle_census["threads"], census["threads"]],
            "top_lines": [{"where": str(s.traceback), "kib": round(s.size_diff / 1024, 1), "blocks": s.count_diff}
                          for s in stats[:top]],
            "top_types": sorted(((t, d) for t, d in types.items() if d), key=lambda x: -abs(x[1]))[:top],
        }
    return growth


def report_memory(m: dict[str, Any]) -> None:
    mib = 1024
    print(f"\nBacklog memory: {m['recordings']:,} recordings at R = {m['rate']}, DownloadUrl TTL "
          f"{m['download_url_ttl_s']} s, upload lead {m['upload_lead_s']} s, one worker -P {m.get('pool', 'prefork')} "
          f"-c {m['concurrency']}")
    idle, loaded = m["idle"], m["loaded"]
    _table([
        ("enqueue / settle", f"{m['enqueue_s']:.1f} s / {m['settle_s']:.1f} s"),
        ("worker PSS (main + children)", f"idle {idle['pss_kib'] / mib:.1f} MiB, waiting "
                                         f"{loaded['pss_kib'] / mib:.1f} MiB (**{m['pss_ratio'] - 1:+.1%}**), "
                                         f"peak {m['peak_pss_kib'] / mib:.1f} MiB"),
        *([("worker PSS after a warm-up", f"{m['warm']['pss_kib'] / mib:.1f} MiB after {m['warm_up']:,} recordings; "
                                          f"with {m['recordings']:,} more waiting **{m['warm_pss_ratio'] - 1:+.1%}**")]
          if m.get("warm") else []),
        ("main process PSS", f"idle {idle['main_pss_kib'] / mib:.1f} MiB, "
                             f"waiting {loaded['main_pss_kib'] / mib:.1f} MiB"),
        ("worker RSS (summed)", f"idle {idle['rss_kib'] / mib:.1f} MiB, waiting {loaded['rss_kib'] / mib:.1f} MiB"),
        ("Redis used_memory", f"{m['redis_used_memory_before'] / 2**20:.1f} -> "
                              f"{m['redis_used_memory_after'] / 2**20:.1f} MiB, "
                              f"**{m['redis_bytes_per_recording']:,} bytes per recording**"),
        ("states", ", ".join(f"{k} {v}" for k, v in sorted(m["states"].items()))),
        ("waiting_for", ", ".join(f"{k} {v}" for k, v in sorted(m["waiting_for"].items()))),
        ("uploads / submits at the sandbox", f"{m['uploads_completed']} / {m['transcriptions_created']}"),
        ("broker at the end", f"queues {m['queues']}, unacked (reserved by workers) {m['unacked']}"),
    ])
    print("  largest Redis key groups: " + "; ".join(f"{c['keys']} x{c['count']} ~{c['bytes'] / 2**20:.1f} MiB"
                                                    for c in m["redis_keys"][:5]))
    for phase, grown in (m.get("traced") or {}).items():
        (pss_idle, pss_then), (trim_idle, trim_then) = grown["pss_kib"], grown["pss_after_trim_kib"]
        print(f"  main process PSS idle -> {phase}: {pss_idle / 1024:.1f} -> {pss_then / 1024:.1f} MiB; after "
              f"malloc_trim(0) {trim_idle / 1024:.1f} -> {trim_then / 1024:.1f} MiB")
        print(f"  traced Python memory, idle -> {phase}: {grown['traced_kib']:+,.0f} KiB; threads "
              f"{grown['threads'][0]} -> {grown['threads'][1]}; largest growth by line:")
        for line in grown["top_lines"]:
            print(f"    {line['kib']:+9,.1f} KiB {line['blocks']:+8,d} blocks  {line['where']}")
        print("    objects the GC tracks, by type: " + ", ".join(f"{t} {d:+,d}" for t, d in grown["top_types"]))
    problems = m["worker_log_problems"]
    if problems["errors"] or problems["warnings"]:
        print(f"  worker log ({m['worker_log']}): {problems['errors']} error lines, {problems['warnings']} warnings")
        for line in problems["first_errors"] + problems["first_warnings"]:
            print(f"    {line[:200]}")


def summary(results: list[dict[str, Any]]) -> str:
    parts = []
    for d in (r for r in results if r["kind"] == "drain"):
        if d["finished"]:
            parts.append(f"{d['recordings']} + 1 recordings at R = {d['rate']} drained in {d['elapsed_s']:.0f} s "
                         f"against an ideal of {d['ideal_s']:.0f} s ({d['ideal_ratio']:.0%}; target >= 90 %) and "
                         f"a window-bound ideal of {d['window_ideal_s']:.0f} s ({d['window_ideal_ratio']:.0%}), "
                         f"{d['recordings_per_min']:.0f} recordings/min, with {d['rejected_429']} 429s and "
                         f"{d['polls_per_recording']} polls per recording; the busiest full minute at the sandbox "
                         f"held {d['busiest_minute']} requests and the idlest {d['idlest_minute']} (R = "
                         f"{d['rate_per_min']:g}; no 60-s window held more than {d['busiest_60s_window']}), "
                         f"and the recording enqueued last took {d['last_recording_s']} s.")
        else:
            parts.append(f"{d['recordings']} + 1 recordings at R = {d['rate']} did not drain: after "
                         f"{d['elapsed_s']:.0f} s only {d['succeeded']} had SUCCEEDED ({d['recordings_per_min']:.1f} "
                         f"recordings/min against R/2 = {d['rate_per_min'] / 2:g}; "
                         f"ideal for all {d['ideal_s']:.0f} s).")
    for m in (r for r in results if r["kind"] == "memory"):
        parts.append(f"With {m['recordings']:,} recordings waiting the worker's PSS was "
                     f"{m['loaded']['pss_kib'] / 1024:.0f} MiB against {m['idle']['pss_kib'] / 1024:.0f} MiB idle "
                     f"({m['pss_ratio'] - 1:+.1%}; target within 10 %), and Redis held "
                     f"{m['redis_bytes_per_recording']:,} bytes per waiting recording.")
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=150, help="the burst of the drain (one more follows)")
    parser.add_argument("--rate", default="120/m", help="the Transcription API budget R of the drain")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--pool", default="prefork", help="the memory runs' worker pool (prefork or threads)")
    parser.add_argument("--warm-up", type=int, default=0, metavar="W",
                        help="memory runs: W recordings first, then measure again before the N (warm idle)")
    parser.add_argument("--last-after-s", type=float, default=1.0, help="when the one more follows the burst")
    parser.add_argument("--drain-timeout-s", type=float, default=None,
                        help="stop an undrained run after this (default: 15 min or 4x the ideal, the longer)")
    parser.add_argument("--skip-drain", action="store_true")
    parser.add_argument("--memory", type=int, nargs="*", default=[], metavar="N",
                        help="backlog-memory runs with N recordings waiting each (e.g. 10000 50000)")
    parser.add_argument("--memory-rate", default="1/m")
    parser.add_argument("--download-ttl-s", type=int, default=600)
    parser.add_argument("--upload-lead-s", type=int, default=300)
    parser.add_argument("--settle-timeout-s", type=float, default=None)
    parser.add_argument("--trace-memory", nargs="?", const="tracemalloc", default="", choices=("tracemalloc", "light"),
                        help="report what the memory runs' worker grew: objects by type, PSS before and after "
                             "malloc_trim(0), and with tracemalloc (the default; slower, and the PSS figures then "
                             "include tracemalloc's own) by line; 'light' leaves tracemalloc off")
    parser.add_argument("--json", metavar="PATH", help="write the figures to this file")
    args = parser.parse_args()

    import tasks

    log(f"code under test: {os.path.dirname(os.path.dirname(os.path.abspath(tasks.__file__)))}")
    workdir = tempfile.mkdtemp(prefix="bench-backlog-")
    results: list[dict[str, Any]] = []
    try:
        if not args.skip_drain:
            results.append(run_drain(args.recordings, args.rate, concurrency=args.concurrency,
                                     last_after_s=args.last_after_s, timeout_s=args.drain_timeout_s, workdir=workdir))
        for n in args.memory:
            results.append(run_memory(n, rate_text=args.memory_rate, concurrency=args.concurrency, pool=args.pool,
                                      warm_up=args.warm_up,
                                      ttl_s=args.download_ttl_s, lead_s=args.upload_lead_s,
                                      settle_timeout_s=args.settle_timeout_s, workdir=workdir,
                                      trace=args.trace_memory))
    finally:
        if args.json and results:
            with open(args.json, "w") as out:
                json.dump({"argv": sys.argv[1:], "results": results}, out, indent=2)
    for result in results:
        (report_drain if result["kind"] == "drain" else report_memory)(result)
    print("\n" + summary(results))


if __name__ == "__main__":
    main()
