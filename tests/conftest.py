"""Shared fixtures: one sandbox per test session, reset and reconfigured for each test."""

from __future__ import annotations

import dataclasses
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import redis
import soundfile
from celery import Celery

from plaud.config import PlaudConfig
from plaud.sandbox import SandboxSettings, SandboxThread, worker_environment
from plaud.sandbox.testaudio import make_recording
from tasks import names
from tests.helpers import SandboxApi
from workers.local_redis import RedisServer
from workers.local_stack import WorkerProcess

# Fast defaults for tests: tasks finish within a fraction of a second of audio-free time.
TEST_SETTINGS = SandboxSettings(port=0, processing_base_s=0.2, processing_rtf=0.0)


@pytest.fixture(scope="session")
def sandbox_thread():
    with SandboxThread(TEST_SETTINGS) as sb:
        yield sb


@pytest.fixture
def sandbox(sandbox_thread):
    """The session's sandbox, with fresh state and the test settings restored."""
    sandbox_thread.call(lambda: sandbox_thread.running.ctx.apply(TEST_SETTINGS))
    sandbox_thread.call(sandbox_thread.running.ctx.reset)
    yield sandbox_thread


@pytest.fixture
def configure(sandbox):
    """Change sandbox settings for one test: ``configure(fault_5xx=0.1)``."""

    def apply(**changes):
        ctx = sandbox.running.ctx
        sandbox.call(lambda: ctx.apply(dataclasses.replace(ctx.settings, **changes)))

    return apply


@pytest.fixture
def api(sandbox):
    return SandboxApi(sandbox.base_url, sandbox.settings)


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="session")
def speech_mp3(audio_dir):
    """12 s, two speakers, tagged text."""
    return make_recording(str(audio_dir / "speech.mp3"), 12.0, speakers=2, seed=5,
                          text="The quick brown fox jumps over the lazy dog while the sandbox listens.")


