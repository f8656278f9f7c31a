"""``plaud-workers up``: the whole stack in the foreground, for trying it and for development.

Redis (the one at REDIS_URL when it answers, else a private redis-server), the sandbox (unless
PLAUD_* names real Plaud), N workers, one beat (the reconciler), Flower with a generated password,
and the metrics exporter. It prints where each is and how to enqueue,
then waits. SIGINT (Ctrl-C) or SIGTERM stops everything it started and leaves no process behind.

Every child runs in a session of its own, so a terminal's Ctrl-C reaches only this process, which
stops the children in order: Flower, the exporter and beat; then the workers (SIGTERM: a warm
shutdown, their running tasks finish); then Redis and the sandbox. A process group still alive
after its grace (a worker's pool children included) is killed.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from tasks import names

from .flower_view import flower_environment
from .local_redis import RedisServer, free_port
from .local_stack import WorkerProcess, find_or_start_redis

FLOWER_USER = "admin"
SAMPLE = "welcome.mp3"  # a bundled sample (plaud/sandbox/samples) for the enqueue examples
READY_TIMEOUT_S = 90.0  # a loaded two-core machine starts a worker in 5-20 s
SERVICE_GRACE_S = 10.0  # Flower, beat and the exporter stop at once on SIGTERM


@dataclass(frozen=True)
class UpOptions:
    redis_url: str = "redis://localhost:6379/0"
    private_redis: bool = False  # start a private redis-server even when one answers at redis_url
    workers: int = 1
    concurrency: int = 2
    flower_port: int = 5555  # 0: any free port
    metrics_port: int = 9808  # 0: any free port
    stop_grace_s: float = 30.0  # how long a worker may take to finish its running tasks


@dataclass
class Child:
    """A process of the stack, leader of its own process group, logging to ``logfile``."""

    name: str
    proc: subprocess.Popen[bytes]
    logfile: str
    url: str = ""

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as handle:
                return "\n".join(handle.read().splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def spawn(name: str, cmd: list[str], env: dict[str, str], logfile: str, url: str = "") -> Child:
    with open(logfile, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return Child(name, proc, logfile, url)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def stop_group(proc: subprocess.Popen[Any], grace_s: float, *, signalled: bool = False) -> None:
    """SIGTERM the process (unless ``signalled``), wait ``grace_s``, then SIGKILL whatever is left of
    its process group (a worker's pool children outlive their parent when it is killed)."""
    if proc.poll() is None and not signalled:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    if group_members(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    deadline = time.monotonic() + 10
    while group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_until(ready: Callable[[], bool], child: Child, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} was not ready after {timeout_s:g} s:\n{child.log_tail()}")
        time.sleep(0.2)


def http_ok(url: str, auth: tuple[str, str] | None = None) -> bool:
    try:
        return requests.get(url, auth=auth, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def flower_sees_workers(url: str) -> bool:
    try:
        reply = requests.get(f"{url}/metrics", timeout=2)
    except requests.RequestException:
        return False
    return reply.status_code == 200 and any(line.startswith("flower_worker_online{") and line.endswith(" 1.0")
                                            for line in reply.text.splitlines())


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Stack:
    """What ``up`` started, in the order it started it; ``run()`` is the whole command."""

    def __init__(self, options: UpOptions, echo: Callable[[str], None] = print) -> None:
        self.options = options
        self.echo = echo
        self.rundir = ""  # the logs and beat's schedule: made when it starts, kept after it stops
        self.flower_password = secrets.token_urlsafe(12)
        self.redis_url = ""
        self.private_redis: RedisServer | None = None
        self.sandbox: Any = None
        self.plaud = ""
        self.env: dict[str, str] = {}
        self.workers: list[WorkerProcess] = []
        self.services: list[Child] = []  # beat, Flower, the exporter

    # -- the command -----------------------------------------------------------------------

    def run(self) -> int:
        """Start, print, wait for SIGINT or SIGTERM (or a piece that dies), stop. The exit status."""
        # Both, explicitly: a shell starts a background job with SIGINT ignored, and Python keeps that.
        previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        status = 0
        try:
            self.start()
            self.echo(self.summary())
            status = self.watch()
        except KeyboardInterrupt:
            status = 0
        except RuntimeError as exc:
            self.echo(f"plaud-workers up: {exc}")
            status = 1
        finally:
            # A second Ctrl-C must not cut the clean-up short and leave processes behind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.echo(f"stopping (workers finish their running tasks, {self.options.stop_grace_s:g} s at most) …")
            self.stop()
            self.echo(f"stopped; the logs stay in {self.rundir}")
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return status

    def watch(self) -> int:
        """Until a signal: a piece that exits by itself ends the run, with its log's tail."""
        while True:
            for child in self.children():
                if child.proc.poll() is not None:
                    self.echo(f"plaud-workers up: {child.name} exited with {child.proc.returncode}; "
                              f"its log ({child.logfile}) ends:\n{child.log_tail()}")
                    return 1
            time.sleep(0.5)

    # -- starting --------------------------------------------------------------------------

    def start(self) -> None:
        from plaud.config import PlaudConfig

        self.rundir = tempfile.mkdtemp(prefix="plaud-up-")
        url = self.options.redis_url
        if self.options.private_redis:
            self.private_redis = RedisServer().start()
            self.redis_url = self.private_redis.url
        else:
            from tasks.settings import PipelineSettings

            # REDIS_URL as a worker reads it (a Sentinel URL, its master's name, timeouts).
            self.redis_url, self.private_redis = find_or_start_redis(
                PipelineSettings.from_env({**os.environ, "REDIS_URL": url}))
        # One Redis for everything: broker, results and state, whatever CELERY_* the shell has.
        self.env = {**os.environ, "REDIS_URL": self.redis_url, "CELERY_BROKER_URL": self.redis_url,
                    "CELERY_RESULT_BACKEND": self.redis_url}
        config = PlaudConfig.from_env()  # a ConfigError names the variable; the command reports it
        if config.is_sandbox:
            from plaud.sandbox import SandboxSettings, SandboxThread, worker_environment

            # As in the demo: a short, fixed processing time so a recording is back in seconds.
            self.sandbox = SandboxThread(SandboxSettings(port=0, processing_base_s=2.0)).start()
            self.env.update({**worker_environment(self.sandbox.running), "PLAUD_EXPECTED_BASE_S": "2"})
            self.plaud = f"the sandbox at {self.sandbox.base_url} (no Plaud credentials are set)"
        else:
            self.plaud = config.describe()

        for index in range(self.options.workers):
            worker = WorkerProcess(self.env, name=f"up{index + 1}", concurrency=self.options.concurrency,
                                   logfile=os.path.join(self.rundir, f"worker-{index + 1}.log"))
            self.workers.append(worker)  # before start(): a Ctrl-C while it starts still stops it
            worker.start(ready_timeout_s=READY_TIMEOUT_S)

        celery = [sys.executable, "-m", "celery", "-A", "workers"]
        beat = self.spawn("beat", [*celery, "beat", "--loglevel", "INFO",
                                   "--schedule", os.path.join(self.rundir, "celerybeat-schedule")], self.env)

        flower_port = self.options.flower_port or free_port()
        flower = self.spawn("flower", [*celery, "flower"], {
            **self.env, **flower_environment(port=flower_port, user=FLOWER_USER, password=self.flower_password)},
            url=f"http://127.0.0.1:{flower_port}")

        metrics_port = self.options.metrics_port or free_port()
        exporter = self.spawn("exporter", [sys.executable, "-m", "workers.cli", "metrics", "--port", str(metrics_port),
                                           "--address", "127.0.0.1"], self.env,  # a laptop's, like Flower
                              url=f"http://127.0.0.1:{metrics_port}/metrics")

        # Ready once Flower has heard a worker's heartbeat: its event receiver is on, so it sees every
        # task enqueued from now on (its /metrics, like /healthcheck, answers without auth).
        wait_until(lambda: flower_sees_workers(flower.url), flower)
        wait_until(lambda: "beat: Starting" in beat.log_tail(200), beat)
        wait_until(lambda: http_ok(exporter.url), exporter)

    def spawn(self, name: str, cmd: list[str], env: dict[str, str], url: str = "") -> Child:
        child = spawn(name, cmd, env, os.path.join(self.rundir, f"{name}.log"), url)
        self.services.append(child)
        return child

    def children(self) -> list[Child]:
        started = [Child(f"worker {index + 1}", w.proc, w.logfile) for index, w in enumerate(self.workers)
                   if w.proc is not None]
        return [*started, *self.services]

    # -- stopping --------------------------------------------------------------------------

    def stop(self) -> None:
        for child in reversed(self.services):  # the exporter, Flower, beat
            stop_group(child.proc, SERVICE_GRACE_S)
        started = [w.proc for w in self.workers if w.proc is not None]
        for proc in started:  # all at once: each finishes its running tasks meanwhile
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.options.stop_grace_s
        for proc in started:
            stop_group(proc, max(deadline - time.monotonic(), 0.0), signalled=True)
        if self.private_redis is not None:
            self.private_redis.cleanup()
        if self.sandbox is not None:
            self.sandbox.stop()

    # -- what it prints --------------------------------------------------------------------

    def summary(self) -> str:
        private = " (private: started here, gone when this stops)" if self.private_redis else ""
        flower = next(c for c in self.services if c.name == "flower")
        exporter = next(c for c in self.services if c.name == "exporter")
        pids = [str(c.proc.pid) for c in self.children()]
        if self.private_redis is not None and self.private_redis.proc is not None:
            pids.append(str(self.private_redis.proc.pid))
        queues = ",".join(names.WORKER_QUEUES)
        lines = [
            "plaud-workers up: the whole stack, in the foreground. Ctrl-C stops all of it.",
            "",
            f"  redis    {self.redis_url}{private}",
            f"  plaud    {self.plaud}",
            f"  workers  {len(self.workers)} × {self.options.concurrency} processes on {queues}",
            "  beat     the reconciler",
            f"  flower   {flower.url}  user {FLOWER_USER}  password {self.flower_password}",
            f"  metrics  {exporter.url}",
            f"  logs     {self.rundir}",
            f"  pids     {' '.join(pids)}",
            "",
            *self.enqueue_examples(),
        ]
        return "\n".join(lines)

    def enqueue_examples(self) -> list[str]:
        sample = str(importlib.resources.files("plaud.sandbox").joinpath("samples", SAMPLE))
        url = self.redis_url
        stamp = time.strftime("%H%M%S")
        cli = os.path.join(os.path.dirname(sys.executable), "plaud-workers")
        # Double-quoted literals (JSON's are Python's and JavaScript's too), so one pair of single
        # quotes holds each line for the shell.
        q = json.dumps
        python = (f"from celery import Celery; app = Celery(broker={q(url)}, backend={q(url)}); "
                  f"r = app.send_task({q(names.TRANSCRIBE)}, kwargs={{\"source\": {q(sample)}, "
                  f"\"recording_id\": {q('try-py-' + stamp)}}}); print(r.get(timeout=300)[\"text\"])")
        node = (f"const c = require(\"celery-node\").createClient({q(url)}, {q(url)}); "
                f"c.createTask({q(names.TRANSCRIBE)}).applyAsync([], {{source: {q(sample)}, "
                f"recording_id: {q('try-node-' + stamp)}}}).get(300000)"
                f".then(r => {{ console.log(r.text); return c.disconnect(); }})")
        return [
            "Enqueue a recording (any audio file the workers can read; here a bundled sample):",
            f"  REDIS_URL={shlex.quote(url)} {shlex.quote(cli)} transcribe {shlex.quote(sample)} --wait",
            "From Python, with only Celery (the public task name and JSON kwargs):",
            f"  {shlex.quote(sys.executable)} -c {shlex.quote(python)}",
            "From Node.js, with the celery-node package (npm install celery-node):",
            f"  node -e {shlex.quote(node)}",
        ]
