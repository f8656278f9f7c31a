"""A deterministic simulation of the fleet's Transcription API budget, on a fake clock.

Workers run submit and poll tasks of recordings that arrive in bursts and steadily; every request
first asks the scheduler, through the very Lua scripts the fleet runs (on a real redis-server, the
clock passed in as ``now_us``), then reaches "Plaud" after a network delay, where its arrival is
recorded. Two schedulers can be driven:

- ``pull``: ``plaud.budget.Budget``. A refused request is written down and its task ends; a
  dispatcher ticks (every second, or until the next slot frees) and enqueues the tasks of the
  waiters ``release`` grants; they take their slot when they run, after a broker delay.
- ``turns``: the limiter this replaced (its script is kept below): a refused task re-runs after the countdown
  it was told (the stage's ``task.retry(countdown=max(wait, 0.5))``).

Each submit is followed by polls of its job until Plaud is done (a poll before that re-polls after
a countdown: that wait is the product's contract, not the budget's). Recordings belong to tenants
(in turn over ``Scenario.tenants``, each with its weight and priority; ``late`` adds recordings of a
tenant later on), so ``tenant_shares`` measures the fairness policy on the same run. ``figures``
measures what the issue asks at Plaud's side: the most requests in any window of the period, how
much of the budget was used in windows while requests waited, and whether every recording finished.

Work conservation is measured over windows of ``period + safety + reuse`` (``Result.reuse_s``: one
dispatcher tick, the broker's and the network's largest delays): a slot freed while requests wait
is reused within that, so each such window should hold the whole budget. Over windows of the bare
period no scheduler that keeps a safety margin can promise it: R requests sent together free their
slots together ``period + safety`` later, so a window starting just after them holds almost none
(``Figures.worst_bare_period`` shows it: reported, not asserted).
"""

from __future__ import annotations

import bisect
import functools
import heapq
import itertools
import math
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plaud import ratelimit
from plaud.budget import PACE_SLICES, POLL, SUBMIT, Budget
from plaud.rates import Rate

PERIOD_S = 60.0
SAFETY_S = ratelimit.SAFETY_S
CONCURRENCY = 8  # task slots per worker (celery -c)
TICK_S = 1.0
BROKER_DELAY_S = (0.002, 0.1)  # enqueue to a free worker picking it up
NET_DELAY_S = (0.005, 0.3)  # send to arrival at Plaud; below the safety margin
ANSWER_S = (0.02, 0.2)  # arrival to the answer reaching the worker
REFUSED_TASK_S = 0.002  # a task told to wait frees its worker slot this soon
T0_US = 1_700_000_000_000_000  # the fake clock's epoch: a plausible Redis TIME
US = 1_000_000


@dataclass(frozen=True)
class Tenant:
    name: str
    weight: float = 1.0
    priority: str = "normal"


@dataclass(frozen=True)
class Late:
    """``n`` recordings of ``tenant`` arriving together at ``at_s``."""

    at_s: float
    n: int
    tenant: Tenant
    job_s: float | None = None  # how long Plaud works on each (else drawn as the others')


@dataclass(frozen=True)
class Scenario:
    limit: int  # R requests per minute
    burst: float  # recordings enqueued at t=0, as a multiple of R
    workers: int = 2
    steady: float = 0.2  # recordings arriving per period while the burst drains, as a share of R/2
    job_s: tuple[float, float] = (5.0, 600.0)  # how long Plaud works on a job: log-uniform in this range
    dispatch: str = "tick"  # "tick": release every second; "next_free": sleep until the next slot frees (<= 1 s)
    release_on_finish: bool = False  # a worker also releases after each request it finished
    second_burst: float = 0.0  # recordings enqueued half-way through the drain, as a multiple of R
    lose_grants: float = 0.0  # share of granted tasks lost on the way (their grants expire; the dispatcher re-sends)
    seed: int = 0
    tenants: tuple[Tenant, ...] = (Tenant("default"),)  # the burst and steady recordings' tenants, in turn
    late: tuple[Late, ...] = ()
    poll_priorities: bool = True  # Budget(poll_priorities=...), as the fleet runs it
    slices: int = PACE_SLICES  # Budget(slices=...): 1, unpaced

    def __post_init__(self) -> None:
        # The fleet must be able to carry the budget, else a shortfall is the workers', not the scheduler's.
        per_task_s = sum(NET_DELAY_S) / 2 + sum(ANSWER_S) / 2
        assert self.workers * CONCURRENCY / per_task_s >= 1.5 * self.limit / PERIOD_S, f"too few workers: {self}"

    @property
    def name(self) -> str:
        extra = f"+{self.second_burst:g}x" if self.second_burst else ""
        extra += f"-lose{self.lose_grants:g}" if self.lose_grants else ""
        if self.tenants != (Tenant("default"),):
            extra += "-" + ":".join(f"{t.name}{t.weight:g}{t.priority[0]}" for t in self.tenants)
        extra += "".join(f"+{late.n}{late.tenant.name}{late.tenant.priority[0]}@{late.at_s:g}s" for late in self.late)
        extra += "" if self.poll_priorities else "-fifopolls"
        extra += "" if self.slices == PACE_SLICES else f"-slices{self.slices}"
        return (f"R{self.limit}-burst{self.burst:g}x{extra}-w{self.workers}-jobs{self.job_s[0]:g}..{self.job_s[1]:g}s"
                f"-{self.dispatch}{'-rof' if self.release_on_finish else ''}-s{self.seed}")

    def drain_s(self) -> float:
        """The ideal time for the burst's submits and first polls at R."""
        return 2 * self.burst * PERIOD_S


