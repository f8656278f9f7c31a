"""An idle worker's memory as ``plaud-workers worker`` starts it: PSS summed over its processes.

    python -m bench.idle_worker                 # its defaults (every queue: prefork)
    python -m bench.idle_worker -- -P threads   # anything after -- goes to plaud-workers worker

A private redis-server; the worker is given a few seconds after it is ready (``--settle-s``),
then its PSS is read from ``/proc/PID/smaps_rollup`` for it and its pool children, ``--samples``
times a second apart (the median is reported).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.proc import tree_pss_kib
from workers.local_redis import RedisServer
from workers.local_stack import READY_MARK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settle-s", type=float, default=15.0)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("worker_args", nargs="*", help="passed to plaud-workers worker (after --)")
    args = parser.parse_args()
    server = RedisServer().start()
    logfile = tempfile.mkstemp(prefix="bench-idle-worker-", suffix=".log")[1]
    try:
        with open(logfile, "wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", *args.worker_args],
                                      env={**os.environ, "REDIS_URL": server.url}, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while READY_MARK not in open(logfile, errors="replace").read():
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not start; its log is {logfile}")
                time.sleep(0.2)
            time.sleep(args.settle_s)
            samples = []
            for _ in range(args.samples):
                samples.append(tree_pss_kib(worker.pid) / 1024)
                time.sleep(1)
        finally:
            worker.terminate()
            worker.wait(30)
    finally:
        server.cleanup()
    shown = " ".join(args.worker_args) or "(its defaults)"
    print(f"plaud-workers worker {shown}: idle PSS {statistics.median(samples):.1f} MiB "
          f"({min(samples):.1f}-{max(samples):.1f} over {len(samples)} samples)")


if __name__ == "__main__":
    main()
