"""The budget scheduler on a fake clock, through its real Lua scripts on a real redis-server.

Each scenario is a burst (1x to 20x the window's R) with requests arriving steadily while others
wait, 1-8 workers, jobs of 5 s to 2 h each polled until done, R from 10/min to 6,000/min. Asserted
at Plaud's side (``tests/budget_sim.py`` says how it is measured and why the windows of criterion
2 are a period + safety + one reuse long):

1. never more than R in any window of the period;
2. no window (after each wait's first period) in which requests waited throughout and fewer than
   95 % of R were sent; and, while both kinds waited, each kept 90 % of its share;
3. every request eventually sent: every recording's job seen done.

With tenants (``Tenant``, ``Late``), the policy on the same runs: backlogged tenants' submits split
by their weights, and a late high-priority recording of another tenant not stuck behind a backlog.

Big R runs short bursts so the file stays within about half a minute. ``-s`` prints the figures.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.budget_sim import Figures, Late, Scenario, Simulation, Tenant, figures, tenant_shares

UTILISATION_MIN = 0.95
KIND_SHARE_MIN = 0.9

SCENARIOS = [
    Scenario(10, 20, workers=1, job_s=(5, 7200), seed=1),
    Scenario(10, 3, workers=1, steady=1.0, job_s=(5, 60), dispatch="next_free", seed=2),
    Scenario(30, 10, workers=2, job_s=(5, 600), second_burst=5, seed=3),
    Scenario(60, 20, workers=1, job_s=(5, 7200), dispatch="next_free", seed=4),
    Scenario(120, 151 / 120, workers=1, steady=0.0, job_s=(5, 30), seed=5),  # the issue's live run
    Scenario(120, 5, workers=2, job_s=(5, 600), release_on_finish=True, seed=6),
    Scenario(120, 20, workers=4, job_s=(5, 7200), seed=7),
    Scenario(120, 8, workers=3, job_s=(5, 900), lose_grants=0.02, seed=8),
    Scenario(300, 8, workers=3, job_s=(5, 1800), dispatch="next_free", seed=9),
    Scenario(600, 3, workers=5, job_s=(5, 600), dispatch="next_free", release_on_finish=True, seed=10),
    Scenario(600, 6, workers=8, job_s=(5, 3600), second_burst=2, seed=11),
    Scenario(1200, 3, workers=6, job_s=(5, 300), seed=12),
    Scenario(1200, 1, workers=6, steady=1.5, job_s=(5, 120), dispatch="next_free", seed=15),
    Scenario(3000, 2, workers=8, job_s=(5, 120), dispatch="next_free", seed=13),
    Scenario(6000, 1.5, workers=8, job_s=(5, 60), seed=14),
    Scenario(120, 8, workers=3, job_s=(5, 900), tenants=(Tenant("a", 3, "low"), Tenant("b", 1, "high"), Tenant("c")),
             seed=16),
]


def run(redis_client, scenario: Scenario, scheduler: str = "pull", horizon_s: float | None = None) -> Figures:
    result = Simulation(redis_client, scenario, scheduler, horizon_s=horizon_s).run()
    found = figures(result)
    print(f"\n{scheduler} {scenario.name}: {len(result.arrivals)} requests, {found}")
    return found


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda sc: sc.name)
def test_the_pull_scheduler_keeps_the_budget_full_and_never_over(redis_client, scenario):
    found = run(redis_client, scenario)
    assert found.most_per_period <= scenario.limit  # 1
    if found.worst_window is not None:  # 2: None only when no wait lasted long enough to measure
        # Lost tasks included: a grant given up frees its slot, so nothing of the budget is lost with them.
        assert found.worst_window >= UTILISATION_MIN
    if found.worst_kind_share is not None:
        assert found.worst_kind_share >= KIND_SHARE_MIN
    assert found.finished == 1.0  # 3


def test_the_long_waits_are_measured(redis_client):
    """Criterion 2 is not vacuous: the bursts keep requests waiting for many windows, both kinds too."""
    found = run(redis_client, Scenario(60, 10, workers=1, job_s=(5, 300), seed=21))
    assert found.worst_window is not None and found.waited_s > 10 * 60
    assert found.worst_kind_share is not None


def test_the_simulation_is_deterministic(redis_client):
    scenario = Scenario(30, 3, workers=2, job_s=(5, 300), seed=22)
    first = Simulation(redis_client, scenario).run()
    redis_client.flushall()
    again = Simulation(redis_client, scenario).run()
    assert first.arrivals == again.arrivals and first.waiting == again.waiting


def test_the_earlier_turns_let_the_budget_idle_while_requests_wait(redis_client):
    """The same harness on the turn-based limiter this replaced: the issue's burst collapses, criterion 2 fails."""
    scenario = Scenario(120, 151 / 120, workers=1, steady=0.0, job_s=(5, 30), seed=5)
    found = run(redis_client, scenario, "turns", horizon_s=20 * 60.0)
    assert found.most_per_period <= scenario.limit
    assert found.worst_window is not None and found.worst_window < 0.1
    assert found.finished < 0.8  # after 20 minutes; the pull scheduler needs about 2 (the ideal: 151 s)
    assert run(redis_client, scenario, horizon_s=3 * 60.0).finished == 1.0


