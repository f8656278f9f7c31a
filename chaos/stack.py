"""The processes a chaos run breaks: Redis with AOF (alone, or behind Sentinels), workers, beat, Flower,
each a real subprocess."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

from workers.flower_view import flower_environment
from workers.local_redis import RedisServer, free_port, stop_process
from workers.local_sentinel import MASTER_NAME, Node, SentinelCluster
from workers.local_stack import WorkerProcess
from workers.pools import FleetMember


class DurableRedis(RedisServer):
    """A private redis-server that writes every command to its AOF before answering.

    ``crash`` SIGKILLs it and starts it again on the same port from the same directory, so what
    comes back is exactly what the AOF holds. ``freeze`` SIGSTOPs it: connections stay open and
    nothing answers, as in a network partition; ``thaw`` lets it go on.
    """

    def __init__(self, password: str) -> None:
        super().__init__("--appendonly", "yes", "--appendfsync", "always", "--requirepass", password,
                         password=password)

    env: dict[str, str] = {}  # nothing beyond REDIS_URL

    def crash(self) -> str:
        """SIGKILL Redis and start it again from its AOF; says what happened, for the timeline."""
        return f"redis SIGKILLed, back from its AOF after {self.crash_and_restart():.2f} s"

    def crash_and_restart(self) -> float:
        """Returns how long Redis was gone."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.kill()
        self.proc.wait()
        self._launch()
        return time.monotonic() - started

    def _launch(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--save", "", "--logfile", f"{self.dir}/redis.log", *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not self._wait_ready(timeout_s=60):
            raise RuntimeError(f"redis-server did not come back; see {self.dir}/redis.log")

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def aof_bytes(self) -> bytes:
        """Everything Redis ever appended, for the secrets audit."""
        return self.read_aofs(self.dir)

    def logs(self) -> list[str]:
        return [os.path.join(self.dir, "redis.log")]

    @staticmethod
    def read_aofs(directory: str) -> bytes:
        chunks = []
        for root, _, names in os.walk(directory):
            for name in names:
                if "appendonly" in name:
                    with open(os.path.join(root, name), "rb") as handle:
                        chunks.append(handle.read())
        return b"".join(chunks)


class SentinelRedis:
    """A master, a replica and three Sentinels (``workers.local_sentinel``), every write in an AOF.

    ``crash`` SIGKILLs the master and waits for the Sentinels to promote the replica: the host is
    gone, nothing comes back. ``freeze`` SIGSTOPs whichever node is the master then: with no
    replica left to promote, the Sentinels can only wait for it, as the fleet does.
    """

    def __init__(self, password: str, sentinel_password: str) -> None:
        self.cluster = SentinelCluster(password=password, sentinel_password=sentinel_password,
                                       extra_args=("--appendonly", "yes", "--appendfsync", "always"))
        self.sentinel_password = sentinel_password
        self.failover_s: float | None = None
        self._frozen: Node | None = None

    def start(self) -> SentinelRedis:
        self.cluster.start()
        return self

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def env(self) -> dict[str, str]:
        return {"PLAUD_SENTINEL_MASTER": MASTER_NAME, "PLAUD_SENTINEL_PASSWORD": self.sentinel_password}

    def crash(self) -> str:
        started = time.monotonic()
        old = self.cluster.kill_master()
        new = self.cluster.wait_for_failover(old, timeout_s=120)
        self.failover_s = time.monotonic() - started
        return f"redis master :{old.port} SIGKILLed, replica :{new.port} promoted after {self.failover_s:.2f} s"

    def freeze(self) -> None:
        self._frozen = self.cluster.master()
        self._frozen.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self._frozen is not None:
            self._frozen.proc.send_signal(signal.SIGCONT)

    def aof_bytes(self) -> bytes:
        return DurableRedis.read_aofs(self.cluster.dir)

    def logs(self) -> list[str]:
        return self.cluster.logs()

    def cleanup(self) -> None:
        self.thaw()
        self.cluster.cleanup()


class Fleet:
    """Worker processes that can be killed at random, and restarted when a whole one dies."""

    def __init__(self, env: dict[str, str], members: list[FleetMember], *, logdir: str) -> None:
        self.env = env
        self.members = members
        self.logdir = logdir
        self.workers = [self._new(i) for i in range(len(members))]
        self.kills: list[str] = []

    def _new(self, index: int) -> WorkerProcess:
        member = self.members[index]
        return WorkerProcess(self.env, queues=member.queues, pool=member.pool, concurrency=member.concurrency,
                             name=f"chaos{index}-{member.role}",
                             logfile=os.path.join(self.logdir, f"worker{index}.log"))

    def start(self) -> Fleet:
        for worker in self.workers:
            worker.start()
        return self

    def kill_one(self, rng: random.Random) -> str:
        """SIGKILL a pool child (three times in four, where the worker has children: a thread pool
        has none) or a whole worker, which is then started again. Workers take turns as victims."""
        index = len(self.kills) % len(self.workers)
        worker = self.workers[index]
        assert worker.proc is not None
        children = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(worker.proc.pid)], capture_output=True,
                                                        text=True).stdout.split()]
        if children and rng.random() < 0.75:
            victim = rng.choice(children)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
            what = f"pool child {victim} of worker {index} ({self.members[index]})"
        else:
            worker.kill()
            self.workers[index] = self._new(index)
            self.workers[index].start(ready_timeout_s=120)
            what = f"whole worker {index} ({self.members[index]}, restarted)"
        self.kills.append(what)
        return what

    def revive_dead(self) -> list[str]:
        """Start again any worker that exited by itself, as compose's or Kubernetes' restart policy would."""
        revived = []
        for index, worker in enumerate(self.workers):
            if worker.proc is not None and worker.proc.poll() is not None:
                code = worker.proc.returncode
                self.workers[index] = self._new(index)
                self.workers[index].start(ready_timeout_s=120)
                revived.append(f"worker {index} had exited by itself (code {code}); started again")
        return revived

    def logs(self) -> list[str]:
        return [w.logfile for w in self.workers]

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop(timeout_s=20)


class Service:
    """``celery beat`` or Flower as a subprocess logging to a file."""

    def __init__(self, args: list[str], env: dict[str, str], logfile: str) -> None:
        self.logfile = logfile
        with open(logfile, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", *args],
                                         env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc, timeout_s=20)


def start_flower(env: dict[str, str], logdir: str, user: str, password: str) -> tuple[Service, str]:
    port = free_port()
    service = Service(["flower"], {**env, **flower_environment(port=port, user=user, password=password)},
                      os.path.join(logdir, "flower.log"))
    return service, f"http://127.0.0.1:{port}"