@dataclass
class Recording:
    id: str
    job_s: float
    estimate_s: float
    tenant: Tenant = Tenant("default")
    arrived_at: float = 0.0
    done_at: float | None = None  # at Plaud, once submitted
    sent_polls: int = 0
    finished: bool = False
    finished_at: float | None = None  # the poll that found it done, at Plaud


@dataclass
class Result:
    scenario: Scenario
    scheduler: str
    limit: int
    arrivals: list[float]  # at Plaud, sorted
    kinds: list[str]  # of each arrival, same order
    waiting: list[tuple[float, int, int]]  # (time, submits waiting, polls waiting) at every change
    recordings: int
    finished: int
    end_s: float
    expired_grants: int
    reuse_s: float
    shares: dict[str, int]  # each kind's share of the window while both wait
    stats: dict[str, Any] = field(default_factory=dict)
    submits: list[tuple[float, str]] = field(default_factory=list)  # (arrival at Plaud, tenant), sorted
    tenants_waiting: list[tuple[float, frozenset[str]]] = field(default_factory=list)  # tenants with submits waiting
    recordings_list: list[Recording] = field(default_factory=list)


class PullScheduler:
    """``plaud.budget.Budget``: refused requests wait in Redis until ``release`` grants them."""

    name = "pull"

    def __init__(self, redis: Any, limit: int, key: str, weights: dict[str, float] | None = None,
                 poll_priorities: bool = True, slices: int = PACE_SLICES) -> None:
        self.budget = Budget(redis, Rate(limit, PERIOD_S), key=key, safety_s=SAFETY_S, tenant_weights=weights,
                             poll_priorities=poll_priorities, slices=slices)


# The turn-based scheduler the fleet ran before ``plaud.budget`` (its Lua script as it was, the
# clock passed in as ARGV[8]): kept here only to show that this simulation catches its failure.
# KEYS = window (all requests), submit queue, poll queue, window of this caller's class.
# ARGV = limit, period us, slot member, waiter id, class, this class's share, waiter ttl us, now us.
# Returns 0 when a slot was taken, else microseconds until this caller's turn.
TURNS_ACQUIRE = """
local now = tonumber(ARGV[8])
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local waiter = ARGV[4]
local is_submit = ARGV[5] == 'submit'
local own_queue = is_submit and KEYS[2] or KEYS[3]
local other_queue = is_submit and KEYS[3] or KEYS[2]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - period)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[7]))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[7]))
local used = redis.call('ZCARD', KEYS[1])
local own_used = redis.call('ZCARD', KEYS[4])
local ahead = redis.call('ZRANK', own_queue, waiter) or redis.call('ZCARD', own_queue)
-- While the other class has callers waiting, this class keeps to its share of the window.
local own_limit = limit
if redis.call('ZCARD', other_queue) > 0 then
  own_limit = math.max(math.floor(limit * tonumber(ARGV[6])), 1)
end
if used + ahead < limit and own_used + ahead < own_limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('ZADD', KEYS[4], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(period / 1000))
  redis.call('PEXPIRE', KEYS[4], math.ceil(period / 1000))
  redis.call('ZREM', own_queue, waiter)
  return 0
end
redis.call('ZADD', own_queue, 'NX', now, waiter)
redis.call('PEXPIRE', own_queue, math.ceil(tonumber(ARGV[7]) / 1000))
-- This caller's turn: for each window that binds, when its (count + ahead - cap)-th slot frees,
-- a period later for every full window of callers ahead; the later of the two.
local function turn(window, count, cap)
  if count + ahead < cap then return 0 end
  local index = count + ahead - cap
  local rounds = math.floor(index / math.max(count, 1))
  local slot = redis.call('ZRANGE', window, index % math.max(count, 1), index % math.max(count, 1), 'WITHSCORES')
  local frees_at = slot[2] and tonumber(slot[2]) + period or now + period
  return frees_at - now + rounds * period
end
return math.max(turn(KEYS[1], used, limit), turn(KEYS[4], own_used, own_limit), 1000)
"""


