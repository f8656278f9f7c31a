"""A burst larger than the budget's window drains at the budget's pace with no beat running:
the recordings that must wait do so as data, and each worker's dispatcher wakes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import requests

from tests.conftest import PipelineStack
from tests.helpers import outcome

RATE = "10/s"  # the fleet's window is 1 s plus the 1-s safety margin: 10 requests per 2 s
BURST = 20  # 40 requests: four windows' worth


def cli(stack, *args):
    env = {**os.environ, **stack.env}
    done = subprocess.run([sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def watch_the_wait(stack, run):
    """``status --budget --json`` until requests wait, then ``status ID --json`` of one that waits."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        budget = cli(stack, "status", "--budget", "--json")
        if budget["waiting"]["submit"] + budget["waiting"]["poll"] > 0:
            for i in reversed(range(BURST)):  # the last enqueued wait the longest
                recording = cli(stack, "status", f"{run}-{i}", "--json")
                if recording.get("waiting", {}).get("granted") is False:
                    return budget, recording
        time.sleep(0.1)
    raise AssertionError("no request was ever seen waiting for the budget")


def test_a_burst_beyond_the_budget_drains_without_beat_and_without_a_429(sandbox_thread, configure, good_files,
                                                                          tmp_path):
    configure(tx_rate_limit=RATE)
    stack = PipelineStack(sandbox_thread, tmp_path)
    stack.env["PLAUD_TX_RATE_LIMIT"] = RATE
    try:
        stack.start_worker(extra_args=())  # no beat: the reconciler never runs, the dispatcher must
        run = f"burst-{time.time_ns()}"
        started = time.monotonic()
        handles = [stack.send(source=good_files[i % 10][0], recording_id=f"{run}-{i}") for i in range(BURST)]
        seen_waiting = watch_the_wait(stack, run)
        results = [outcome(handle, timeout_s=90) for handle in handles]
        elapsed_s = time.monotonic() - started
        assert all(isinstance(r, dict) for r in results), [r for r in results if not isinstance(r, dict)]
        records = [stack.record(f"{run}-{i}") for i in range(BURST)]
        assert {r["state"] for r in records} == {"SUCCEEDED"}
        assert sum(int(r.get("waits", 0)) for r in records) > 0  # some waited, as data
        assert not any(r.get("waiting_for") for r in records)
        stats = requests.get(f"{sandbox_thread.origin}/_sandbox/stats", timeout=10).json()
        refused = sum(counts.get("429", 0) for counts in stats["requests"].values())
        assert refused == 0 and stats["transcriptions_created"] == BURST
        print(f"{BURST} recordings at {RATE}: {elapsed_s:.1f} s")  # the budget alone needs about 8 s
        # What an operator saw meanwhile, through the CLI: the budget, and a recording's place in line.
        budget, recording = seen_waiting
        assert budget["limit"] == 10 and budget["period_s"] == 1.0
        assert budget["waiting"]["submit"] + budget["waiting"]["poll"] > 0 and budget["oldest_wait_s"] >= 0
        assert recording["waiting"]["for"] in ("submit", "poll") and recording["waiting"]["place"] >= 1
        assert recording["waiting"]["estimated_start_in_s"] >= 0
    finally:
        stack.stop()
