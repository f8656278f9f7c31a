"""``plaud-workers cancel | retry``: stop recordings and re-drive failed ones, by id or in bulk.

A bulk command (``--tenant``, ``--failed``) prints what it will do and goes ahead only with
``--yes`` (or a yes at the prompt, on a terminal); exit 2 when it was not confirmed.
"""

from __future__ import annotations

import re
import sys

import click

from .results_cli import EXIT_FAILED, EXIT_UNKNOWN, Exit, _store

EXIT_NOT_CONFIRMED = 2
SHOWN_IN_PLAN = 20
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
LIVE_STATES = ("QUEUED", "UPLOADING", "UPLOADED", "SUBMITTED", "PROCESSING")


def parse_duration_s(text: str) -> float:
    match = _DURATION_RE.match(text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30m, 1h or 2d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def confirm(what: str, ids: list[str], yes: bool) -> None:
    """Print the plan; go on with --yes or a yes at a terminal's prompt, else exit 2."""
    click.echo(f"{what}: {len(ids)} recording(s)")
    for recording_id in ids[:SHOWN_IN_PLAN]:
        click.echo(f"  {recording_id}")
    if len(ids) > SHOWN_IN_PLAN:
        click.echo(f"  … and {len(ids) - SHOWN_IN_PLAN} more")
    if yes or not ids:
        return
    if sys.stdin.isatty() and click.confirm("Go ahead?", default=False):
        return
    raise Exit("not confirmed: nothing changed (add --yes to go ahead)", EXIT_NOT_CONFIRMED)


@click.command()
@click.argument("recording_ids", nargs=-1)
@click.option("--tenant", help="Every live recording of this tenant.")
@click.option("--state", "states", multiple=True, type=click.Choice(LIVE_STATES),
              help="With --tenant: only recordings in this state (repeatable).")
@click.option("--yes", is_flag=True, help="With --tenant: go ahead without asking.")
def cancel(recording_ids: tuple[str, ...], tenant: str | None, states: tuple[str, ...], yes: bool) -> None:
    """Cancel recordings: the given ones, or every live one of --tenant.

    Before its submit a cancelled recording costs Plaud nothing. After it, Plaud offers no cancel:
    the job still runs and is billed, but its result is neither fetched nor delivered.

    \b
    Examples:
      plaud-workers cancel call-8812 call-8813
      plaud-workers cancel --tenant acme --state QUEUED --state UPLOADED --yes
    """
    from tasks.cancel import cancel_recording, live_recordings
    from tasks.records import RecordingState
    from workers.celery_app import app

    if bool(recording_ids) == bool(tenant):
        raise click.UsageError("give recording ids, or --tenant (not both)")
    if states and not tenant:
        raise click.UsageError("--state goes with --tenant")
    rt = _store()
    ids = list(recording_ids)
    if tenant:
        ids = [r.recording_id for r in live_recordings(rt, tenant=tenant,
                                                        states=[RecordingState(s) for s in states])]
        confirm(f"cancel tenant {tenant}'s live recordings{' in ' + ', '.join(states) if states else ''}", ids, yes)
    unknown = 0
    for recording_id in ids:
        outcome = cancel_recording(rt, recording_id, backend=app.backend)
        unknown += outcome.state == "UNKNOWN"
        click.echo(f"{recording_id}: {outcome.message}")
    if unknown:
        sys.exit(EXIT_UNKNOWN)


@click.command()
@click.argument("recording_ids", nargs=-1)
@click.option("--failed", "all_failed", is_flag=True, help="Every FAILED recording that matches the filters.")
@click.option("--tenant", help="With --failed: only this tenant's.")
@click.option("--stage", type=click.Choice(["upload", "submit", "poll"]), help="With --failed: failed at this stage.")
@click.option("--kind", help="With --failed: of this failure kind (plaud-workers status shows it).")
@click.option("--since", help="With --failed: failed within this long, e.g. 30m, 1h, 2d.")
@click.option("--yes", is_flag=True, help="With --failed: go ahead without asking.")
def retry(recording_ids: tuple[str, ...], all_failed: bool, tenant: str | None, stage: str | None,
          kind: str | None, since: str | None, yes: bool) -> None:
    """Re-drive FAILED recordings from where they failed: the given ones, or every one matching --failed.

    \b
    Examples:
      plaud-workers retry call-8812
      plaud-workers retry --failed --tenant acme --kind plaud_unavailable --since 2h --yes
    """
    from tasks.cancel import failed_recordings
    from tasks.failures import FailureKind, StageName
    from tasks.reconcile import NotRetryable, retry_failed
    from workers.celery_app import app  # noqa: F401  (the retry publishes through the app configured here)

    if bool(recording_ids) == all_failed:
        raise click.UsageError("give recording ids, or --failed with filters (not both)")
    if not all_failed and (tenant or stage or kind or since):
        raise click.UsageError("--tenant, --stage, --kind and --since go with --failed")
    try:
        failure_kind = FailureKind(kind) if kind else None
    except ValueError:
        raise click.BadParameter(f"{kind!r}; kinds are {', '.join(k.value for k in FailureKind)}",
                                 param_hint="--kind") from None
    rt = _store()
    ids = list(recording_ids)
    if all_failed:
        ids = [r.recording_id for r in failed_recordings(
            rt, tenant=tenant, stage=StageName(stage) if stage else None, kind=failure_kind,
            since_s=parse_duration_s(since) if since else None)]
        confirm("retry failed recordings", ids, yes)
    refused = 0
    for recording_id in ids:
        try:
            task_id, start = retry_failed(rt, recording_id)
        except NotRetryable as exc:
            if not all_failed:
                raise Exit(str(exc), EXIT_FAILED) from None
            refused += 1
            click.echo(f"{recording_id}: {exc}")
            continue
        click.echo(f"{recording_id}: re-driven from {start}; task {task_id}")
    if refused:
        sys.exit(EXIT_FAILED)