class TurnScheduler:
    """The earlier limiter: a refused caller is told when its turn comes, computed as if the window stayed full."""

    name = "turns"

    def __init__(self, redis: Any, limit: int, key: str) -> None:
        self.limit = limit
        self.period_us = int((PERIOD_S + SAFETY_S) * US)
        self.waiter_ttl_us = 2 * self.period_us + 30 * US
        self.keys = [key, f"{key}:waiting:{SUBMIT}", f"{key}:waiting:{POLL}"]
        self.class_windows = {SUBMIT: f"{key}:used:{SUBMIT}", POLL: f"{key}:used:{POLL}"}
        self._acquire = redis.register_script(TURNS_ACQUIRE)
        self._slots = itertools.count()

    def try_acquire(self, waiter: str, kind: str, now_us: int) -> float:
        wait_us = self._acquire(keys=[*self.keys, self.class_windows[kind]],
                                args=[self.limit, self.period_us, f"slot{next(self._slots)}", waiter, kind, 0.5,
                                      self.waiter_ttl_us, now_us])
        return int(wait_us) / US


class Simulation:
    def __init__(self, redis: Any, scenario: Scenario, scheduler: str = "pull", *,
                 horizon_s: float | None = None) -> None:
        self.sc = scenario
        self.rng = random.Random(scenario.seed)
        key = f"sim:{scheduler}:{scenario.name}"
        weights = {t.name: t.weight for t in (*scenario.tenants, *(late.tenant for late in scenario.late))}
        self.sched: PullScheduler | TurnScheduler = (
            PullScheduler(redis, scenario.limit, key, weights, scenario.poll_priorities, scenario.slices)
            if scheduler == "pull" else TurnScheduler(redis, scenario.limit, key))
        self.horizon_s = horizon_s if horizon_s is not None else 4 * scenario.drain_s() + 3 * scenario.job_s[1] + 600
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.free_slots = scenario.workers * CONCURRENCY
        self.ready: deque[tuple[str, Recording]] = deque()
        self.recordings: list[Recording] = []
        self.sends: list[tuple[float, str]] = []
        self.submits: list[tuple[float, str]] = []
        self.tenants_waiting: dict[str, set[str]] = {}
        self.tenants_log: list[tuple[float, frozenset[str]]] = [(0.0, frozenset())]
        self._in_turn = itertools.count()
        self.waiting_now: dict[str, set[str]] = {SUBMIT: set(), POLL: set()}
        self.waiting_log: list[tuple[float, int, int]] = [(0.0, 0, 0)]
        self.dispatcher_awake = False
        self.expired = 0
        self.unfinished = 0
        self.calls = 0

    # -- the event loop ----------------------------------------------------------------------------

    def at(self, t: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (t, next(self._seq), action))

    def now_us(self) -> int:
        return T0_US + round(self.now * US)

    def run(self) -> Result:
        sc = self.sc
        for _ in range(round(sc.burst * sc.limit)):
            self.at(0.0, self.arrive)
        if sc.second_burst:
            for _ in range(round(sc.second_burst * sc.limit)):
                self.at(sc.drain_s() / 2, self.arrive)
        for late in sc.late:
            for _ in range(late.n):
                self.at(late.at_s, functools.partial(self.arrive, late.tenant, late.job_s))
        rate_per_s = sc.steady * sc.limit / 2 / PERIOD_S
        t = 0.0
        while rate_per_s > 0 and (t := t + self.rng.expovariate(rate_per_s)) < sc.drain_s():
            self.at(t, self.arrive)
        self.unfinished = len(self._events)
        while self._events and self.unfinished > 0:
            t, _, action = heapq.heappop(self._events)
            if t > self.horizon_s:
                break
            self.now = t
            action()
        self.sends.sort()
        return Result(sc, self.sched.name, sc.limit, [s for s, _ in self.sends], [k for _, k in self.sends],
                      self.waiting_log, len(self.recordings), sum(r.finished for r in self.recordings), self.now,
                      self.expired, TICK_S + BROKER_DELAY_S[1] + NET_DELAY_S[1], self.shares(),
                      {"calls": self.calls}, sorted(self.submits), self.tenants_log, self.recordings)

    def shares(self) -> dict[str, int]:
        if isinstance(self.sched, PullScheduler):
            return dict(self.sched.budget.shares)
        share = 0.5
        limit = self.sc.limit
        return {SUBMIT: max(math.floor(limit * share), 1), POLL: max(math.floor(limit * (1 - share)), 1)}

    def uniform(self, bounds: tuple[float, float]) -> float:
        return self.rng.uniform(*bounds)

    # -- recordings, tasks, workers ----------------------------------------------------------------

    def arrive(self, tenant: Tenant | None = None, fixed_job_s: float | None = None) -> None:
        low, high = self.sc.job_s
        job_s = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        job_s = job_s if fixed_job_s is None else fixed_job_s
        if tenant is None:
            tenant = self.sc.tenants[next(self._in_turn) % len(self.sc.tenants)]
        rec = Recording(f"rec{len(self.recordings)}", job_s, job_s * self.rng.uniform(0.7, 1.3), tenant, self.now)
        self.recordings.append(rec)
        self.enqueue(SUBMIT, rec)

    def enqueue(self, kind: str, rec: Recording, countdown_s: float = 0.0) -> None:
        self.at(self.now + countdown_s + self.uniform(BROKER_DELAY_S), lambda: self.deliver(kind, rec))

    def deliver(self, kind: str, rec: Recording) -> None:
        if self.free_slots == 0:
            self.ready.append((kind, rec))
            return
        self.free_slots -= 1
        self.run_task(kind, rec)

    def free_slot(self) -> None:
        if self.ready:
            self.run_task(*self.ready.popleft())
        else:
            self.free_slots += 1

    def run_task(self, kind: str, rec: Recording) -> None:
        """A submit or poll stage: ask the budget, then send, or wait as the scheduler says."""
        self.calls += 1
        if isinstance(self.sched, PullScheduler):
            if not self.sched.budget.take(kind, rec.id, tenant=rec.tenant.name, priority=rec.tenant.priority,
                                          now_us=self.now_us()):
                self.set_waiting(kind, rec.id, True)
                self.wake_dispatcher()
                self.at(self.now + REFUSED_TASK_S, self.free_slot)
                return
        else:
            wait_s = self.sched.try_acquire(rec.id, kind, self.now_us())
            if wait_s > 0:
                self.set_waiting(kind, rec.id, True)
                self.enqueue(kind, rec, countdown_s=max(wait_s, 0.5))
                self.at(self.now + REFUSED_TASK_S, self.free_slot)
                return
            self.set_waiting(kind, rec.id, False)
        arrival = self.now + self.uniform(NET_DELAY_S)
        self.sends.append((arrival, kind))
        if kind == SUBMIT:
            self.submits.append((arrival, rec.tenant.name))
        self.at(arrival + self.uniform(ANSWER_S), lambda: self.answered(kind, rec, arrival))

    def answered(self, kind: str, rec: Recording, arrival: float) -> None:
        if kind == SUBMIT:
            rec.done_at = arrival + rec.job_s
            self.enqueue(POLL, rec, countdown_s=rec.estimate_s)
        else:
            assert rec.done_at is not None
            rec.sent_polls += 1
            if arrival >= rec.done_at:
                rec.finished = True
                rec.finished_at = arrival
                self.unfinished -= 1
            else:
                elapsed_s = arrival - (rec.done_at - rec.job_s)
                self.enqueue(POLL, rec, countdown_s=min(max(5.0, 0.1 * elapsed_s), 120.0))
        self.free_slot()
        if self.sc.release_on_finish and isinstance(self.sched, PullScheduler):
            self.release()

    # -- waiting and the dispatcher ----------------------------------------------------------------

    def set_waiting(self, kind: str, waiter: str, waiting: bool) -> None:
        (self.waiting_now[kind].add if waiting else self.waiting_now[kind].discard)(waiter)
        if kind == SUBMIT:
            tenant = self.recordings_by_id(waiter).tenant.name
            line = self.tenants_waiting.setdefault(tenant, set())
            (line.add if waiting else line.discard)(waiter)
            now_waiting = frozenset(t for t, ws in self.tenants_waiting.items() if ws)
            if now_waiting != self.tenants_log[-1][1]:
                self.tenants_log.append((self.now, now_waiting))
        counts = (len(self.waiting_now[SUBMIT]), len(self.waiting_now[POLL]))
        if counts != self.waiting_log[-1][1:]:
            self.waiting_log.append((self.now, *counts))

    def wake_dispatcher(self) -> None:
        """The dispatcher ticks on a fixed phase; while nothing waits or is granted its release is a
        no-op the simulation skips, so a refusal resumes it at its next tick."""
        if not self.dispatcher_awake:
            self.dispatcher_awake = True
            self.at(math.floor(self.now / TICK_S + 1) * TICK_S, self.dispatch)

    def release(self) -> Any:
        assert isinstance(self.sched, PullScheduler)
        self.calls += 1
        release = self.sched.budget.release(now_us=self.now_us())
        self.expired += len(release.expired)
        by_id = self.recordings_by_id
        for kind, waiter in release.expired:
            self.enqueue(kind, by_id(waiter))  # its task was lost: the dispatcher sends it again
        for kind, waiter in release.granted:
            self.set_waiting(kind, waiter, False)
            if self.sc.lose_grants and self.rng.random() < self.sc.lose_grants:
                continue  # the granted task is lost
            self.enqueue(kind, by_id(waiter))
        return release

    def recordings_by_id(self, waiter: str) -> Recording:
        return self.recordings[int(waiter.removeprefix("rec"))]

    def dispatch(self) -> None:
        release = self.release()
        if release.waiting == 0 and release.outstanding == 0:
            self.dispatcher_awake = False
            return
        if self.sc.dispatch == "next_free":
            self.at(self.now + release.wake_in_s(TICK_S, min_s=0.1), self.dispatch)
        else:
            self.at(self.now + TICK_S, self.dispatch)


