"""plaud.budget's parts on a real redis-server: taking, waiting, grants and their ttl, cancel, shares, races."""

from __future__ import annotations

import time

import pytest
import redis

from plaud.budget import POLL, SUBMIT, Budget, Load, Release
from plaud.rates import Rate
from tests.budget_sim import release_concurrently, take_and_release_concurrently

T0 = 1_700_000_000_000_000  # a fake clock, in us
S = 1_000_000
WINDOW = 61 * S  # 60/m plus the safety second


def budget(redis_client, limit: int = 4, **kwargs) -> Budget:
    """A budget unpaced (one slice), polls first come, first served: the window's own mechanics; the
    pacing and poll priorities have tests of their own."""
    kwargs = {"slices": 1, "poll_priorities": False, **kwargs}
    return Budget(redis_client, Rate(limit, 60.0), key="test:budget", **kwargs)


def fill(b: Budget, n: int, at: int | None = T0, kind: str = SUBMIT, prefix: str = "r", step_us: int = 0) -> list[bool]:
    """``n`` requests of ``kind`` from ``at`` (None: on Redis's clock), ``step_us`` apart."""
    return [b.take(kind, f"{prefix}{i}", now_us=None if at is None else at + i * step_us) for i in range(n)]


def test_a_free_slot_is_taken_at_once_and_a_refused_request_waits_as_data(redis_client):
    b = budget(redis_client)
    assert fill(b, 6) == [True] * 4 + [False] * 2
    assert b.position("r4", SUBMIT) == 0 and b.position("r5", SUBMIT) == 1 and b.position("r0", SUBMIT) is None
    load = b.load(now_us=T0 + 10 * S)
    assert (load.used, load.submits_waiting, load.polls_waiting, load.granted) == (4, 2, 0, 0)
    assert load.oldest_wait_s == 10.0 and load.next_free_in_s == 51.0
    # Asking again keeps the place (and the first refusal's time).
    assert not b.take(SUBMIT, "r5", now_us=T0 + 20 * S) and b.position("r5", SUBMIT) == 1
    assert b.load(now_us=T0 + 30 * S).oldest_wait_s == 30.0


def test_nobody_jumps_the_queue_but_its_head_may_take_a_freed_slot(redis_client):
    b = budget(redis_client)
    fill(b, 5)  # r4 waits
    later = T0 + WINDOW
    assert not b.take(SUBMIT, "newcomer", now_us=later)  # slots are free, but r4 is ahead
    assert b.position("newcomer", SUBMIT) == 1
    assert b.take(SUBMIT, "r4", now_us=later)  # the head, asking again, goes
    assert b.position("r4", SUBMIT) is None and b.position("newcomer", SUBMIT) == 0


def test_order_is_where_a_policy_places_a_new_waiter(redis_client):
    b = budget(redis_client)
    fill(b, 6)  # r4, r5 wait
    assert not b.take(SUBMIT, "urgent", order=1.0, now_us=T0 + S)  # the window is full: it waits, first
    assert [b.position(w, SUBMIT) for w in ("urgent", "r4", "r5")] == [0, 1, 2]
    assert b.release(now_us=T0 + WINDOW).granted[0] == (SUBMIT, "urgent")


def test_release_grants_in_order_and_the_slot_counts_from_the_send(redis_client):
    b = budget(redis_client, limit=2)
    fill(b, 5)  # r2, r3, r4 wait
    assert b.release(now_us=T0 + 10 * S) == Release([], [], 51.0, 3, 0)  # nothing free yet
    release = b.release(now_us=T0 + WINDOW)
    assert release.granted == [(SUBMIT, "r2"), (SUBMIT, "r3")]
    assert (release.waiting, release.outstanding, release.next_free_in_s) == (1, 2, 61.0)
    assert b.position("r2", SUBMIT) is None and b.position("r4", SUBMIT) == 0
    load = b.load(now_us=T0 + WINDOW)
    assert (load.used, load.granted, load.submits_waiting) == (2, 2, 1)
    # r2's task comes 5 s later: its slot now counts from then; r3's still from its grant.
    assert b.take(SUBMIT, "r2", now_us=T0 + WINDOW + 5 * S)
    assert b.load(now_us=T0 + WINDOW + 5 * S).granted == 1
    # r3 never came: its grant expired and, no request having gone out on it, its slot went to r4;
    # r2's slot counts from its send.
    release = b.release(now_us=T0 + WINDOW + 30 * S)
    assert release.expired == [(SUBMIT, "r3")] and release.granted == [(SUBMIT, "r4")]
    assert release.next_free_in_s == 36.0  # r2's slot: a window after its send, 5 s after the grant


