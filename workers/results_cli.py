"""``plaud-workers transcribe | status | result``: enqueue recordings, watch them, read results.

Exit codes (for scripts, here and in ``operations_cli``): 0 success; 1 a recording failed (or
cannot be retried); 2 bad usage, or a bulk command not confirmed; 3 timed out waiting, or the
recording is still running; 4 no such recording; 5 Redis unreachable.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click
import redis

from plaud.exports import FORMATS, export
from plaud.redact import mask_url_passwords, url_without_query
from tasks.names import PRIORITIES

EXIT_FAILED, EXIT_TIMEOUT, EXIT_UNKNOWN, EXIT_NO_REDIS = 1, 3, 4, 5
REFRESH_S = 0.5


class Exit(click.ClickException):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]  # click declares a class default; it reads this one


def _store():
    from tasks.runtime import runtime

    rt = runtime()
    try:
        rt.redis.ping()
    except (redis.RedisError, OSError) as exc:
        raise Exit(f"cannot reach Redis at {mask_url_passwords(rt.settings.redis_url)} ({type(exc).__name__}); "
                   f"set REDIS_URL",
                   EXIT_NO_REDIS) from None
    return rt


def _params(language: str | None, model: str | None, diarize: bool, embeddings: bool,
            decode_silence: bool) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if language or model:
        params["transcribe"] = {k: v for k, v in (("language", language), ("model", model)) if v}
    if diarize or embeddings:
        params["diarization"] = {"enabled": True, "return_embedding": embeddings}
    if decode_silence:
        params["vad"] = {"decode_silence": True}
    return params


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--recording-id", help="Your id for the recording (one SOURCE only).")
@click.option("--language", help="'auto' (default) or a BCP-47 code such as en, ja.")
@click.option("--model", help="Plaud model, e.g. plaud-fast-whisper (default).")
@click.option("--diarize", is_flag=True, help="Label speakers (Speaker 1..n).")
@click.option("--embeddings", is_flag=True, help="Also return one voice embedding per speaker (implies --diarize).")
@click.option("--decode-silence", is_flag=True, help="Let silent stretches yield (empty) segments.")
@click.option("--webhook-url", help="POST the signed result there when done.")
@click.option("--tenant", help="Who the recordings are for: the budget is shared fairly between tenants.")
@click.option("--priority", type=click.Choice(PRIORITIES), help="Order within the tenant (default normal).")
@click.option("--wait", is_flag=True, help="Show live progress until every recording ends; exit 1 if any failed.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="With --wait: write or print results in this format.")
@click.option("--output-dir", type=click.Path(file_okay=False),
              help="With --format: write <recording_id>.<format> here.")
@click.option("--timeout-s", type=float, default=3600.0, show_default=True,
              help="With --wait: give up after this long.")
def transcribe(sources: tuple[str, ...], recording_id: str | None, language: str | None, model: str | None,
               diarize: bool, embeddings: bool, decode_silence: bool, webhook_url: str | None, tenant: str | None,
               priority: str | None, wait: bool, fmt: str | None, output_dir: str | None, timeout_s: float) -> None:
    """Enqueue recordings by the public task name; optionally wait and export.

    SOURCE is a local path readable by the workers, or an http(s) URL.

    \b
    Examples:
      plaud-workers transcribe call.mp3                       # prints the recording and task ids
      plaud-workers transcribe a.mp3 b.wav --wait --diarize   # live progress, then a summary
      plaud-workers transcribe https://host/x.mp3 --wait --format srt --output-dir subs/
    """
    from workers.handle import transcribe as enqueue

    if recording_id and len(sources) > 1:
        raise click.UsageError("--recording-id names one recording; give one SOURCE with it")
    if (fmt or output_dir) and not wait:
        raise click.UsageError("--format and --output-dir need --wait")
    rt = _store()
    params = _params(language, model, diarize, embeddings, decode_silence)
    handles = []
    for source in sources:
        is_url = source.lower().startswith(("http://", "https://"))
        kwargs: dict[str, Any] = {"params": params} if params else {}
        if webhook_url:
            kwargs["webhook_url"] = webhook_url
        kwargs.update({name: value for name, value in (("tenant", tenant), ("priority", priority)) if value})
        handle = enqueue(source if is_url else os.path.abspath(source), recording_id=recording_id, **kwargs)
        handles.append((source, handle))
    if not wait:
        for source, handle in handles:
            click.echo(f"{handle.recording_id}\t{handle.task_id}\t{source}")
        return
    _wait_and_report(rt, handles, fmt, output_dir, timeout_s)


def _wait_and_report(rt: Any, handles: list, fmt: str | None, output_dir: str | None, timeout_s: float) -> None:
    from workers.progress import ENDED, ProgressView, Row

    rows = [Row(handle.recording_id, os.path.basename(url_without_query(source)) or source)
            for source, handle in handles]
    view = ProgressView(rows, sys.stdout, live=sys.stdout.isatty())
    records: dict[str, Any] = {}

    def fetch(recording_id: str) -> dict[str, Any] | None:
        record = rt.store.get(recording_id)
        records[recording_id] = record
        return None if record is None else {**record.public(), "failure": record.get("failure")}

    deadline = time.monotonic() + timeout_s
    while True:
        view.update(fetch)
        if view.finished or time.monotonic() > deadline:
            break
        time.sleep(REFRESH_S)

    succeeded = [r for r in rows if r.state == "SUCCEEDED"]
    failed = [r for r in rows if r.state in ("FAILED", "CANCELLED")]
    waiting = [r for r in rows if r.state not in ENDED]
    click.echo(f"\n{len(succeeded)} succeeded, {len(failed)} failed or cancelled" +
               (f", {len(waiting)} still running after {timeout_s:g} s" if waiting else ""))
    for row in failed:
        click.echo(f"  {row.state} {row.label} ({row.recording_id}): {row.detail}")
    if fmt:
        for row in succeeded:
            text = export(records[row.recording_id].get("result"), fmt)
            if output_dir:
                os.makedirs(output_dir, exist_ok=True)
                path = os.path.join(output_dir, f"{row.recording_id}.{fmt}")
                with open(path, "w", encoding="utf-8") as out:
                    out.write(text)
                click.echo(f"  wrote {path}")
            else:
                click.echo(f"\n== {row.label} ({row.recording_id}) ==\n{text}", nl=False)
    if failed:
        sys.exit(EXIT_FAILED)
    if waiting:
        sys.exit(EXIT_TIMEOUT)


@click.command()
@click.argument("recording_ids", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--limit", type=int, default=50, show_default=True, help="Without IDs: how many recent recordings.")
@click.option("--budget", "budget_only", is_flag=True,
              help="Only the fleet's Transcription API budget and who waits for it.")
def status(recording_ids: tuple[str, ...], as_json: bool, limit: int, budget_only: bool) -> None:
    """Show recordings: the given ones in full, or a table of the most recent by state, and the budget.

    \b
    Examples:
      plaud-workers status                 # recent recordings, counts by state, the budget
      plaud-workers status call-8812 --json
      plaud-workers status --budget --json # limit, used in the window, waiting by kind, oldest wait
    """
    from tasks.waiting import budget_summary, wait_of

    rt = _store()
    if budget_only:
        summary = budget_summary(rt)
        click.echo(json.dumps(summary, indent=2) if as_json else _budget_line(summary))
        return
    if recording_ids:
        found = []
        for recording_id in recording_ids:
            record = rt.store.get(recording_id)
            if record is None:
                raise Exit(f"no recording {recording_id} (unknown, or its record expired)", EXIT_UNKNOWN)
            waiting = wait_of(rt, recording_id) if not record.state.is_terminal else None
            found.append({**record.public(), "failure": record.get("failure"),
                          **({"waiting": waiting} if waiting else {})})
        if as_json:
            click.echo(json.dumps(found if len(found) > 1 else found[0], indent=2, default=str))
            return
        for data in found:
            click.echo(f"{data['recording_id']}: {data['state']}")
            for key in sorted(k for k in data if k not in ("recording_id", "state")):
                click.echo(f"  {key}: {data[key]}")
        return
    rows = [r for r in (rt.store.get(i) for i in rt.store.recent(limit)) if r is not None]
    if as_json:
        click.echo(json.dumps([{**r.public(), "failure": r.get("failure")} for r in rows], indent=2, default=str))
        return
    counts: dict[str, int] = {}
    now = time.time()
    for record in rows:
        counts[record.state.value] = counts.get(record.state.value, 0) + 1
        note = (record.get("failure") or {}).get("reason") or record.get("source_shown") or ""
        age = _age(now - record.number("updated_at", now))
        click.echo(f"{record.recording_id:<40} {record.state.value:<10} {age:>6}  {note}"[:160])
    click.echo(", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no recordings yet")
    click.echo(_budget_line(budget_summary(rt)))


def _budget_line(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "budget: none set (PLAUD_TX_RATE_LIMIT): requests go out as soon as they are made"
    waiting = summary["waiting"]
    line = (f"budget: {summary['used_in_window']} of {summary['limit']} per {summary['period_s']:.0f} s used; "
            f"waiting: {waiting['submit']} submits, {waiting['poll']} polls")
    if waiting["submit"] or waiting["poll"]:
        line += f", the oldest for {summary['oldest_wait_s']:.0f} s"
    uploads = summary.get("uploads")
    if uploads:
        line += (f"; uploads: {uploads['waiting']} waiting, {uploads['uploaded_not_submitted']} uploaded and not "
                 f"yet submitted (at most {uploads['most_uploaded_ahead']})")
    return line


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@click.command()
@click.argument("recording_id")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="json", show_default=True)
def result(recording_id: str, fmt: str) -> None:
    """Print a recording's transcript (exit 1 if it failed, 3 if it is still running)."""
    rt = _store()
    record = rt.store.get(recording_id)
    if record is None:
        raise Exit(f"no recording {recording_id} (unknown, or its record expired)", EXIT_UNKNOWN)
    if record.state.value == "FAILED":
        from tasks.failures import Failure

        raise Exit(Failure.from_record(record).describe(recording_id), EXIT_FAILED)
    if record.state.value == "CANCELLED":
        from tasks.cancel import cancelled_message

        raise Exit(cancelled_message(recording_id, record.get("cancelled") or {}), EXIT_FAILED)
    if record.state.value != "SUCCEEDED":
        raise Exit(f"recording {recording_id} is still {record.state.value}", EXIT_TIMEOUT)
    click.echo(export(record.get("result"), fmt), nl=False)
