"""plaud.budget's policy on a fake clock through its real scripts: fair shares between tenants, priorities within one.

The issue's acceptance for the policy: shares within 5 % of the weights over a long backlog; a high
request's wait bounded by about one budget period behind any low backlog; no starvation of low.
``-s`` prints the measured figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

import pytest
import redis

from plaud.budget import POLL, SUBMIT, Budget, parse_tenant_weights
from plaud.rates import Rate
from tests.budget_sim import release_concurrently, take_and_release_concurrently

T0 = 1_700_000_000_000_000  # a fake clock, in us
S = 1_000_000
WINDOW = 61 * S  # per 60 s, plus the safety second
SHARE_TOLERANCE = 0.05  # of each tenant's due share


def budget(redis_client, limit: int = 60, period_s: float = 60.0, **kwargs) -> Budget:
    """Unpaced (one slice) unless told: the policy decides who goes, pacing only when (its own tests)."""
    return Budget(redis_client, Rate(limit, period_s), key="fair", **{"slices": 1, **kwargs})


def tenant_of(waiter: str) -> str:
    return waiter.split("-", 1)[0]


def busy(b: Budget, n: int, at: int = T0, step_us: int = 0) -> None:
    """Fill ``n`` slots with polls sent from ``at``: nothing of them waits."""
    for i in range(n):
        assert b.take(POLL, f"busy{at}.{i}", now_us=at + i * step_us)


def enqueue(b: Budget, tenant: str, n: int, at: int, *, priority: str = "normal", first: int = 0,
            step_us: int = 1) -> list[str]:
    """``n`` submits of ``tenant``, named ``tenant-i``, refused (the window is full) and waiting."""
    names = [f"{tenant}-{priority}{first + i}" for i in range(n)]
    for i, name in enumerate(names):
        assert not b.take(SUBMIT, name, tenant=tenant, priority=priority, now_us=at + i * step_us)
    return names


def drain(b: Budget, start: int, end: int, step_us: int = S,
          every: Callable[[int, list[str]], Iterable[str]] | None = None) -> list[tuple[int, str]]:
    """Release every ``step_us`` from ``start`` to ``end``, each granted task sending at once: (time, waiter)
    of each submit sent. ``every(now, granted)`` may enqueue more, returning those that went at once."""
    sent: list[tuple[int, str]] = []
    now = start
    while now <= end:
        granted = []
        for kind, waiter in b.release(now_us=now).granted:
            assert b.take(kind, waiter, now_us=now)
            if kind == SUBMIT:
                granted.append(waiter)
        sent.extend((now, w) for w in granted)
        if every is not None:
            sent.extend((now, w) for w in every(now, granted))
        now += step_us
    return sent


def shares(sent: Iterable[tuple[int, str]]) -> dict[str, float]:
    counts = Counter(tenant_of(w) for _, w in sent)
    total = sum(counts.values())
    return {tenant: n / total for tenant, n in sorted(counts.items())}


def assert_shares(found: dict[str, float], weights: dict[str, float]) -> None:
    total = sum(weights.values())
    for tenant, weight in weights.items():
        due = weight / total
        assert abs(found.get(tenant, 0.0) - due) <= SHARE_TOLERANCE * due, (tenant, found, weights)


# -- fair shares between tenants -----------------------------------------------------------------


@pytest.mark.parametrize("weights", [{"acme": 3, "beta": 1}, {"a": 2, "b": 1, "c": 1}, {"x": 1, "y": 1},
                                     {"big": 5, "small": 0.5}], ids=str)
def test_backlogged_tenants_share_the_grants_by_their_weights(redis_client, weights):
    b = budget(redis_client, limit=60, tenant_weights=weights)
    busy(b, 60, step_us=S // 2)
    for tenant in weights:  # a long backlog each, more than their share arriving every minute
        enqueue(b, tenant, 800, at=T0 + S)

    def more(now: int, granted: list[str]) -> list[str]:
        if (now - T0) % (60 * S) == 0:  # once a minute: 40 more each, still backlogged
            for tenant in weights:
                enqueue(b, tenant, 40, at=now, first=1000 + (now - T0) // S)
        return []

    sent = drain(b, T0 + WINDOW, T0 + 20 * WINDOW, every=more)
    assert len(sent) >= 19 * 60  # the whole budget, fairness or not: each slot reused every 61 s
    found = shares(sent)
    print(f"\nweights {weights}: {len(sent)} grants, shares {({t: round(s, 4) for t, s in found.items()})}")
    assert_shares(found, weights)
    # Not only on the whole: every minute's grants split by the weights too (within one grant each).
    total = sum(weights.values())
    for minute in range(1, 20):
        in_minute = [(t, w) for t, w in sent if T0 + minute * WINDOW <= t < T0 + (minute + 1) * WINDOW]
        counts = Counter(tenant_of(w) for _, w in in_minute)
        for tenant, weight in weights.items():
            assert abs(counts[tenant] - len(in_minute) * weight / total) <= 2, (minute, counts)


def test_shares_hold_for_the_submits_while_polls_keep_their_share(redis_client):
    b = budget(redis_client, limit=60, tenant_weights={"acme": 3, "beta": 1})
    busy(b, 60, step_us=S // 2)
    for i in range(600):
        assert not b.take(POLL, f"poll-{i}", tenant="beta", priority="high", now_us=T0 + S + i)
    enqueue(b, "acme", 600, at=T0 + 2 * S)
    enqueue(b, "beta", 600, at=T0 + 2 * S)
    sent: list[tuple[int, str, str]] = []
    for step in range(8 * 61):
        now = T0 + WINDOW + step * S
        for kind, waiter in b.release(now_us=now).granted:
            assert b.take(kind, waiter, now_us=now)
            sent.append((now, kind, waiter))
    kinds = Counter(kind for _, kind, _ in sent)
    assert abs(kinds[SUBMIT] - kinds[POLL]) <= 2  # half each, as before tenants
    submits = [(t, w) for t, k, w in sent if k == SUBMIT]
    print(f"\nwith polls waiting: {dict(kinds)}, submit shares {shares(submits)}")
    assert_shares(shares(submits), {"acme": 3, "beta": 1})


def test_a_tenant_waiting_alone_uses_the_whole_budget(redis_client):
    b = budget(redis_client, limit=60, tenant_weights={"acme": 1, "beta": 9})
    busy(b, 60, step_us=S // 2)
    enqueue(b, "acme", 400, at=T0 + S)
    sent = drain(b, T0 + WINDOW, T0 + 5 * WINDOW)  # four windows of slots reused
    assert len(sent) >= 4 * 60 and {tenant_of(w) for _, w in sent} == {"acme"}


def test_a_tenant_joining_later_gets_its_share_from_then_on_with_no_banked_credit(redis_client):
    b = budget(redis_client, limit=60)
    busy(b, 60, step_us=S // 2)
    enqueue(b, "acme", 1000, at=T0 + S)
    joined = T0 + 6 * WINDOW
    sent = drain(b, T0 + WINDOW, joined)
    assert {tenant_of(w) for _, w in sent} == {"acme"}  # five minutes alone: all of it
    enqueue(b, "beta", 1000, at=joined)  # just after a release: the window is full
    after = drain(b, joined + S, joined + 10 * WINDOW)
    first = [tenant_of(w) for _, w in after[:20]]
    # Idle for five minutes, beta still gets only its half from the moment it joins: no burst.
    assert first.count("beta") in (10, 11), first
    print(f"\nbeta joining after 5 min of acme alone: first 20 grants {first}, then {shares(after)}")
    assert_shares(shares(after), {"acme": 1, "beta": 1})


def test_once_no_submit_waits_every_tenant_starts_even(redis_client):
    """A tenant's debt (it was served ahead of its weight) lasts while others wait, not past an idle budget."""
    b = budget(redis_client, limit=4, tenant_weights={"light": 0.25})
    busy(b, 4)
    enqueue(b, "light", 1, at=T0 + S)
    assert [w for _, w in drain(b, T0 + WINDOW, T0 + WINDOW)] == ["light-normal0"]  # alone: served, its tag 4 ahead
    assert redis_client.hkeys("fair:tags") == [b"#vtime"]  # nobody waits: nothing remembered
    busy(b, 3, at=T0 + WINDOW)
    enqueue(b, "light", 1, at=T0 + WINDOW + S, first=1)
    enqueue(b, "heavy", 4, at=T0 + WINDOW + 2 * S)
    granted = [w for _, w in drain(b, T0 + 2 * WINDOW + S, T0 + 2 * WINDOW + S)]
    # Both start even (the lower name first on a tie); with the old debt, light would come after all four.
    assert granted == ["heavy-normal0", "light-normal1", "heavy-normal1", "heavy-normal2"]