@pytest.mark.parametrize("tenants", [(Tenant("a", 3), Tenant("b", 1)), (Tenant("a", 2), Tenant("b"), Tenant("c"))],
                         ids=lambda ts: ":".join(f"{t.name}{t.weight:g}" for t in ts))
def test_backlogged_tenants_share_the_submits_by_weight_and_the_budget_stays_full(redis_client, tenants):
    scenario = Scenario(120, 10, workers=2, job_s=(5, 300), tenants=tenants, seed=31)
    result = Simulation(redis_client, scenario).run()
    found = figures(result)
    shares = tenant_shares(result, tuple(t.name for t in tenants))
    print(f"\n{scenario.name}: submit shares while all waited {shares}, {found}")
    assert shares is not None
    total = sum(t.weight for t in tenants)
    for tenant in tenants:
        due = tenant.weight / total
        assert abs(shares[tenant.name] - due) <= 0.05 * due
    assert found.most_per_period <= scenario.limit and found.finished == 1.0
    assert found.worst_window is not None and found.worst_window >= UTILISATION_MIN  # fairness costs no budget


A_LOW, B_HIGH = Tenant("a", priority="low"), Tenant("b", priority="high")


def issue_case(spread_s: float, loaded: bool, **budget: Any) -> Scenario:
    """The issue's live run at R = 120/min: tenant a enqueues 150 low-priority recordings over ``spread_s``
    (as their uploads finish), then tenant b one high-priority 4 s recording; or b's alone. ``budget``:
    the scheduler's settings (``poll_priorities``, ``slices``) when not the fleet's defaults."""
    backlog = tuple(Late(i * spread_s / 150, 1, A_LOW) for i in range(150)) if loaded else ()
    return Scenario(120, 0, workers=1, steady=0.0, job_s=(5, 30), tenants=(A_LOW,),
                    late=(*backlog, Late(spread_s + 1, 1, B_HIGH, job_s=4.0)), seed=5, **budget)


def b_times(redis_client, scenario: Scenario) -> tuple[float, float]:
    """b's recording: from enqueue to its submit reaching Plaud, and to the poll that found it done."""
    redis_client.flushall()
    result = Simulation(redis_client, scenario).run()
    rec, = (r for r in result.recordings_list if r.tenant == B_HIGH)
    assert rec.done_at is not None and rec.finished_at is not None
    return rec.done_at - rec.job_s - rec.arrived_at, rec.finished_at - rec.arrived_at


@pytest.mark.parametrize("spread_s", [0.0, 30.0])
def test_a_high_recording_of_another_tenant_is_not_stuck_behind_a_low_backlog(redis_client, spread_s):
    _, alone_s = b_times(redis_client, issue_case(spread_s, loaded=False))
    submit_s, done_s = b_times(redis_client, issue_case(spread_s, loaded=True))
    _, unpaced_s = b_times(redis_client, issue_case(spread_s, loaded=True, slices=1))
    _, unpaced_fifo_s = b_times(redis_client, issue_case(spread_s, loaded=True, slices=1, poll_priorities=False))
    print(f"\nb after a's 150 low over {spread_s:g} s: submit at Plaud after {submit_s:.1f} s, done after "
          f"{done_s:.1f} s; unpaced {unpaced_s:.1f} s, unpaced with polls first come first served "
          f"{unpaced_fifo_s:.1f} s; alone {alone_s:.1f} s")
    # Paced, a's burst leaves room every half second: b's submit is the next one the policy picks, and
    # its poll, placed by priority, the next poll. Well within a period of b's time alone.
    assert submit_s <= 5 and done_s <= alone_s + 61
    # Unpaced (the window granted whole), whoever comes after a full window waits for its slots to
    # free a period later, and then b's poll for the next window's.
    assert unpaced_fifo_s > alone_s + 61
