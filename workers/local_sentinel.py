"""A private Redis master, a replica and three Sentinels on free ports in a temp dir.

For the failover test and the chaos suite (``--redis sentinel``): Debian's ``redis-server`` plays
every part (``redis-server sentinel.conf --sentinel``). The Sentinels judge the master down after
``down_after_ms`` without an answer and finish a failover within ``failover_timeout_ms``; low
values make a failover take seconds instead of the production defaults' half a minute or more.
The Redis password (master and replica) and the Sentinels' own password differ on purpose, so
that whoever connects must keep them apart.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from plaud.processes import stop_process

from .local_redis import free_port

T = TypeVar("T")
MASTER_NAME = "plaud-master"
QUORUM = 2


@dataclass
class Node:
    role: str  # "master", "replica" or "sentinel"
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


class SentinelCluster:
    """``start()``, then ``url`` (Celery's Sentinel list) and ``MASTER_NAME``; ``kill_master()`` fails over."""

    def __init__(self, *, password: str, sentinel_password: str, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 3000, extra_args: tuple[str, ...] = ()) -> None:
        self.password = password
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.extra_args = extra_args
        self.dir = ""
        self.servers: list[Node] = []  # the data nodes: the master first, as started
        self.sentinels: list[Node] = []

    @property
    def url(self) -> str:
        """The list every process is given as REDIS_URL: the master's password in the first address."""
        return ";".join(f"sentinel://{':' + self.password + '@' if i == 0 else ''}127.0.0.1:{s.port}/0"
                        for i, s in enumerate(self.sentinels))

    def start(self, ready_timeout_s: float = 30.0) -> SentinelCluster:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.dir = self.dir or tempfile.mkdtemp(prefix="plaud-test-sentinel-")
        try:
            master = self._start_server("master")
            self._start_server("replica", replica_of=master.port)
            self._wait(lambda: self._replica_in_sync(), "the replica to sync with the master", ready_timeout_s)
            for _ in range(3):
                self._start_sentinel(master.port)
            self._wait(lambda: all(self._sentinel_sees_all(s) for s in self.sentinels),
                       "the Sentinels to find the replica and each other", ready_timeout_s)
        except BaseException:
            self.cleanup()
            raise
        return self

    # -- what a test or the chaos suite asks ----------------------------------------------------

    def master_address(self) -> tuple[str, int] | None:
        """The master as the Sentinels' majority names it now (None while they disagree or cannot be reached)."""
        seen: dict[tuple[str, int], int] = {}
        for sentinel in self.sentinels:
            if sentinel.proc.poll() is not None:
                continue
            try:
                host, port = self._sentinel_client(sentinel).execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
            except (redis.RedisError, OSError, TypeError, ValueError):
                continue
            address = (str(host), int(port))
            seen[address] = seen.get(address, 0) + 1
        agreed = [address for address, count in seen.items() if count >= QUORUM]
        return agreed[0] if agreed else None

    def master(self) -> Node:
        address = self.master_address()
        for node in self.servers:
            if address == node.address:
                return node
        raise RuntimeError(f"the Sentinels name no master of this cluster ({address})")

    def kill_master(self) -> Node:
        """SIGKILL the current master: a host that is gone, not a shutdown. Returns the node killed."""
        node = self.master()
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        return node

    def wait_for_failover(self, old: Node, timeout_s: float = 60.0) -> Node:
        """Wait until the Sentinels name another master and it accepts writes; returns it."""
        def promoted() -> Node | None:
            address = self.master_address()
            for node in self.servers:
                if node is not old and node.address == address and node.proc.poll() is None:
                    try:
                        if self._client(node).execute_command("ROLE")[0] == b"master":
                            return node
                    except (redis.RedisError, OSError):
                        return None
            return None

        return self._wait(promoted, "a replica to be promoted", timeout_s)

    def data_client(self, node: Node) -> redis.Redis:
        return self._client(node)

    def logs(self) -> list[str]:
        return sorted(os.path.join(self.dir, name) for name in os.listdir(self.dir) if name.endswith(".log"))

    def stop(self) -> None:
        for node in [*self.sentinels, *self.servers]:
            stop_process(node.proc, timeout_s=10)

    def cleanup(self) -> None:
        self.stop()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- starting the parts ---------------------------------------------------------------------

    def _start_server(self, role: str, replica_of: int | None = None) -> Node:
        binary = shutil.which("redis-server") or "redis-server"
        for _ in range(5):  # the free port can be taken between our probe and redis binding it
            port = free_port()
            workdir = os.path.join(self.dir, f"{role}-{port}")
            os.makedirs(workdir, exist_ok=True)
            # masterauth on both: whichever is the master later, the other can log in to it.
            args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "",
                    "--appendonly", "no", "--logfile", os.path.join(self.dir, f"{role}-{port}.log"),
                    "--requirepass", self.password, "--masterauth", self.password, *self.extra_args]
            if replica_of is not None:
                args += ["--replicaof", "127.0.0.1", str(replica_of)]
            node = Node(role, port, subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if self._answers(self._client(node).ping):
                self.servers.append(node)
                return node
            stop_process(node.proc, timeout_s=5)
        raise RuntimeError(f"redis-server ({role}) did not start; see the logs in {self.dir}")

    def _start_sentinel(self, master_port: int) -> Node:
        binary = shutil.which("redis-server") or "redis-server"
        for _ in range(5):
            port = free_port()
            conf = os.path.join(self.dir, f"sentinel-{port}.conf")  # a Sentinel rewrites its file: one each
            with open(conf, "w") as handle:
                handle.write("\n".join([
                    f"port {port}", "bind 127.0.0.1", f"dir {self.dir}",
                    f"logfile {os.path.join(self.dir, f'sentinel-{port}.log')}",
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}",
                    f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
                    f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}",
                    f"sentinel parallel-syncs {MASTER_NAME} 1",
                    f"sentinel auth-pass {MASTER_NAME} {self.password}",
                    # The Sentinels' own password, which they also use with each other.
                    f"requirepass {self.sentinel_password}", f"sentinel sentinel-pass {self.sentinel_password}",
                    ""]))
            os.chmod(conf, 0o600)
            node = Node("sentinel", port, subprocess.Popen([binary, conf, "--sentinel"], stdout=subprocess.DEVNULL,
                                                           stderr=subprocess.DEVNULL))
            if self._answers(self._sentinel_client(node).ping):
                self.sentinels.append(node)
                return node
            stop_process(node.proc, timeout_s=5)
        raise RuntimeError(f"redis-server --sentinel did not start; see the logs in {self.dir}")

    def _client(self, node: Node) -> redis.Redis:
        return redis.Redis(port=node.port, password=self.password, socket_connect_timeout=1, socket_timeout=2)

    def _sentinel_client(self, node: Node) -> redis.Redis:
        return redis.Redis(port=node.port, password=self.sentinel_password, socket_connect_timeout=1,
                           socket_timeout=2, decode_responses=True)

    def _replica_in_sync(self) -> bool:
        replicas = [n for n in self.servers if n.role == "replica"]
        try:
            return all(self._client(n).info("replication").get("master_link_status") == "up" for n in replicas)
        except (redis.RedisError, OSError):
            return False

    def _sentinel_sees_all(self, sentinel: Node) -> bool:
        try:
            state: dict[str, Any] = self._sentinel_client(sentinel).execute_command("SENTINEL", "MASTER", MASTER_NAME)
        except (redis.RedisError, OSError):
            return False
        return int(state.get("num-slaves", 0)) >= len(self.servers) - 1 and \
            int(state.get("num-other-sentinels", 0)) >= 2

    @staticmethod
    def _answers(ping: Callable[[], object], timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if ping():
                    return True
            except (redis.RedisError, OSError):
                time.sleep(0.05)
        return False

    def _wait(self, check: Callable[[], T | None], what: str, timeout_s: float) -> T:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.05)
        raise RuntimeError(f"waited {timeout_s:g} s for {what}; see the logs in {self.dir}")
