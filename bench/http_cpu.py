"""The client's CPU per HTTP request, by HTTP stack, against the sandbox on this host.

    python -m bench.http_cpu --requests 2000

One keep-alive connection each, the same GET with the Transcription API's two headers: the
pipeline's transport (``plaud.transport``, urllib3's pools), ``requests`` (what the transport
used before), urllib3's ``PoolManager.request``, and bare ``http.client`` as the floor. CPU is
this thread's (``time.thread_time``), so the sandbox's own work is not counted; runs alternate
between the stacks to spread the host's noise.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import requests
import urllib3

from plaud.sandbox import SandboxProcess
from plaud.transport import Transport


def cpu_us_per_call(call: Callable[[], object], n: int) -> float:
    call()  # the connection opened outside the measure
    started = time.thread_time()
    for _ in range(n):
        call()
    return (time.thread_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per stack per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with SandboxProcess("--token-rate-limit", "") as sb:
        url = sb.origin + "/healthz"
        headers = {"X-Client-Id": "bench", "X-Client-Api-Key": "bench"}
        transport = Transport()
        session = requests.Session()
        manager = urllib3.PoolManager()
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port)

        def bare() -> bytes:
            connection.request("GET", parts.path, headers=headers)
            return connection.getresponse().read()

        stacks: dict[str, Callable[[], object]] = {
            "plaud.transport (urllib3 pools)": lambda: transport.request("GET", url, headers=headers).json(),
            "requests.Session": lambda: session.get(url, headers=headers, timeout=(5, 30)).json(),
            "urllib3.PoolManager.request": lambda: manager.request("GET", url, headers=headers).json(),
            "http.client, bare": bare,
        }
        figures: dict[str, list[float]] = {name: [] for name in stacks}
        for _ in range(args.rounds):
            for name, call in stacks.items():
                figures[name].append(cpu_us_per_call(call, args.requests))
    print(f"client CPU per request, {args.requests} requests x {args.rounds} rounds each (median, range):")
    for name, values in figures.items():
        print(f"  {name:32s} {statistics.median(values):6.0f} us  ({min(values):.0f}-{max(values):.0f})")


if __name__ == "__main__":
    main()
