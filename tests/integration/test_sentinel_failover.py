"""Losing the Redis host: a batch through workers that know Redis only as a list of Sentinels.

A master, a replica and three Sentinels (Debian's redis-server, on free ports in a temp dir); a
worker with beat configured with nothing but the Sentinel REDIS_URL, PLAUD_SENTINEL_MASTER and
the Sentinels' password; a client that enqueues the batch over a few seconds and retries a
failed enqueue with the same recording_id, as a caller should. The master is SIGKILLed
mid-batch. Every recording must still succeed, with one Plaud task per file.
"""

from __future__ import annotations

import threading
import time

import requests

from plaud.sandbox import worker_environment
from tasks import names
from tasks.redis_connection import connect
from tasks.settings import PipelineSettings
from tests.conftest import PIPELINE_ENV
from tests.helpers import md5, wait_until
from workers.local_sentinel import MASTER_NAME, SentinelCluster
from workers.local_stack import WorkerProcess

REDIS_PASSWORD = "failover-redis-password-5c1e"
SENTINEL_PASSWORD = "failover-sentinel-password-8a2d"
RECORDINGS = 10
KILL_AFTER_ENQUEUED = 4


def enqueue_all(app, batch, enqueued, errors, gap_s):
    """Each recording by name; on an error, the same request again with the same recording_id."""
    for recording_id, path in batch:
        while True:
            try:
                enqueued[recording_id] = app.send_task(names.TRANSCRIBE, kwargs={"source": path,
                                                                                 "recording_id": recording_id})
                break
            except Exception as exc:  # what a caller sees while Redis fails over
                errors.append((recording_id, f"{type(exc).__name__}: {exc}"))
                time.sleep(0.5)
        time.sleep(gap_s)


class RestartPolicy:
    """Starts the worker again when it exits, as compose's restart policy or Kubernetes would.

    Celery's consumer can exit when the broker's connection drops under it (Kombu's
    ``restore_unacked`` on a closed connection: ``'NoneType' object has no attribute 'hostname'``);
    docs/operations.md says so, and each restart is counted here.
    """

    def __init__(self, env, tmp_path):
        self.env = env
        self.tmp_path = tmp_path
        self.exits = []
        self.worker = self._start()

    def _start(self):
        index = len(self.exits)
        return WorkerProcess(self.env, concurrency=4, name=f"failover{index}",
                             logfile=str(self.tmp_path / f"worker-{index}.log"),
                             extra_args=("-B", "-s", str(self.tmp_path / "beat-schedule"))).start(ready_timeout_s=90)

    def revive(self):
        if self.worker.proc.poll() is not None:
            lines = self.worker.log_text().splitlines()
            self.exits.append(next((line.split("] ", 1)[-1] for line in lines if "Unrecoverable error" in line),
                                   f"exited with {self.worker.proc.returncode}"))
            self.worker = self._start()

    def stop(self):
        self.worker.stop()


def test_a_batch_survives_sigkilling_the_redis_master(sandbox_thread, configure, good_files, tmp_path):
    # Jobs that take a few seconds at Plaud, so that the kill finds recordings in every stage.
    configure(processing_base_s=2.0)
    cluster = SentinelCluster(password=REDIS_PASSWORD, sentinel_password=SENTINEL_PASSWORD).start()
    workers = None
    try:
        env = {**worker_environment(sandbox_thread.running), **PIPELINE_ENV,
               "REDIS_URL": cluster.url, "PLAUD_SENTINEL_MASTER": MASTER_NAME,
               "PLAUD_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
               # Short socket timeouts: a command to the dead master fails in seconds, not five.
               "PLAUD_REDIS_SOCKET_TIMEOUT_S": "2", "PLAUD_REDIS_CONNECT_TIMEOUT_S": "1",
               "PLAUD_REDIS_FAILOVER_WAIT_S": "30", "PLAUD_STAGE_ATTEMPTS": "8"}
        workers = RestartPolicy(env, tmp_path)
        from workers.celery_app import make_app

        settings = PipelineSettings.from_env(env)
        app = make_app(settings)  # the client follows the master too: it is given the same settings
        store = connect(settings)
        files = [path for path, _ in good_files[:RECORDINGS]]
        run = f"failover-{time.time_ns()}"
        batch = [(f"{run}-{i}", path) for i, path in enumerate(files)]
        enqueued, errors = {}, []
        enqueuer = threading.Thread(target=enqueue_all, args=(app, batch, enqueued, errors, 0.4), daemon=True)
        enqueuer.start()

        wait_until(lambda: len(enqueued) >= KILL_AFTER_ENQUEUED, "the first recordings enqueued", 60)
        killed_at = time.monotonic()
        old = cluster.kill_master()
        new = cluster.wait_for_failover(old, timeout_s=60)
        failover_s = time.monotonic() - killed_at
        print(f"\nfailover: master {old.port} SIGKILLed, replica {new.port} promoted after {failover_s:.2f} s; "
              f"{len(enqueued)} of {RECORDINGS} enqueued at the kill")

        enqueuer.join(timeout=120)
        assert not enqueuer.is_alive(), f"the enqueuer is stuck; errors {errors[-3:]}"
        workers.revive()

        def states():
            out = {}
            for recording_id, _ in batch:
                try:
                    out[recording_id] = (store.hget(names.record_key(recording_id), "state") or b"").decode()
                except Exception:  # the client's own reconnect to the new master
                    return None
            return out

        def all_done():
            workers.revive()
            current = states()
            return current if current and all(s.strip('"') in ("SUCCEEDED", "FAILED") for s in current.values()) \
                else None

        done_at = time.monotonic()
        final = wait_until(all_done, f"every recording finished (worker log {workers.worker.logfile})", 150)
        drained_s = time.monotonic() - done_at
        print(f"drained {drained_s:.1f} s after the enqueuer finished; enqueue errors during the switch: "
              f"{len(errors)} ({sorted({e.split(':')[0] for _, e in errors})}); worker restarts by the restart "
              f"policy: {len(workers.exits)} {workers.exits}")

        assert {s.strip('"') for s in final.values()} == {"SUCCEEDED"}, final
        # The callers' view: each entry task id resolves, through the result backend on the new master.
        results = {rid: enqueued[rid].get(timeout=30) for rid, _ in batch}
        assert all(r["recording_id"] == rid for rid, r in results.items())
        # One Plaud task per file, the kill notwithstanding.
        stats = requests.get(env["PLAUD_BASE_URL"].replace("/developer/api", "/_sandbox/stats"), timeout=10).json()
        per_file = {path: stats["transcriptions_per_md5"].get(md5(path), 0) for path in files}
        assert set(per_file.values()) == {1}, per_file
        # An enqueue that failed during the switch was sent again under the same id: it is one recording.
        retried = {rid for rid, _ in errors}
        assert retried <= set(enqueued) and len(enqueued) == RECORDINGS
        assert workers.worker.proc.poll() is None, workers.worker.log_tail()
        assert cluster.master() is new
    finally:
        if workers is not None:
            workers.stop()
        cluster.cleanup()
