"""The secrets audit: look for every configured secret, token and presigned signature where people look.

Places: every Redis key and value (and the AOF, which holds every value ever written), the
worker, beat and Flower logs, and what Flower shows (its task API and each task's page).
A finding names the place and the kind of secret, never the secret itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
import requests


@dataclass
class Needles:
    """What must not be found, by kind."""

    secrets: dict[str, str] = field(default_factory=dict)  # name -> value, e.g. "PLAUD_SECRET_KEY"
    signatures: list[str] = field(default_factory=list)  # tokens' and presigned URLs' signatures

    def find(self, haystack: bytes | str) -> list[str]:
        data = haystack.encode("utf-8", "replace") if isinstance(haystack, str) else haystack
        found = [name for name, value in self.secrets.items() if value and value.encode() in data]
        leaked = sum(1 for signature in self.signatures if signature and signature.encode() in data)
        if leaked:
            found.append(f"{leaked} token/URL signature(s)")
        return found


@dataclass
class Report:
    places_checked: dict[str, int] = field(default_factory=dict)  # kind of place -> how many
    findings: list[str] = field(default_factory=list)

    def check(self, kind: str, name: str, haystack: bytes | str, needles: Needles) -> None:
        self.places_checked[kind] = self.places_checked.get(kind, 0) + 1
        for what in needles.find(haystack):
            self.findings.append(f"{what} in {kind} {name}")


def redis_values(client: redis.Redis) -> Iterable[tuple[bytes, bytes]]:
    """Every key with its whole value, whatever its type, flattened to bytes."""
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            value: Any = client.get(key)
        elif kind == "hash":
            value = b"\n".join(k + b"=" + v for k, v in client.hgetall(key).items())
        elif kind == "list":
            value = b"\n".join(client.lrange(key, 0, -1))
        elif kind == "set":
            value = b"\n".join(client.smembers(key))
        elif kind == "zset":
            value = b"\n".join(m for m, _ in client.zrange(key, 0, -1, withscores=True))
        else:
            value = b""
        yield key, key + b"\n" + (value or b"")


def audit(*, needles: Needles, redis_client: redis.Redis, aof: bytes, logs: dict[str, str],
          flower_url: str | None, flower_auth: tuple[str, str] | None, task_pages: int = 200) -> Report:
    report = Report()
    for key, value in redis_values(redis_client):
        report.check("redis key", key.decode(errors="replace"), value, needles)
    report.check("redis AOF", "appendonly", aof, needles)
    for name, path in logs.items():
        with open(path, "rb") as handle:
            report.check("log", name, handle.read(), needles)
    if flower_url:
        tasks = requests.get(f"{flower_url}/api/tasks", auth=flower_auth, timeout=30)
        tasks.raise_for_status()
        report.check("flower page", "/api/tasks", tasks.text, needles)
        for task_id in list(tasks.json())[:task_pages]:
            page = requests.get(f"{flower_url}/task/{task_id}", auth=flower_auth, timeout=30)
            report.check("flower page", f"/task/{task_id}", page.text, needles)
        for path in ("/tasks", "/workers", "/broker"):
            page = requests.get(f"{flower_url}{path}", auth=flower_auth, timeout=30)
            report.check("flower page", path, page.text, needles)
    return report