# -- measuring ------------------------------------------------------------------------------------


def most_in_any_window(times: list[float], length_s: float) -> int:
    """The most arrivals in any window [t, t + length)."""
    return max((bisect.bisect_left(times, t + length_s) - i for i, t in enumerate(times)), default=0)


def waiting_spans(waiting: list[tuple[float, int, int]], end_s: float, *,
                  both: bool = False) -> list[tuple[float, float]]:
    """Intervals during which requests waited: of either kind, or (``both``) of each kind."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for t, submits, polls in waiting:
        on = (submits > 0 and polls > 0) if both else submits + polls > 0
        if on and start is None:
            start = t
        elif not on and start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, end_s))
    return spans


def fewest_in_windows(times: list[float], spans: list[tuple[float, float]], length_s: float,
                      skip_s: float) -> int | None:
    """The fewest arrivals in any window (x, x + length) inside a span, after the span's first ``skip_s``."""
    fewest: int | None = None
    for start, end in spans:
        low, high = start + skip_s, end - length_s
        if high < low:
            continue
        first, last = bisect.bisect_left(times, low), bisect.bisect_right(times, high)
        for x in [low, *times[first:last]]:
            n = bisect.bisect_left(times, x + length_s) - bisect.bisect_right(times, x)
            fewest = n if fewest is None else min(fewest, n)
    return fewest


