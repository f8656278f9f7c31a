"""A private redis-server on a free port in a temp dir: for the demo, the tests and benchmarks.

It never touches a Redis the machine already runs: its own port, its own directory, nothing saved.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

import redis

from plaud.processes import stop_process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, *extra_args: str, password: str | None = None) -> None:
        self.extra_args = list(extra_args)
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.dir = ""

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server), "
                               "or point REDIS_URL at a running Redis")
        self.dir = self.dir or tempfile.mkdtemp(prefix="plaud-test-redis-")
        for _ in range(5):  # the free port can be taken between our probe and redis binding it
            self.port = free_port()
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
                 "--appendonly", "no", "--logfile", f"{self.dir}/redis.log", *self.extra_args],
                # A session of its own: a terminal's Ctrl-C reaches only whoever started it (demo, up, a
                # test run), which stops it last, not under workers that are still shutting down.
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.dir}/redis.log")

    def _wait_ready(self, timeout_s: float = 10.0) -> bool:
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.ConnectionError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