def test_leaving_and_coming_back_gains_a_tenant_nothing(redis_client):
    """A tenant whose line empties at every grant (one request at a time) still gets only its weight."""
    b = budget(redis_client, limit=60, tenant_weights={"bulk": 3, "trickle": 1})
    busy(b, 60, step_us=S // 2)
    enqueue(b, "bulk", 2000, at=T0 + S)
    enqueue(b, "trickle", 1, at=T0 + S)
    count = iter(range(1, 10_000))

    def again(now: int, granted: list[str]) -> list[str]:
        went: list[str] = []
        if any(tenant_of(w) == "trickle" for w in granted):  # its one request went: the next comes at once
            while b.take(SUBMIT, name := f"trickle-normal{next(count)}", tenant="trickle", now_us=now):
                went.append(name)  # went at once, the policy's pick: the next one comes
        return went

    sent = drain(b, T0 + WINDOW, T0 + 10 * WINDOW, every=again)
    print(f"\none request at a time at weight 1 against 3: {shares(sent)}")
    assert_shares(shares(sent), {"bulk": 3, "trickle": 1})


def test_a_high_request_of_another_tenant_waits_about_a_period_behind_150_low_ones(redis_client):
    """The issue's case at R = 120/min: tenant a enqueues 150 low-priority recordings, then b one high."""
    b = budget(redis_client, limit=120)
    busy(b, 120, step_us=S // 2)  # the window full, freeing a slot every half second from T0 + 61 s
    enqueue(b, "a", 150, at=T0 + 60 * S, priority="low")
    enqueued = T0 + 61 * S - 1
    assert not b.take(SUBMIT, "b-high", tenant="b", priority="high", now_us=enqueued)
    assert b.position("b-high", SUBMIT) == 1  # a's head first (a tie: the lower name), then b
    assert b.position("a-low0", SUBMIT) == 0 and b.position("a-low1", SUBMIT) == 2
    assert b.position("a-low149", SUBMIT) == 150
    sent = drain(b, T0 + WINDOW, T0 + 3 * WINDOW, step_us=S // 4)
    order = [w for _, w in sent]
    granted_at = dict((w, t) for t, w in sent)
    waited_s = (granted_at["b-high"] - enqueued) / S
    print(f"\nb's high behind a's 150 low: grant #{order.index('b-high') + 1}, waited {waited_s:.2f} s")
    assert order.index("b-high") <= 1 and waited_s <= 61.0
    # FIFO would have put it 151st: about 76 s behind, at R = 120 from a full window.
    assert order.index("a-low149") == 150


def test_a_high_request_waits_at_most_a_period_when_the_backlog_took_the_whole_window(redis_client):
    b = budget(redis_client, limit=120)
    for i in range(150):  # a's first 120 go at once, the window full for a period; 30 wait
        assert b.take(SUBMIT, f"a-low{i}", tenant="a", priority="low", now_us=T0 + i) == (i < 120)
    enqueued = T0 + S
    assert not b.take(SUBMIT, "b-high", tenant="b", priority="high", now_us=enqueued)
    sent = drain(b, T0 + 2 * S, T0 + 3 * WINDOW)
    order = [w for _, w in sent]
    waited_s = (dict((w, t) for t, w in sent)["b-high"] - enqueued) / S
    print(f"\nb's high after a's burst of 150 low: grant #{order.index('b-high') + 1}, waited {waited_s:.2f} s")
    assert order.index("b-high") <= 1 and waited_s <= 61.0


@pytest.mark.parametrize("weights", [{"a": 1, "b": 1}, {"a": 3, "b": 1}, {"a": 1, "b": 3}], ids=str)
def test_a_newcomer_tenant_gets_the_next_grant_it_is_due(redis_client, weights):
    b = budget(redis_client, limit=10, tenant_weights=weights)
    busy(b, 10)
    enqueue(b, "a", 150, at=T0 + S, priority="low")
    sent = drain(b, T0 + WINDOW, T0 + WINDOW + 30 * S)  # a served alone a while
    assert not b.take(SUBMIT, "b-0", tenant="b", now_us=T0 + WINDOW + 31 * S)
    due = b.position("b-0", SUBMIT)
    sent = drain(b, T0 + 2 * WINDOW, T0 + 3 * WINDOW)
    index = [w for _, w in sent].index("b-0")
    assert index == due and index <= 1  # within ~2 grants, whatever the weights


# -- priorities within a tenant --------------------------------------------------------------------


def test_within_a_tenant_high_goes_before_normal_before_low(redis_client):
    b = budget(redis_client, limit=10)
    busy(b, 10)
    at = T0 + S
    for i, priority in enumerate(["low", "normal", "high", "low", "normal", "high"]):
        assert not b.take(SUBMIT, f"acme-{priority}{i}", tenant="acme", priority=priority, now_us=at + i * S)
    assert [b.position(w, SUBMIT) for w in ("acme-high2", "acme-high5", "acme-normal1", "acme-low0")] == [0, 1, 2, 4]
    granted = [w for _, w in b.release(now_us=T0 + WINDOW).granted]
    assert granted == ["acme-high2", "acme-high5", "acme-normal1", "acme-normal4", "acme-low0", "acme-low3"]


def test_aging_a_request_that_waited_aging_s_longer_ranks_one_class_higher(redis_client):
    b = budget(redis_client, limit=10, period_s=3600.0, aging_s=60.0)  # a long window: all of them wait
    busy(b, 10)
    t0 = T0 + S
    arrivals = [("L", "low", t0), ("N1", "normal", t0 + 60 * S - 1), ("N2", "normal", t0 + 60 * S + 1),
                ("H1", "high", t0 + 120 * S - 2), ("H2", "high", t0 + 120 * S + 2)]
    for name, priority, at in arrivals:
        assert not b.take(SUBMIT, f"acme-{name}", tenant="acme", priority=priority, now_us=at)
    granted = [w.removeprefix("acme-") for _, w in b.release(now_us=T0 + 3601 * S + S).granted]
    # Low waited 60 s longer than N2 and 120 s longer than H2: it goes before both, not before N1, H1.
    assert granted == ["H1", "N1", "L", "N2", "H2"]


@pytest.mark.parametrize("aging_s", [60.0, None])
def test_low_is_not_starved_by_a_steady_stream_of_high(redis_client, aging_s):
    """High requests keep arriving a little faster than the budget; one low request waits among them."""
    b = budget(redis_client, limit=6, aging_s=aging_s)  # None: three periods
    aging = b.aging_s
    busy(b, 6, step_us=10 * S)
    enqueue(b, "acme", 12, at=T0 + S, priority="high")  # a backlog already
    low_at = T0 + 2 * S
    assert not b.take(SUBMIT, "acme-low", tenant="acme", priority="low", now_us=low_at)
    count = iter(range(100, 100_000))

    def stream(now: int, granted: list[str]) -> list[str]:
        if (now - T0) % (9 * S) == 0:  # one high every 9 s: 6.8 a minute against 6
            name = f"acme-high{next(count)}"
            assert not b.take(SUBMIT, name, tenant="acme", priority="high", now_us=now)
        return []

    horizon = T0 + int((2 * aging + 8 * 61) * S)
    sent = drain(b, T0 + 3 * S, horizon, every=stream)
    order = [w for _, w in sent]
    assert "acme-low" in order
    waited_s = (dict((w, t) for t, w in sent)["acme-low"] - low_at) / S
    print(f"\nlow among a steady stream of high, aging_s={aging:g}: waited {waited_s:.0f} s, "
          f"grant #{order.index('acme-low') + 1} of {len(order)}")
    # No high that came more than 2 * aging_s after it went before it; those before then did.
    assert waited_s <= 2 * aging + 6 * 61
    later = [w for w in order[:order.index("acme-low")] if w.startswith("acme-high")
             and int(w.removeprefix("acme-high")) >= 100 + (2 * aging + 0) // 9 + 1]
    assert later == []


def test_without_aging_the_same_stream_would_starve_low(redis_client):
    """The control: with aging out of reach, the low request is still waiting when the stream ends."""
    b = budget(redis_client, limit=6, aging_s=1e7)
    busy(b, 6, step_us=10 * S)
    enqueue(b, "acme", 12, at=T0 + S, priority="high")
    assert not b.take(SUBMIT, "acme-low", tenant="acme", priority="low", now_us=T0 + 2 * S)
    count = iter(range(100, 100_000))

    def stream(now: int, granted: list[str]) -> list[str]:
        if (now - T0) % (9 * S) == 0:
            assert not b.take(SUBMIT, f"acme-high{next(count)}", tenant="acme", priority="high", now_us=now)
        return []

    sent = drain(b, T0 + 3 * S, T0 + 20 * 61 * S, every=stream)
    assert len(sent) > 100 and "acme-low" not in [w for _, w in sent]
    assert b.position("acme-low", SUBMIT) is not None


def test_priorities_are_per_tenant_not_across_tenants(redis_client):
    """A tenant's high requests do not take another tenant's share: fairness first, then priority."""
    b = budget(redis_client, limit=10)
    busy(b, 10)
    enqueue(b, "a", 20, at=T0 + S, priority="high")
    enqueue(b, "b", 20, at=T0 + 2 * S, priority="low")
    granted = [tenant_of(w) for _, w in b.release(now_us=T0 + WINDOW).granted]
    assert granted == ["a", "b"] * 5


# -- polls -------------------------------------------------------------------------------------------


def test_without_poll_priorities_polls_are_first_come_first_served_whatever_their_tenant(redis_client):
    b = budget(redis_client, limit=10, tenant_weights={"acme": 9}, poll_priorities=False)
    busy(b, 10)
    names = []
    for i, (tenant, priority) in enumerate([("beta", "low"), ("acme", "high"), ("beta", "normal"),
                                            ("acme", "low"), ("beta", "high"), ("acme", "normal")] * 2):
        names.append(f"{tenant}-{priority}{i}")
        assert not b.take(POLL, names[-1], tenant=tenant, priority=priority, now_us=T0 + S + i)
    assert [b.position(w, POLL) for w in names] == list(range(12))
    assert b.tenants_waiting() == {}  # polls stand in no tenant's line
    granted = [w for _, w in b.release(now_us=T0 + WINDOW).granted]
    assert granted == names[:10]


def test_polls_are_placed_by_priority_with_aging_across_tenants(redis_client):
    b = budget(redis_client, limit=10, aging_s=60.0)  # poll_priorities: the default
    busy(b, 10)
    for i, priority in enumerate(["low", "normal", "high", "normal", "low"]):
        assert not b.take(POLL, f"p{i}", tenant=("a", "b")[i % 2], priority=priority, now_us=T0 + S + i)
    assert not b.take(POLL, "late-low", priority="low", now_us=T0 + S + 121 * S)  # aged past a low 2 min older
    assert [w for _, w in b.release(now_us=T0 + 200 * S).granted] == ["p2", "p1", "p3", "p0", "p4", "late-low"]


# -- cancel, holds, position ----------------------------------------------------------------------


def test_cancel_takes_a_waiter_out_of_its_tenants_line_wherever_it_is(redis_client):
    b = budget(redis_client, limit=4, tenant_weights={"a": 2})
    busy(b, 4)
    enqueue(b, "a", 3, at=T0 + S, priority="low")
    enqueue(b, "b", 1, at=T0 + 2 * S, priority="high")
    assert (b.holds("b-high0"), b.tenant_of("b-high0"), b.tenant_of("a-low1")) == (SUBMIT, "b", "a")
    assert b.tenants_waiting() == {"a": 3, "b": 1}
    assert b.cancel("b-high0")  # its only waiter: b stops waiting
    assert (b.holds("b-high0"), b.tenant_of("b-high0"), b.position("b-high0", SUBMIT)) == (None, None, None)
    assert b.tenants_waiting() == {"a": 3} and b.load(now_us=T0 + 3 * S).submits_waiting == 3
    assert b.cancel("a-low1", SUBMIT) and not b.cancel("a-low1") and not b.cancel("a-low0", POLL)
    assert [b.position(w, SUBMIT) for w in ("a-low0", "a-low2")] == [0, 1]
    assert b.release(now_us=T0 + WINDOW).granted == [(SUBMIT, "a-low0"), (SUBMIT, "a-low2")]
    assert b.holds("a-low0") == SUBMIT and b.cancel("a-low0")  # an unused grant, its slot freed
    assert b.load(now_us=T0 + WINDOW).used == 1 and b.tenants_waiting() == {}


def test_a_cancelled_tenant_comes_back_where_it_left_off_not_earlier(redis_client):
    b = budget(redis_client, limit=10, tenant_weights={"a": 1, "b": 1})
    busy(b, 10)
    enqueue(b, "a", 30, at=T0 + S)
    enqueue(b, "b", 30, at=T0 + 2 * S)
    drain(b, T0 + WINDOW, T0 + WINDOW)  # ten grants: five each; a and b both due next at tag 5
    for i in range(5, 30):
        assert b.cancel(f"b-normal{i}")
    enqueue(b, "b", 10, at=T0 + WINDOW + S, first=100)
    granted = [tenant_of(w) for _, w in drain(b, T0 + 2 * WINDOW, T0 + 2 * WINDOW)]
    assert granted == ["a", "b"] * 5


def test_position_is_the_grant_order_under_the_policy(redis_client):
    weights = {"acme": 3, "beta": 1, "zed": 2, "eta": 0.5}
    b = budget(redis_client, limit=10, tenant_weights=weights)
    busy(b, 10)
    drain_now = T0 + 2 * S
    for tenant, n in (("acme", 40), ("beta", 25), ("zed", 30), ("eta", 6)):
        for i in range(n):
            priority = ("high", "normal", "low")[i % 3]
            enqueue(b, tenant, 1, at=drain_now + i, priority=priority, first=i)
    sent = drain(b, T0 + WINDOW, T0 + 3 * WINDOW - S)  # a few served first: the tags are under way
    names = [w.decode() for w in redis_client.hkeys("fair:tenant-of")]
    waiting = {w: b.position(w, SUBMIT) for w in names}
    assert sorted(waiting.values()) == list(range(len(waiting)))  # a place each, none shared
    rest = [w for _, w in drain(b, T0 + 4 * WINDOW, T0 + 20 * WINDOW)]
    assert len(sent) == 20 and len(rest) == len(waiting) == 81
    assert [rest.index(w) for w in waiting] == list(waiting.values())


def test_take_validates_tenant_and_priority(redis_client):
    b = budget(redis_client)
    with pytest.raises(ValueError, match="'bad tenant'"):
        b.take(SUBMIT, "r", tenant="bad tenant")
    with pytest.raises(ValueError, match="'urgent'"):
        b.take(SUBMIT, "r", priority="urgent")
    with pytest.raises(ValueError, match="'-x'"):
        b.take(POLL, "r", tenant="-x")
    with pytest.raises(ValueError, match="'x y'"):
        budget(redis_client, tenant_weights={"x y": 1})
    with pytest.raises(ValueError, match="weight of tenant 'a'"):
        budget(redis_client, tenant_weights={"a": 0})
    with pytest.raises(ValueError, match="aging_s"):
        budget(redis_client, aging_s=0)
    assert b.load().submits_waiting == 0


def test_parse_tenant_weights_reads_the_setting():
    assert parse_tenant_weights("acme=3, beta=1") == {"acme": 3.0, "beta": 1.0}
    assert parse_tenant_weights("") == {} and parse_tenant_weights(" acme = 0.5 ,") == {"acme": 0.5}
    for bad, message in (("acme", "tenant=weight"), ("acme=x", "'x'"), ("a b=1", "'a b'"), ("a=-1", "'a'")):
        with pytest.raises(ValueError, match=message):
            parse_tenant_weights(bad)


# -- the rest keeps working with tenants ----------------------------------------------------------


def test_a_submit_goes_at_once_only_when_no_submit_waits(redis_client):
    b = budget(redis_client, limit=2)
    assert b.take(SUBMIT, "a-0", tenant="a", now_us=T0) and b.take(SUBMIT, "a-1", tenant="a", now_us=T0)
    assert not b.take(SUBMIT, "a-2", tenant="a", now_us=T0 + S)
    later = T0 + WINDOW  # both slots free, a-2 still waiting: its tenant is due
    assert not b.take(SUBMIT, "b-0", tenant="b", priority="high", now_us=later)
    assert not b.take(SUBMIT, "c-0", tenant="c", queue=False, now_us=later)  # a script: not written down
    assert b.take(SUBMIT, "a-2", tenant="a", now_us=later)  # the pick, asking again, goes
    assert b.take(SUBMIT, "b-0", tenant="b", now_us=later)  # then b is the pick
    assert b.load(now_us=later).submits_waiting == 0
    assert not b.take(SUBMIT, "d-0", tenant="d", now_us=later + 1)  # the window is full again: d waits


def test_a_waiter_asking_again_keeps_its_tenant_and_place(redis_client):
    b = budget(redis_client, limit=1)
    busy(b, 1)
    enqueue(b, "a", 2, at=T0 + S, priority="low")
    assert not b.take(SUBMIT, "a-low1", tenant="other", priority="high", now_us=T0 + 2 * S)
    assert b.tenant_of("a-low1") == "a" and b.position("a-low1", SUBMIT) == 1


def test_waiters_of_the_version_before_tenants_are_adopted_by_the_default_tenant(redis_client):
    b = budget(redis_client, limit=3)
    busy(b, 3)
    for name in ["old2", "old0", "old1"]:  # the one submit line, as the earlier scripts wrote it
        order = {"old0": 1, "old1": 2, "old2": 3}[name]
        redis_client.zadd("fair:waiting:submit", {name: T0 + order})
        redis_client.zadd("fair:since:submit", {name: T0 + order})
    assert b.load(now_us=T0 + S).submits_waiting == 3
    assert [w for _, w in b.release(now_us=T0 + WINDOW).granted] == ["old0", "old1", "old2"]
    assert not redis_client.exists("fair:waiting:submit") and b.load(now_us=T0 + WINDOW).submits_waiting == 0


def test_a_waiting_submit_costs_a_few_hundred_bytes(redis_client):
    b = budget(redis_client, limit=1)
    busy(b, 1)
    n = 2000
    for i in range(n):  # uuid-sized recording ids, four tenants
        b.take(SUBMIT, f"{i:08d}-aaaa-bbbb-cccc-dddddddddddd", tenant=f"tenant-{i % 4}",
               priority=("high", "normal", "low")[i % 3], now_us=T0 + S + i)
    per_waiter = sum(redis_client.memory_usage(k, samples=0) or 0 for k in redis_client.keys("fair*")) / n
    print(f"\na waiting submit: {per_waiter:.0f} bytes")
    assert per_waiter < 420, per_waiter  # about 370 on Redis 7.0


def test_releasers_racing_over_tenants_never_grant_more_than_the_window(redis_server):
    clients = [redis.Redis.from_url(redis_server.url) for _ in range(8)]
    clients[0].flushall()
    # Unpaced: the whole window at once (pacing's own races are in test_budget.py).
    budgets = [Budget(c, Rate(50, 60.0), key="race", tenant_weights={"t0": 3}, slices=1) for c in clients]
    busy(budgets[0], 50)
    for i in range(300):
        assert not budgets[0].take(SUBMIT, f"t{i % 3}-{i}", tenant=f"t{i % 3}",
                                   priority=("high", "normal", "low")[i % 3], now_us=T0 + S)
    granted = release_concurrently(budgets, now_us=T0 + WINDOW)
    assert len(granted) == 50 and len(set(granted)) == 50
    assert Counter(tenant_of(w) for _, w in granted) == {"t0": 30, "t1": 10, "t2": 10}
    assert budgets[0].load(now_us=T0 + WINDOW).used == 50
    for c in clients:
        c.close()


def test_takers_racing_over_tenants_on_the_redis_clock_stay_within_the_limit(redis_server):
    clients = [redis.Redis.from_url(redis_server.url) for _ in range(6)]
    clients[0].flushall()
    budgets = [Budget(c, Rate(40, 60.0), key="race", tenant_weights={"t1": 2}, slices=1) for c in clients]

    def request(index: int, i: int) -> tuple[str, str, dict[str, str]]:
        tenant = f"t{(index + i) % 3}"
        return (SUBMIT if i % 3 else POLL, f"{tenant}-{index}.{i}",
                {"tenant": tenant, "priority": ("high", "low")[i % 2]})

    sent = take_and_release_concurrently(budgets, request)
    assert len(sent) == 40 == len(set(sent))
    load = budgets[0].load()
    assert load.used == 40 and load.submits_waiting + load.polls_waiting == 6 * 60 - 40
    assert sum(budgets[0].tenants_waiting().values()) == load.submits_waiting
    for c in clients:
        c.close()
