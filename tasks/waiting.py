"""What waits, where, and for how long: the budget and the lines, as ``status`` shows them."""

from __future__ import annotations

from typing import Any

from plaud.budget import POLL, SUBMIT, Budget

from .names import WAITING_FOR_UPLOAD
from .runtime import Runtime


def budget_summary(rt: Runtime) -> dict[str, Any] | None:
    """The fleet's Transcription API budget and its lines now; None when there is no fleet budget."""
    budget = rt.client.budget
    if not isinstance(budget, Budget):
        return None
    load = budget.load()
    summary: dict[str, Any] = {
        "limit": load.limit, "period_s": budget.rate.period_s, "used_in_window": load.used,
        "waiting": {SUBMIT: load.submits_waiting, POLL: load.polls_waiting},
        "granted_not_sent": load.granted, "oldest_wait_s": round(load.oldest_wait_s, 1),
        "next_free_in_s": round(load.next_free_in_s, 1), "shares_while_both_wait": dict(budget.shares),
        "submits_waiting_by_tenant": budget.tenants_waiting(),
        "tenant_weights": dict(rt.config.tenant_weights),
    }
    if rt.upload_slots is not None:
        queue = rt.upload_slots.queue()
        summary["uploads"] = {"waiting": queue.waiting, "uploaded_not_submitted": queue.ahead,
                              "most_uploaded_ahead": queue.capacity}
    return summary


def wait_of(rt: Runtime, recording_id: str) -> dict[str, Any] | None:
    """Where a recording waits in line (for ``upload``, ``submit`` or ``poll``), its place and an
    estimate of when its turn comes; None when it waits in no line."""
    budget = rt.client.budget
    if not isinstance(budget, Budget):
        return None
    what = rt.in_line_for(recording_id)
    if what is None:
        return None
    if what == WAITING_FOR_UPLOAD:
        assert rt.upload_slots is not None  # in_line_for says upload only when there are slots
        place = rt.upload_slots.position(recording_id)
    else:
        place = budget.position(recording_id, what)
    if place is None:  # granted: its task is on its way
        return {"for": what, "place": 0, "granted": True, "estimated_start_in_s": 0.0}
    # Each kind goes at its share of the budget while both wait; an upload starts as a submit ahead
    # of it frees its slot, so at the submits' pace too.
    kind = SUBMIT if what == WAITING_FOR_UPLOAD else what
    per_s = budget.shares[kind] / budget.rate.period_s
    return {"for": what, "place": place + 1, "granted": False,
            "estimated_start_in_s": round(budget.next_free_in_s() + place / per_s, 1)}