def test_a_grant_never_used_expires_and_its_slot_goes_to_the_next_waiter(redis_client):
    b = budget(redis_client, limit=1, grant_ttl_s=30.0)
    fill(b, 3)  # r1, r2 wait
    granted_at = T0 + WINDOW
    assert b.release(now_us=granted_at).granted == [(SUBMIT, "r1")]
    assert b.release(now_us=granted_at + 29 * S).expired == []
    release = b.release(now_us=granted_at + 30 * S)
    # No request went out on r1's grant: its slot is free again, and r2 has it at once.
    assert release.expired == [(SUBMIT, "r1")] and release.granted == [(SUBMIT, "r2")]
    assert b.load(now_us=granted_at + 30 * S).used == 1
    # r1's task, late, has no grant any more: it waits like anyone new.
    assert not b.take(SUBMIT, "r1", now_us=granted_at + 31 * S)
    assert b.position("r1", SUBMIT) == 0


def test_a_late_task_whose_grant_was_not_given_up_yet_still_uses_it(redis_client):
    b = budget(redis_client, limit=1, grant_ttl_s=10.0)
    fill(b, 2)
    assert b.release(now_us=T0 + WINDOW).granted == [(SUBMIT, "r1")]
    assert b.take(SUBMIT, "r1", now_us=T0 + WINDOW + 11 * S)  # past its ttl, but no release gave it up
    release = b.release(now_us=T0 + WINDOW + 12 * S)
    assert release.expired == [] and release.granted == [] and release.waiting == 0


def test_the_grant_ttl_stays_within_the_window(redis_client):
    assert budget(redis_client, grant_ttl_s=3600.0).grant_ttl_us == 60 * S


def test_cancel_drops_a_waiter_or_an_unused_grant_and_frees_its_slot(redis_client):
    b = budget(redis_client, limit=2)
    fill(b, 5)
    assert b.cancel("r3") and b.position("r3", SUBMIT) is None
    assert b.load(now_us=T0).submits_waiting == 2
    assert b.release(now_us=T0 + WINDOW).granted == [(SUBMIT, "r2"), (SUBMIT, "r4")]
    assert b.cancel("r4", SUBMIT)
    load = b.load(now_us=T0 + WINDOW)
    assert (load.used, load.granted) == (1, 1)  # no request went out on r4's grant: its slot is free again
    assert b.take(SUBMIT, "r4", now_us=T0 + WINDOW)  # so a late r4 takes a fresh slot, counted
    assert not b.cancel("r4") and not b.cancel("nobody")
    assert b.take(SUBMIT, "r2", now_us=T0 + WINDOW) and not b.cancel("r2")  # a grant used is a request sent


def test_position_is_per_kind(redis_client):
    b = budget(redis_client, limit=1)
    assert b.take(POLL, "busy", now_us=T0)
    for i in range(3):
        assert not b.take(POLL, f"p{i}", now_us=T0 + i)
        assert not b.take(SUBMIT, f"s{i}", now_us=T0 + i)
    assert [b.position(f"p{i}", POLL) for i in range(3)] == [0, 1, 2]
    assert b.position("p0", SUBMIT) is None and b.position("s2", SUBMIT) == 2
    with pytest.raises(ValueError, match="kind"):
        b.position("p0", "get")
    with pytest.raises(ValueError, match="kind"):
        b.take("get", "p0")


