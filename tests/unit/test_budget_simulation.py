"""The budget scheduler on a fake clock, through its real Lua scripts on a real redis-server.

Each scenario is a burst (1x to 20x the window's R) with requests arriving steadily while others
wait, 1-8 workers, jobs of 5 s to 2 h each polled until done, R from 10/min to 6,000/min. Asserted
at Plaud's side (``tests/budget_sim.py`` says how it is measured and why the windows of criterion
2 are a period + safety + one reuse long):

1. never more than R in any window of the period;
2. no window (after each wait's first period) in which requests waited throughout and fewer than
   95 % of R were sent; and, while both kinds waited, each kept 90 % of its share;
3. every request eventually sent: every recording's job seen done.

Big R runs short bursts so the file stays within about half a minute. ``-s`` prints the figures.
"""

from __future__ import annotations

import pytest

from tests.budget_sim import Figures, Scenario, Simulation, figures

UTILISATION_MIN = 0.95
KIND_SHARE_MIN = 0.9

SCENARIOS = [
    Scenario(10, 20, workers=1, job_s=(5, 7200), seed=1),
    Scenario(10, 3, workers=1, steady=1.0, job_s=(5, 60), dispatch="next_free", seed=2),
    Scenario(30, 10, workers=2, job_s=(5, 600), second_burst=5, seed=3),
    Scenario(60, 20, workers=1, job_s=(5, 7200), dispatch="next_free", seed=4),
    Scenario(120, 151 / 120, workers=1, steady=0.0, job_s=(5, 30), seed=5),  # the live run
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
        # A lost task's grant keeps its slot counted for a window (the safe side): that much goes unsent.
        assert found.worst_window >= UTILISATION_MIN - 3 * scenario.lose_grants
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
