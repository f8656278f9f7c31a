"""Which pool a worker runs when it is not told: chosen by the queues it consumes (BENCHMARKS.md).

Submits, polls, delivers, webhooks and entry tasks are short HTTP calls and Redis commands: a
thread pool runs them in one process, with no children to warm up and nothing copied per process,
and keeps countdown polls on time (measured: 2,000 recordings in flight, threads -c 16 at 174 MiB
PSS with poll lateness p99 0.26 s; prefork -c 8 at 769 MiB with p99 28 s). Uploads hash and may
transcode, which needs cores: a worker that consumes the uploads queue stays on prefork.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tasks.names import ENTRY_QUEUES, POLLS_QUEUE, UPLOADS_QUEUE, WORKER_QUEUES

THREADS_CONCURRENCY = 16  # threads per worker of the HTTP-bound roles, unless told

# The roles a fleet is split into (compose and Kubernetes run one deployment per role), by the
# queues each consumes; "all" is one worker on every queue.
ROLES = {"api": ENTRY_QUEUES, "uploads": (UPLOADS_QUEUE,), "polls": (POLLS_QUEUE,), "all": WORKER_QUEUES}


@dataclass(frozen=True)
class FleetMember:
    """One worker of a fleet: its role, pool and concurrency (``api:threads:16``)."""

    role: str
    pool: str
    concurrency: int

    @property
    def queues(self) -> tuple[str, ...]:
        return ROLES[self.role]

    def __str__(self) -> str:
        return f"{self.role}:{self.pool}:{self.concurrency}"


def parse_fleet(text: str) -> list[FleetMember]:
    """``role:pool:concurrency,...`` as the benchmarks and the chaos suite take it; a fleet that
    leaves a worker queue unconsumed is refused (its work would never run)."""
    fleet = []
    for part in text.split(","):
        try:
            role, pool, concurrency = part.split(":")
            member = FleetMember(role, pool, int(concurrency))
        except ValueError:
            raise ValueError(f"{part!r} is not role:pool:concurrency (e.g. api:threads:16)") from None
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
        fleet.append(member)
    if {q for member in fleet for q in member.queues} != set(WORKER_QUEUES):
        raise ValueError(f"the fleet {text!r} must consume every worker queue ({', '.join(WORKER_QUEUES)})")
    return fleet


def queues_in(args: Sequence[str]) -> tuple[str, ...]:
    """The queues a `celery worker` command line consumes (every worker queue when it names none)."""
    for i, arg in enumerate(args):
        if arg in ("-Q", "--queues") and i + 1 < len(args):
            return tuple(q for q in args[i + 1].split(",") if q)
        if arg.startswith("--queues="):
            return tuple(q for q in arg.split("=", 1)[1].split(",") if q)
        if arg.startswith("-Q") and len(arg) > 2:
            return tuple(q for q in arg[2:].split(",") if q)
    return WORKER_QUEUES


def gives(args: Sequence[str], short: str, long: str) -> bool:
    """Whether the command line sets an option, in any of its forms: ``-c 8``, ``-c8``, ``--concurrency 8``
    or ``--concurrency=8``."""
    return any(arg.startswith(short) or arg == long or arg.startswith(long + "=") for arg in args)


def default_pool_args(args: Sequence[str]) -> list[str]:
    """The pool arguments to add to a `celery worker` command line that chose none."""
    if gives(args, "-P", "--pool"):
        return []
    if UPLOADS_QUEUE in queues_in(args):
        return ["--pool", "prefork"]
    return ["--pool", "threads"] + ([] if gives(args, "-c", "--concurrency") else
                                    ["--concurrency", str(THREADS_CONCURRENCY)])