def test_while_both_kinds_wait_each_keeps_its_share(redis_client):
    b = budget(redis_client, limit=10)
    fill(b, 10)
    fill(b, 20, at=T0 + 1, prefix="s", step_us=2)
    fill(b, 20, at=T0 + 2, kind=POLL, prefix="p", step_us=2)
    granted = b.release(now_us=T0 + WINDOW).granted
    assert [kind for kind, _ in granted].count(SUBMIT) == 5 and len(granted) == 10
    assert [w for k, w in granted if k == POLL] == [f"p{i}" for i in range(5)]  # in order within a kind
    redis_client.flushall()
    b = budget(redis_client, limit=10, submit_share=0.8)
    fill(b, 10)
    fill(b, 20, at=T0 + 1, prefix="s")
    fill(b, 20, at=T0 + 2, kind=POLL, prefix="p")
    assert [kind for kind, _ in b.release(now_us=T0 + WINDOW).granted].count(SUBMIT) == 8


def test_a_kind_waiting_alone_uses_the_whole_window_then_yields_to_the_other(redis_client):
    b = budget(redis_client, limit=10)
    fill(b, 10, kind=POLL, prefix="busy")
    fill(b, 30, at=T0 + 1, prefix="s")
    granted = b.release(now_us=T0 + WINDOW).granted
    assert len(granted) == 10  # submits waiting alone: all ten
    for i, (kind, waiter) in enumerate(granted):
        assert b.take(kind, waiter, now_us=T0 + WINDOW + i * S)  # sent a second apart
    fill(b, 30, at=T0 + WINDOW + 20 * S, kind=POLL, prefix="p")
    # Submits hold all ten; as their slots free one by one, polls get them until each kind has its half.
    kinds = [kind for i in range(10) for kind, _ in b.release(now_us=T0 + 2 * WINDOW + i * S).granted]
    assert kinds == [POLL] * 5 + [SUBMIT] * 5


def test_neither_kind_starves_over_many_windows(redis_client):
    b = budget(redis_client, limit=6)
    sent = {SUBMIT: 0, POLL: 0}
    now = T0
    for window in range(20):
        for i in range(12):  # both kinds keep arriving faster than the budget
            b.take(SUBMIT, f"s{window}-{i}", now_us=now)
            b.take(POLL, f"p{window}-{i}", now_us=now)
        now += WINDOW
        for kind, waiter in b.release(now_us=now).granted:
            assert b.take(kind, waiter, now_us=now)
            sent[kind] += 1
    assert sent == {SUBMIT: 60, POLL: 60}


def test_one_slot_goes_to_the_oldest_waiter_of_either_kind(redis_client):
    b = budget(redis_client, limit=1)
    assert b.take(SUBMIT, "first", now_us=T0)
    for i in range(3):
        assert not b.take(POLL if i == 1 else SUBMIT, f"w{i}", now_us=T0 + 1 + i)
        assert not b.take(SUBMIT if i == 1 else POLL, f"v{i}", now_us=T0 + 100 + i)
    order = []
    for i in range(1, 7):
        (kind, waiter), = b.release(now_us=T0 + i * WINDOW).granted
        assert b.take(kind, waiter, now_us=T0 + i * WINDOW)
        order.append(waiter)
    assert order == ["w0", "w1", "w2", "v0", "v1", "v2"]


@pytest.mark.parametrize("slices", [1, 8])
def test_two_releasers_at_once_never_grant_more_than_the_window(redis_server, slices):
    clients = [redis.Redis.from_url(redis_server.url) for _ in range(8)]
    clients[0].flushall()
    budgets = [Budget(c, Rate(50, 60.0), key="race", slices=slices) for c in clients]
    room = budgets[0].pace_burst  # 50 unpaced; paced, 7 at once
    assert room == (50 if slices == 1 else 7)
    for i in range(300):
        assert not budgets[0].take(SUBMIT if i % 2 else POLL, f"w{i}", now_us=T0) or i < room
    granted = release_concurrently(budgets, now_us=T0 + WINDOW)
    assert len(granted) == room and len(set(granted)) == room
    assert budgets[0].load(now_us=T0 + WINDOW).used == room
    for c in clients:
        c.close()


