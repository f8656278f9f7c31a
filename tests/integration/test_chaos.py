"""The chaos suite at CI size: ``python -m chaos`` as a user runs it, and its verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.timeout(900)
def test_the_chaos_suite_loses_nothing_bills_nothing_twice_and_leaks_nothing(tmp_path):
    report_path = tmp_path / "chaos.json"
    done = subprocess.run([sys.executable, "-m", "chaos", "--json", str(report_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=840)
    assert report_path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    summary = {k: report[k] for k in ("good_succeeded", "bad_failed", "lost", "duplicates_unexplained",
                                      "audit_findings", "client_results", "events")}
    assert report["good_succeeded"] == report["good"] == 12, summary
    assert report["bad_failed"] == report["bad"] == 3, summary
    assert report["lost"] == [] and report["duplicates_unexplained"] == [], summary
    assert report["audit_findings"] == [] and report["audit_places"]["flower page"] > 10, summary
    assert report["audit_places"]["redis key"] > 10 and report["audit_places"]["log"] >= 4, summary
    assert report["kills"] >= 3 and any("frozen" in e for e in report["events"]), summary
    assert any("back from its AOF" in e for e in report["events"]), summary
    assert report["client_results"].get("SUCCESS") == 12 + report["cancel_too_late"], summary
    assert report["cancelled"] + report["cancel_too_late"] == report["cancel_requested"] == 2, summary
    assert report["cancelled"] >= 1 and report["cancelled_but_billed_before_submit"] == [], summary
    assert report["waited"] > 0, summary  # requests waited for the budget, as data, through the chaos
    assert done.returncode == 0 and report["ok"], summary