def sent_while_waiting(times: list[float], spans: list[tuple[float, float]], skip_s: float,
                       min_s: float) -> tuple[int, float]:
    """Arrivals inside the spans of at least ``min_s`` after their first ``skip_s``, and how long those parts last."""
    sent, span_s = 0, 0.0
    for start, end in spans:
        if end - start >= skip_s + min_s:
            sent += bisect.bisect_left(times, end) - bisect.bisect_left(times, start + skip_s)
            span_s += end - start - skip_s
    return sent, span_s


@dataclass
class Figures:
    """What the tests assert, and what they only report; shares of R unless said otherwise."""

    most_per_period: int
    worst_window: float | None  # fewest sent in a (period + safety + reuse) window while requests waited
    mean_while_waiting: float | None  # sent per period while requests waited, after each wait's first period
    # (waits of at least three long windows only: over shorter ones the slots' phase decides)
    worst_bare_period: float | None  # fewest in a bare period window while waiting: reported only
    worst_kind_share: float | None  # fewest of a kind in a long window while both kinds waited, over its share
    waited_s: float
    finished: float

    def __str__(self) -> str:
        def pct(x: float | None) -> str:
            return "-" if x is None else f"{100 * x:.1f}%"

        return (f"max/period={self.most_per_period} worst-window={pct(self.worst_window)} "
                f"mean-while-waiting={pct(self.mean_while_waiting)} bare-period={pct(self.worst_bare_period)} "
                f"kind-share={pct(self.worst_kind_share)} waited={self.waited_s:.0f}s "
                f"finished={pct(self.finished)}")


