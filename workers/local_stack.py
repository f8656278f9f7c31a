"""Run the pieces on one machine: a worker subprocess, and Redis found or started.

Used by ``plaud-workers demo``, the integration tests and the benchmarks, so they all run the
worker the way production does: ``celery -A workers worker`` in its own process.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time

import redis

from plaud.redact import mask_url_passwords
from tasks.names import WORKER_QUEUES
from tasks.redis_connection import connect
from tasks.settings import PipelineSettings

from .local_redis import RedisServer

READY_MARK = "ready."


def redis_answers(settings: PipelineSettings) -> bool:
    """Whether the Redis of ``REDIS_URL`` (a Sentinel list too) answers, within a couple of seconds."""
    quick = dataclasses.replace(settings, redis_connect_timeout_s=1.0, redis_socket_timeout_s=2.0)
    try:
        return bool(connect(quick).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def find_or_start_redis(settings: PipelineSettings) -> tuple[str, RedisServer | None]:
    """``REDIS_URL`` if a Redis answers there; else a private redis-server (which the caller stops)."""
    if redis_answers(settings):
        return settings.redis_url, None
    try:
        server = RedisServer().start()
    except RuntimeError as exc:
        raise RuntimeError(f"no Redis answers at {mask_url_passwords(settings.redis_url)}, and {exc}") from None
    return server.url, server


class WorkerProcess:
    """``celery -A workers worker`` as a subprocess, logging to a file."""

    def __init__(self, env: dict[str, str], *, queues: tuple[str, ...] = WORKER_QUEUES, concurrency: int = 2,
                 pool: str = "prefork", name: str = "worker", logfile: str | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.env = env
        self.queues = queues
        self.concurrency = concurrency
        self.pool = pool
        self.name = name
        self.logfile = logfile or tempfile.mkstemp(prefix=f"plaud-{name}-", suffix=".log")[1]
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout_s: float = 60.0) -> WorkerProcess:
        cmd = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--loglevel", "INFO", "-E",
               "-Q", ",".join(self.queues), "-c", str(self.concurrency), "-P", self.pool,
               "-n", f"{self.name}-{os.getpid()}-{time.monotonic_ns()}@%h", *self.extra_args]
        with open(self.logfile, "ab") as log:
            # A session of its own (so a process group with its pool children): a terminal's Ctrl-C
            # reaches only whoever started it, which stops it with SIGTERM (a warm shutdown).
            self.proc = subprocess.Popen(cmd, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if READY_MARK in self.log_text():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the worker was not ready after {ready_timeout_s} s:\n{self.log_tail()}")

    def log_text(self) -> str:
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the worker and its pool children: a machine dying, not a shutdown."""
        if self.proc is None:
            return
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        for pid in [self.proc.pid, *map(int, children)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