@pytest.fixture(scope="session")
def untagged_mp3(audio_dir):
    return make_recording(str(audio_dir / "untagged.mp3"), 6.0, seed=2)


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_client(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def plaud_config(sandbox):
    """Client settings pointing at the test sandbox."""
    return PlaudConfig.sandbox(sandbox.base_url)


# -- the pipeline: a real worker process on its own Redis -------------------------------------

PIPELINE_ENV = {
    "PLAUD_EXPECTED_BASE_S": "0.3", "PLAUD_EXPECTED_RTF": "0", "PLAUD_POLL_MIN_INTERVAL_S": "0.2",
    "PLAUD_RECONCILE_EVERY_S": "1", "PLAUD_RECONCILE_GRACE_S": "4", "PLAUD_LEASE_TTL_S": "3",
    "PLAUD_STAGE_ATTEMPTS": "4",
    "PLAUD_WEBHOOK_SECRET": "test-webhook-secret", "PLAUD_WEBHOOK_ALLOW_PRIVATE": "true",
    "PLAUD_WEBHOOK_RETRY_BASE_S": "0.3", "PLAUD_WEBHOOK_MAX_AGE_S": "3",
}


class PipelineStack:
    """A worker (with beat, for the reconciler) against the test sandbox, on a Redis of its own."""

    def __init__(self, sandbox_thread, tmp_dir, *, results_db=None):
        self.redis_server = RedisServer().start()
        self.env = {**worker_environment(sandbox_thread.running), "REDIS_URL": self.redis_server.url,
                    **PIPELINE_ENV}
        self.results_url = self.redis_server.url
        if results_db is not None:  # Celery's results in another database than the records
            self.results_url = self.env["CELERY_RESULT_BACKEND"] = self.redis_server.url.rsplit("/", 1)[0] + \
                f"/{results_db}"
        self.tmp_dir = tmp_dir
        self.workers = []
        self.client = Celery(broker=self.redis_server.url, backend=self.results_url)
        self.redis = redis.Redis.from_url(self.redis_server.url)

    def start_worker(self, **kwargs):
        kwargs.setdefault("extra_args", ("-B", "-s", str(self.tmp_dir / f"beat-{len(self.workers)}")))
        kwargs.setdefault("concurrency", 4)
        worker = WorkerProcess(self.env, name=f"test{len(self.workers)}",
                               logfile=str(self.tmp_dir / f"worker-{len(self.workers)}.log"), **kwargs).start()
        self.workers.append(worker)
        return worker

    def send(self, **kwargs):
        return self.client.send_task(names.TRANSCRIBE, kwargs=kwargs)

    def record(self, recording_id):
        raw = self.redis.hgetall(names.record_key(recording_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def stop(self):
        for worker in self.workers:
            worker.stop()
        # Handles this stack gave out can outlive it (a failed test's traceback holds them). When the
        # garbage collector drops one later, Celery unsubscribes its result key: with nothing left
        # subscribed it does not reach for a Redis that is gone (and fail whichever test runs then).
        consumer = self.client.backend.result_consumer
        consumer.stop()
        consumer.subscribed_to.clear()
        self.redis_server.cleanup()


@pytest.fixture(scope="session")
def pipeline_stack(sandbox_thread, tmp_path_factory):
    stack = PipelineStack(sandbox_thread, tmp_path_factory.mktemp("pipeline"))
    stack.start_worker()
    yield stack
    stack.stop()


@pytest.fixture
def pipeline(pipeline_stack, sandbox):
    """The running pipeline, with a live worker and a freshly reset sandbox."""
    if not any(w.proc.poll() is None for w in pipeline_stack.workers):
        pipeline_stack.start_worker()
    yield pipeline_stack


@pytest.fixture
def file_server(tmp_path):
    """Serves tmp_path; paths ending in '.chunked' are sent without Content-Length."""

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

        def do_GET(self):
            path = self.path.split("?")[0]
            if not path.endswith(".chunked"):
                return super().do_GET()
            body = (tmp_path / path.lstrip("/").removesuffix(".chunked")).read_bytes()
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 4096):
                piece = body[start:start + 4096]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")

    Handler.protocol_version = "HTTP/1.1"
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="session")
def good_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("good")
    files = []
    for i in range(12):
        text = f"Recording number {i} says hello to the pipeline."
        path = make_recording(str(directory / f"good-{i}.mp3"), 3.0 + i % 4, speakers=1 + i % 2, seed=i,
                              text=text).path
        files.append((path, text))
    wav = directory / "speech.wav"
    t = np.arange(16000 * 3) / 16000
    soundfile.write(str(wav), (0.3 * np.sin(2 * np.pi * 180 * t)).astype("float32"), 16000)
    files.append((str(wav), None))
    return files


# -- markers: `make test-fast` leaves these out, `make test` runs them all ----------------------
# Kept here by test module and name, so the test files need not change. "slow" is 3 s or more
# (setup and teardown included) on two cores; a renamed test silently joins the fast lane again.

MODULE_MARKERS = {
    "tests/integration/test_chaos.py": "chaos",
    "tests/integration/test_flower_browser.py": "browser",
    "tests/integration/test_up.py": "browser",  # and slow: a whole stack, two recordings, Chromium
    "tests/integration/test_lost_work.py": "slow",  # each test kills or starves a worker
    "tests/integration/test_backlog.py": "slow",  # a burst through a budget, no beat
    "tests/integration/test_cancel.py": "slow",  # recordings held in lines by a 1/min budget
    "tests/integration/test_prometheus.py": "slow",  # a worker, the exporter and a Prometheus server
    "tests/integration/test_sentinel_failover.py": "slow",  # a Redis failover under a batch
    "tests/integration/test_sleeping_polls.py": "slow",  # 8-s jobs whose polls sleep as data
}
SLOW_TESTS = {
    "tests/integration/test_cli.py": {
        "test_demo_runs_the_pipeline_on_the_bundled_samples",
        "test_demo_starts_a_private_redis_when_none_answers",
        "test_plaud_workers_worker_starts_a_worker",
    },
    "tests/integration/test_compose_local.py": {"test_the_compose_services_run_a_recording_through"},
    "tests/integration/test_pipeline.py": {
        "test_worker_killed_during_upload_and_during_polling",
        "test_a_mixed_batch_of_20_from_a_bare_client",
        "test_a_malformed_duplicate_does_not_fail_the_recording_in_flight",
        "test_results_kept_in_another_database_are_stored_there_by_celery",  # a worker of its own
    },
    "tests/integration/test_results_cli.py": {"test_retry_redrives_a_failed_recording"},
    "tests/integration/test_client_resilience.py": {"test_50_uploads_through_5xx_429_and_dropped_connections",
                                                    "test_expired_part_urls_start_the_upload_over"},
    "tests/integration/test_pipeline_stages.py": {"test_the_dispatcher_wakes_a_waiting_submit_when_its_slot_frees"},
    "tests/integration/test_sandbox_robustness.py": {"test_64_concurrent_part_uploads"},
    "tests/unit/test_budget_simulation.py": {"test_the_pull_scheduler_keeps_the_budget_full_and_never_over",
                                             "test_backlogged_tenants_share_the_submits_by_weight_and_the_budget_stays_full"},
    "tests/unit/test_budget_fairness.py": {"test_backlogged_tenants_share_the_grants_by_their_weights"},
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items):
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        if module in MODULE_MARKERS:
            item.add_marker(MODULE_MARKERS[module])
        if getattr(item, "originalname", item.name) in SLOW_TESTS.get(module, ()):
            item.add_marker("slow")
