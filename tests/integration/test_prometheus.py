"""A real Prometheus scrapes `plaud-workers metrics` during a small run; its answers match the records."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from threading import Thread

import pytest
import requests

from tasks import names
from tests.conftest import PipelineStack
from tests.helpers import outcome, wait_until

RULES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "deploy", "prometheus", "alerts.yml")
RATE = 600  # a fleet budget, so the budget's figures are exported too


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FailingHook:
    """A webhook endpoint that answers every delivery with a 500."""

    def __init__(self) -> None:
        self.calls = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                hook.calls += 1
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(500)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/plaud"


@pytest.fixture(scope="module")
def observed(sandbox_thread, tmp_path_factory):
    """A worker (with beat), the exporter and a Prometheus scraping it every second."""
    tmp = tmp_path_factory.mktemp("prometheus")
    stack = PipelineStack(sandbox_thread, tmp)
    stack.env["PLAUD_TX_RATE_LIMIT"] = f"{RATE}/m"
    stack.start_worker()
    exporter = subprocess.Popen([sys.executable, "-m", "workers.cli", "metrics", "--port", "0", "--address",
                                 "127.0.0.1"], env={**os.environ, **stack.env}, stderr=subprocess.PIPE, text=True)
    assert exporter.stderr is not None
    line = wait_until(lambda: exporter.stderr.readline() or exporter.poll() is not None, "the exporter's address")
    match = re.search(r"serving (http://\S+)", str(line))
    assert match, line
    metrics_url = match.group(1)
    port = free_port()
    (tmp / "prometheus.yml").write_text(json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [RULES],
        "scrape_configs": [{"job_name": "plaud-workers", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [metrics_url.split("/")[2]]}]}]}))
    prometheus = subprocess.Popen([shutil.which("prometheus") or "prometheus", f"--config.file={tmp}/prometheus.yml",
                                   f"--storage.tsdb.path={tmp}/data", f"--web.listen-address=127.0.0.1:{port}"],
                                  stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "w"))
    api = f"http://127.0.0.1:{port}"

    def ready():
        assert prometheus.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
        try:
            return requests.get(f"{api}/-/ready", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(ready, "Prometheus ready")
    yield stack, api, metrics_url
    for process in (prometheus, exporter):
        process.terminate()
        process.wait(timeout=30)
    stack.stop()


def query(api: str, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
    answer = requests.get(f"{api}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    scrape_labels = ("job", "instance", "__name__")
    return {tuple(sorted((k, v) for k, v in r["metric"].items() if k not in scrape_labels)): float(r["value"][1])
            for r in answer["data"]["result"]}


def one(api: str, expr: str) -> float | None:
    found = query(api, expr)
    return next(iter(found.values())) if found else None


def test_prometheus_sees_what_the_records_say(observed, good_files, tmp_path):
    stack, api, metrics_url = observed
    hook = FailingHook()
    run = f"prom-{time.time_ns()}"
    sends = {f"{run}-ok{i}": dict(source=good_files[i][0], tenant="acme") for i in range(3)}
    sends[f"{run}-missing"] = dict(source=str(tmp_path / "missing.mp3"), tenant="beta")  # fails at upload
    sends[f"{run}-hooked"] = dict(source=good_files[3][0], webhook_url=hook.url)  # its webhook always fails
    handles = {rid: stack.send(recording_id=rid, **kwargs) for rid, kwargs in sends.items()}
    for handle in handles.values():
        outcome(handle, timeout_s=60)
    wait_until(lambda: stack.record(f"{run}-hooked").get("webhook_status") == "failed", "the webhook given up")
    records = {rid: stack.record(rid) for rid in sends}
    succeeded = [r for r in records.values() if r["state"] == "SUCCEEDED"]
    failed = [r for r in records.values() if r["state"] == "FAILED"]
    assert len(succeeded) == 4 and len(failed) == 1
    failure = json.loads(failed[0]["failure"])

    # Prometheus has scraped since the last recording ended.
    wait_until(lambda: one(api, 'sum(plaud_recordings_ended_total)') == 5, "Prometheus to see the five ended")
    wait_until(lambda: one(api, 'sum(plaud_webhook_deliveries_total{outcome="given_up"})') == 1,
             "Prometheus to see the webhook given up")
    assert query(api, "plaud_recordings_ended_total") == {
        (("state", "SUCCEEDED"), ("tenant", "acme")): 3, (("state", "SUCCEEDED"), ("tenant", "default")): 1,
        (("state", "FAILED"), ("tenant", "beta")): 1}
    assert query(api, "plaud_failures_total") == {(("kind", failure["kind"]), ("stage", failure["stage"])): 1}
    assert one(api, "plaud_recording_duration_seconds_count") == len(succeeded)
    assert one(api, "plaud_polls_per_recording_sum") == sum(int(r["polls"]) for r in succeeded)
    slowest = max(float(r["at_SUCCEEDED"]) - float(r["created_at"]) for r in succeeded)
    assert one(api, 'plaud_recording_duration_seconds_bucket{le="+Inf"}') == len(succeeded)
    assert one(api, "plaud_recording_duration_seconds_sum") <= len(succeeded) * slowest + 1
    assert one(api, "plaud_detection_delay_seconds_count") == len(succeeded)
    assert one(api, "plaud_upload_throughput_bytes_per_second_count") == len(succeeded)
    attempts = int(records[f"{run}-hooked"]["webhook_attempts"])
    assert attempts == hook.calls >= 2
    assert one(api, 'plaud_webhook_deliveries_total{outcome="failed"}') == attempts
    # Nothing is live any more, the budget is the one set, and the worker is seen consuming every queue.
    assert one(api, "plaud_backlog_recordings") == 0 and one(api, "sum(plaud_recordings)") is None
    assert one(api, "plaud_budget_limit_requests") == RATE
    assert set(query(api, "plaud_queue_consumers > 0")) == {(("queue", q),) for q in names.WORKER_QUEUES}
    assert one(api, "plaud_exporter_redis_up") == 1
    # The shipped alert rules loaded; none of them fires on this healthy run except the webhook's.
    groups = requests.get(f"{api}/api/v1/rules", timeout=10).json()["data"]["groups"]
    shipped = re.findall(r"^\s*- alert: (\w+)$", open(RULES).read(), re.M)
    assert [g["name"] for g in groups] == ["plaud-workers"] and len(shipped) >= 8
    assert sorted(rule["name"] for rule in groups[0]["rules"]) == sorted(shipped)
    alerts = requests.get(f"{api}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    firing = {a["labels"]["alertname"] for a in alerts}
    assert firing <= {"PlaudWebhooksFailing"}
    # The exporter shows no recording id anywhere: labels stay bounded.
    assert run not in requests.get(metrics_url, timeout=10).text