def figures(result: Result) -> Figures:
    limit, times = result.limit, result.arrivals
    spans = waiting_spans(result.waiting, result.end_s)
    long_s = PERIOD_S + SAFETY_S + result.reuse_s
    worst = fewest_in_windows(times, spans, long_s, skip_s=PERIOD_S)
    bare = fewest_in_windows(times, spans, PERIOD_S, skip_s=PERIOD_S)
    sent, span_s = sent_while_waiting(times, spans, skip_s=PERIOD_S, min_s=3 * long_s)
    both = waiting_spans(result.waiting, result.end_s, both=True)
    kind_share: float | None = None
    for kind in (SUBMIT, POLL):
        of_kind = [t for t, k in zip(times, result.kinds, strict=True) if k == kind]
        fewest = fewest_in_windows(of_kind, both, long_s, skip_s=PERIOD_S)
        if fewest is not None:
            share = fewest / result.shares[kind]
            kind_share = share if kind_share is None else min(kind_share, share)
    return Figures(most_in_any_window(times, PERIOD_S), None if worst is None else worst / limit,
                   sent / limit / (span_s / PERIOD_S) if span_s else None, None if bare is None else bare / limit,
                   kind_share, sum(end - start for start, end in spans), result.finished / max(result.recordings, 1))


def tenant_shares(result: Result, tenants: tuple[str, ...], skip_s: float = PERIOD_S) -> dict[str, float] | None:
    """Each tenant's share of the submits that reached Plaud while all of ``tenants`` had submits
    waiting (after each such span's first ``skip_s``); None when they never all waited that long."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for t, waiting in [*result.tenants_waiting, (result.end_s, frozenset())]:
        on = waiting >= set(tenants)
        if on and start is None:
            start = t
        elif not on and start is not None:
            spans.append((start, t))
            start = None
    counts = dict.fromkeys(tenants, 0)
    for t, tenant in result.submits:
        if tenant in counts and any(begin + skip_s <= t < end for begin, end in spans):
            counts[tenant] += 1
    total = sum(counts.values())
    return {tenant: n / total for tenant, n in counts.items()} if total else None


def release_concurrently(budgets: list[Budget], *, now_us: int, rounds: int = 20) -> list[tuple[str, str]]:
    """Every budget (each on its own connection) releasing at once, ``rounds`` times: all the grants."""
    granted: list[tuple[str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(len(budgets))

    def releaser(b: Budget) -> None:
        start.wait()
        for _ in range(rounds):
            got = b.release(now_us=now_us).granted
            with lock:
                granted.extend(got)

    threads = [threading.Thread(target=releaser, args=(b,)) for b in budgets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return granted


def take_and_release_concurrently(budgets: list[Budget],
                                  request: Callable[[int, int], tuple[str, str, dict[str, str]]],
                                  *, each: int = 60) -> list[str]:
    """Every budget on its own thread takes ``each`` requests (``request(budget index, i)`` gives
    kind, waiter and take's keyword arguments), releasing after each and sending what it is
    granted, on Redis's own clock: every waiter that went out."""
    sent: list[str] = []
    lock = threading.Lock()

    def worker(index: int, b: Budget) -> None:
        for i in range(each):
            kind, waiter, options = request(index, i)
            if b.take(kind, waiter, **options):
                with lock:
                    sent.append(waiter)
            for granted_kind, granted in b.release().granted:
                assert b.take(granted_kind, granted)
                with lock:
                    sent.append(granted)

    threads = [threading.Thread(target=worker, args=(i, b)) for i, b in enumerate(budgets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sent