@pytest.mark.parametrize("slices", [1, 8])
def test_takers_and_releasers_racing_on_the_redis_clock_stay_within_the_limit(redis_server, slices):
    clients = [redis.Redis.from_url(redis_server.url) for _ in range(6)]
    clients[0].flushall()
    budgets = [Budget(c, Rate(40, 60.0), key="race", slices=slices) for c in clients]
    room = budgets[0].pace_burst  # the whole window unpaced; paced, 5 at once
    sent = take_and_release_concurrently(
        budgets, lambda index, i: (SUBMIT if i % 3 else POLL, f"w{index}-{i}", {}))
    assert len(sent) == room == len(set(sent))  # at once: exactly the room, nobody twice
    load = budgets[0].load()
    assert load.used == room and load.submits_waiting + load.polls_waiting == 6 * 60 - room
    assert 0 < load.next_free_in_s <= 61.0 / slices
    for c in clients:
        c.close()


def test_load_keeps_the_plan_and_the_slack_of_the_limiter(redis_client):
    b = budget(redis_client, limit=10)
    fill(b, 4, at=None)
    now_s = time.time()
    b.plan("submit:a", now_s)
    b.plan("poll:a", now_s + 10)
    b.plan("poll:b", now_s + 3600)  # beyond a period: not counted yet
    load = b.load()  # Redis's clock: the plan is in epoch seconds
    assert isinstance(load, Load) and (load.used, load.planned) == (4, 2)
    assert load.slack == pytest.approx(0.4)
    b.plan("poll:a", now_s + 5, instead_of=("submit:a",))
    b.unplan("poll:b")
    assert b.load().planned == 1
    assert Load(10, 4, submits_waiting=3, polls_waiting=1, planned=2).slack == pytest.approx(0.2)


def test_release_says_when_a_dispatcher_should_look_again(redis_client):
    b = budget(redis_client, limit=2)
    fill(b, 3)
    release = b.release(now_us=T0 + 20 * S)
    assert release.next_free_in_s == 41.0 and release.wake_in_s(tick_s=1.0) == 1.0
    assert Release([], [], 0.3, 1, 0).wake_in_s(tick_s=1.0) == 0.3
    assert Release([], [], 0.0, 0, 0).wake_in_s(tick_s=1.0) == 1.0
    assert b.next_free_in_s(now_us=T0 + 60 * S) == 1.0


def test_a_waiter_costs_a_few_hundred_bytes(redis_client):
    b = budget(redis_client, limit=1)
    b.take(SUBMIT, "busy", now_us=T0)
    n = 2000
    for i in range(n):
        b.take(SUBMIT, f"{i:08d}-aaaa-bbbb-cccc-dddddddddddd", now_us=T0 + i)  # uuid-sized recording ids
    per_waiter = sum(redis_client.memory_usage(k, samples=0) or 0 for k in b.keys) / n
    assert per_waiter < 400, per_waiter  # about 365 on Redis 7.0 (a waiting submit: its tenant too); a poll 270


def test_a_caller_with_no_task_to_wake_is_refused_without_joining_the_line(redis_client):
    b = budget(redis_client, limit=1)
    assert b.take(SUBMIT, "first", now_us=T0)
    assert not b.take(SUBMIT, "a-script", queue=False, now_us=T0 + S)
    assert b.load(now_us=T0 + S).submits_waiting == 0 and b.position("a-script", SUBMIT) is None
    assert b.next_free_in_s(now_us=T0 + S) == 60.0  # when to ask again: the window is 61 s long


