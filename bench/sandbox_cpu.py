"""The sandbox's own CPU per request, by request, for one short recording at a time.

    python -m bench.sandbox_cpu --recordings 300 --rounds 3

The sandbox stands in for Plaud on the same cores as the workers in ``bench.pipeline_throughput``,
so its CPU is part of what that benchmark measures. Here one client thread (``PlaudClient``)
uploads a 5-second recording (presign, one part, complete), submits it and polls it once, and the
sandbox process's CPU (all its threads, from /proc) is read around each step. Medians of the
rounds, with their range.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from bench.proc import cpu_s
from bench.sandbox_storage import KINDS, sandbox_storage

STEPS = ("upload: presign, PUT, complete", "submit", "poll")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=300, help="recordings per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sandbox-storage", choices=KINDS, default="memory",
                        help="where the sandbox keeps uploads (bench/sandbox_storage.py)")
    args = parser.parse_args()

    from plaud.client import PlaudClient
    from plaud.config import PlaudConfig
    from plaud.sandbox import SandboxProcess
    from plaud.sandbox.testaudio import make_recording

    sample = make_recording(os.path.join(tempfile.mkdtemp(prefix="bench-sandbox-cpu-"), "short.mp3"), 5.0,
                            text="sandbox cpu").path
    with sandbox_storage(args.sandbox_storage) as storage, \
            SandboxProcess("--processing-base-s", "0", "--processing-rtf", "0", "--token-rate-limit", "",
                           *storage) as sb:
        assert sb.proc is not None
        pid = sb.proc.pid
        client = PlaudClient(PlaudConfig.sandbox(sb.base_url, user_id="sandbox-user"))

        def one() -> list[float]:
            """The sandbox's CPU seconds for each step of one recording."""
            marks = [cpu_s(pid)]
            uploaded = client.upload(sample)
            marks.append(cpu_s(pid))
            transcription_id = client.submit(uploaded.download_url)
            marks.append(cpu_s(pid))
            client.get(transcription_id)
            marks.append(cpu_s(pid))
            return [after - before for before, after in zip(marks, marks[1:], strict=False)]

        one()  # tokens minted, connections open: outside the measure
        rounds: list[list[float]] = []
        for _ in range(args.rounds):
            totals = [0.0] * len(STEPS)
            for _ in range(args.recordings):
                totals = [total + step for total, step in zip(totals, one(), strict=True)]
            rounds.append([total / args.recordings * 1e6 for total in totals])
    print(f"sandbox CPU per request, uploads on {args.sandbox_storage}, {args.recordings} recordings x "
          f"{args.rounds} rounds (median, range):")
    for i, name in enumerate(STEPS):
        values = [r[i] for r in rounds]
        print(f"  {name:32s} {statistics.median(values):6.0f} us  ({min(values):.0f}-{max(values):.0f})")
    per_recording = [sum(r) for r in rounds]
    print(f"  {'per recording':32s} {statistics.median(per_recording) / 1000:6.2f} ms "
          f"({min(per_recording) / 1000:.2f}-{max(per_recording) / 1000:.2f})")


if __name__ == "__main__":
    main()
