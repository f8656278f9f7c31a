"""``plaud-workers``: the command line of the project."""

from __future__ import annotations

import importlib.resources
import sys
from typing import Any

import click

from plaud.sandbox.cli import make_audio, sandbox
from tasks import names

from . import operations_cli, results_cli

SAMPLES_PACKAGE = "plaud.sandbox"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """Turn audio recordings into transcripts through Plaud's partner APIs.

    \b
    Examples:
      plaud-workers demo                 # the whole pipeline on the bundled samples, against the sandbox
      plaud-workers up --workers 2       # Redis, sandbox, workers, beat, Flower in the foreground; Ctrl-C stops it
      plaud-workers transcribe a.mp3 --wait --format srt   # enqueue, watch, print subtitles
      plaud-workers status               # recent recordings by state
      plaud-workers worker               # a worker (reads REDIS_URL and PLAUD_* from the environment)
      plaud-workers sandbox --port 8765  # a local Plaud-compatible API to develop and test against
    """


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Start a worker; further arguments go to celery worker.

    Unless -P is given, a worker that consumes the uploads queue runs prefork (hashing and
    transcoding need cores) and any other runs a thread pool of 16 (short HTTP calls: one process,
    polls on time); docs/operations.md has the measurements and how to size a worker.

    \b
    Examples:
      plaud-workers worker                               # all queues, prefork, events on
      plaud-workers worker -Q plaud.uploads -c 4         # an upload-only worker (prefork)
      plaud-workers worker -Q celery,plaud.api           # entry, submits, delivers: 16 threads
      plaud-workers worker -Q plaud.polls -c 50          # polls: 50 threads
    """
    from plaud.config import PlaudConfig
    from plaud.errors import ConfigError
    from tasks.settings import PipelineSettings

    try:
        config = PlaudConfig.from_env()
        PipelineSettings.from_env()
    except ConfigError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None
    click.echo(f"plaud-workers worker: talking to {config.describe()}", err=True)
    from workers.celery_app import app
    from workers.pools import default_pool_args

    app.worker_main(["worker", "--loglevel", "INFO", "-E", *ctx.args, *default_pool_args(ctx.args)])


@main.command()
@click.option("--timeout-s", type=float, default=120.0, show_default=True, help="Give up waiting after this long.")
def demo(timeout_s: float) -> None:
    """Run the whole pipeline on the bundled samples: sandbox, Redis, a worker, and the results.

    Starts the sandbox on a free port, uses the Redis at REDIS_URL (default
    redis://localhost:6379/0) or starts a private redis-server when none answers, starts a
    worker, enqueues each sample by the public task name, and prints the transcripts.
    """
    import logging
    import os
    import time

    from celery import Celery

    from plaud.errors import ConfigError
    from plaud.redact import mask_url_passwords
    from plaud.sandbox import SandboxSettings, SandboxThread, worker_environment
    from tasks.errors import RecordingFailed
    from tasks.redis_connection import celery_transport_options
    from tasks.settings import PipelineSettings
    from workers.handle import wait_result
    from workers.local_stack import WorkerProcess, find_or_start_redis

    samples = sorted(str(p) for p in importlib.resources.files(SAMPLES_PACKAGE).joinpath("samples").iterdir()
                     if p.name.endswith(".mp3"))
    try:
        settings = PipelineSettings.from_env()
        redis_url, private_redis = find_or_start_redis(settings)
    except (ConfigError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    logging.getLogger("tornado.access").setLevel(logging.ERROR)  # the sandbox's 4xx lines are not news here
    failed = 0
    try:
        with SandboxThread(SandboxSettings(port=0, processing_base_s=2.0)) as sb:
            assert sb.running is not None, "the sandbox is not started"
            env = {**worker_environment(sb.running), "REDIS_URL": redis_url, "PLAUD_EXPECTED_BASE_S": "2"}
            worker_proc = WorkerProcess(env, name="demo").start()
            click.echo(f"sandbox {sb.base_url}, redis {mask_url_passwords(redis_url)}"
                       f"{' (private)' if private_redis else ''}, worker log {worker_proc.logfile}")
            try:
                # A bare Celery client, as any service would use: only the broker and the task name
                # (and, for a Sentinel list, the master's name and the Sentinels' password).
                client = Celery(broker=redis_url, backend=redis_url)
                client.conf.broker_transport_options = celery_transport_options(settings, redis_url)
                client.conf.result_backend_transport_options = celery_transport_options(settings, redis_url)
                run = f"demo-{int(time.time())}"
                handles = {path: client.send_task(names.TRANSCRIBE, kwargs={
                    "source": path, "recording_id": f"{run}-{os.path.basename(path)}",
                    "params": {"diarization": {"enabled": True}}, "metadata": {"sample": os.path.basename(path)}})
                    for path in samples}
                for path, handle in handles.items():
                    name = os.path.basename(path)
                    outcome: dict[str, Any] | Exception
                    try:
                        outcome = wait_result(handle, timeout_s)
                    except (RecordingFailed, TimeoutError) as exc:
                        outcome = exc
                    if isinstance(outcome, Exception):
                        failed += 1
                        click.echo(f"\n{name}: FAILED ({outcome})")
                        continue
                    click.echo(f"\n{name}: SUCCEEDED, {outcome['duration']} s, language {outcome['language']}, "
                               f"recording {outcome['recording_id']}")
                    click.echo(f"  {outcome['text']}")
                    for seg in outcome["segments"]:
                        click.echo(f"  [{seg['start_s']:7.2f} – {seg['end_s']:7.2f}] {seg['speaker'] or '':<10} "
                                   f"{seg['text']}")
            finally:
                worker_proc.stop()
    finally:
        if private_redis is not None:
            private_redis.cleanup()
    sys.exit(1 if failed else 0)


@main.command()
@click.option("--port", type=int, default=9808, show_default=True, help="Port to serve /metrics on (0: any free one).")
@click.option("--address", default="0.0.0.0", show_default=True, help="Address to listen on.")
def metrics(port: int, address: str) -> None:
    """Serve the pipeline's metrics to Prometheus, read from Redis on each scrape.

    Works with any pool and any number of worker hosts: workers record in Redis, this reads it.
    Reads REDIS_URL and PLAUD_* like a worker. docs/operations.md lists every metric.
    """
    import signal
    import threading

    from plaud.errors import ConfigError
    from tasks.runtime import Runtime
    from workers.metrics_exporter import serve

    try:
        rt = Runtime.from_env()
    except ConfigError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    serve(rt, port=port, address=address, stop=stop,
          on_listening=lambda url: click.echo(f"plaud-workers metrics: serving {url}", err=True))


@main.command()
@click.option("--workers", "worker_count", type=click.IntRange(1, 32), default=1, show_default=True,
              help="Worker processes, each on every queue.")
@click.option("--concurrency", "-c", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Pool processes per worker.")
@click.option("--flower-port", type=click.IntRange(0, 65535), default=5555, show_default=True,
              help="Flower's port on 127.0.0.1 (0: any free port).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=9808, show_default=True,
              help="The exporter's port (0: any free port).")
@click.option("--private-redis", is_flag=True, help="Start a private redis-server even if one answers at REDIS_URL.")
@click.option("--stop-grace-s", type=float, default=30.0, show_default=True,
              help="On Ctrl-C, how long workers may take to finish their running tasks.")
def up(worker_count: int, concurrency: int, flower_port: int, metrics_port: int, private_redis: bool,
       stop_grace_s: float) -> None:
    """The whole stack in the foreground, for trying it and for development; Ctrl-C stops all of it.

    Redis (the one at REDIS_URL, default redis://localhost:6379/0, when it answers; else a private
    redis-server), the sandbox unless PLAUD_* credentials are set, the workers, one beat (the
    reconciler), Flower with a generated password, and the metrics exporter. Prints where each is
    and how to enqueue. No Docker needed.
    """
    import os

    from plaud.config import PlaudConfig
    from plaud.errors import ConfigError
    from workers.up import Stack, UpOptions

    try:
        PlaudConfig.from_env()
    except ConfigError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None
    options = UpOptions(redis_url=os.environ.get("REDIS_URL", "redis://localhost:6379/0"), private_redis=private_redis,
                        workers=worker_count, concurrency=concurrency, flower_port=flower_port,
                        metrics_port=metrics_port, stop_grace_s=stop_grace_s)
    sys.exit(Stack(options, echo=click.echo).run())


main.add_command(sandbox)
main.add_command(make_audio)
for command in (results_cli.transcribe, results_cli.status, results_cli.result, operations_cli.cancel,
                operations_cli.retry):
    main.add_command(command)
if __name__ == "__main__":
    main()