def test_holds_says_what_a_recording_waits_for_or_holds_a_grant_of(redis_client):
    b = budget(redis_client, limit=1)
    assert b.take(POLL, "sent", now_us=T0)
    assert not b.take(SUBMIT, "waits", now_us=T0 + S)
    assert (b.holds("sent"), b.holds("waits"), b.holds("never-seen")) == (None, SUBMIT, None)
    assert b.release(now_us=T0 + WINDOW + S).granted == [(SUBMIT, "waits")]
    assert b.holds("waits") == SUBMIT  # granted, its task on the way: still not lost
    assert b.take(SUBMIT, "waits", now_us=T0 + WINDOW + 2 * S) and b.holds("waits") is None


# -- the pace -----------------------------------------------------------------------------------


def test_the_pace_lets_a_burst_go_an_eighth_at_once_then_one_every_window_over_the_limit(redis_client):
    b = budget(redis_client, limit=120, slices=8)
    gap_us = WINDOW // 120  # 0.508 s: the window's own rate
    assert (b.pace_burst, b.pace_us) == (15, gap_us)
    assert fill(b, 40) == [True] * 15 + [False] * 25  # the window has room for 120; the pace for 15
    assert b.load(now_us=T0).next_free_in_s == pytest.approx(gap_us / S, abs=1e-6)
    assert b.release(now_us=T0 + gap_us - 1).granted == []
    assert [w for _, w in b.release(now_us=T0 + gap_us).granted] == ["r15"]
    assert len(b.release(now_us=T0 + 11 * gap_us).granted) == 10  # one per gap, none banked beyond them
    # Idle, the pace fills up again to its burst, and no further: the window's limit stays the bound.
    assert len(b.release(now_us=T0 + 200 * gap_us).granted) == 14  # the rest of the 40
    assert fill(b, 30, at=T0 + 200 * gap_us, prefix="later") == [True] + [False] * 29


def test_over_a_long_backlog_the_pace_sends_the_whole_limit_every_window(redis_client):
    b = budget(redis_client, limit=120, slices=8)
    fill(b, 600)
    sent = [(T0, 15)]
    for tick in range(1, 4 * 61 + 1):  # a dispatcher every second for four windows; its grants sent at once
        now = T0 + tick * S
        granted = b.release(now_us=now).granted
        assert all(b.take(kind, waiter, now_us=now) for kind, waiter in granted)
        sent.append((now, len(granted)))
    for start in range(0, 3 * 61):
        in_window = sum(n for at, n in sent if T0 + start * S <= at < T0 + start * S + WINDOW)
        assert 119 <= in_window <= 120, (start, in_window)


def test_a_grant_given_up_gives_its_time_back_to_the_pace(redis_client):
    b = budget(redis_client, limit=4, slices=4, grant_ttl_s=10.0)  # a burst of one, then one every 15.25 s
    gap_us = b.pace_us
    assert (b.pace_burst, gap_us) == (1, WINDOW // 4)
    fill(b, 3)  # r0 sent; r1, r2 wait
    assert b.release(now_us=T0 + gap_us).granted == [(SUBMIT, "r1")]
    # r1's task is lost: at its grant's ttl (10 s, before the pace's next turn) its slot and its turn
    # of the pace go to r2 at once; without the pace's turn back, r2 would wait another 5.25 s.
    release = b.release(now_us=T0 + gap_us + 10 * S)
    assert release.expired == [(SUBMIT, "r1")] and release.granted == [(SUBMIT, "r2")]
    # Given back once only: the pace's burst is still one.
    assert not b.take(SUBMIT, "r3", now_us=T0 + gap_us + 10 * S)


def test_one_slice_is_unpaced_and_a_budget_of_few_requests_needs_no_pace(redis_client):
    assert budget(redis_client, limit=120, slices=1).pace_us == 0
    assert budget(redis_client, limit=5, slices=8).pace_burst == 1
    assert fill(budget(redis_client, limit=120, slices=1), 121) == [True] * 120 + [False]
    with pytest.raises(ValueError, match="slices"):
        budget(redis_client, slices=0)
