"""``plaud-workers``: the command line of the project."""

from __future__ import annotations

import concurrent.futures
import importlib.resources
import sys

import click

from plaud.sandbox.cli import make_audio, sandbox

SAMPLES_PACKAGE = "plaud.sandbox"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """Turn audio recordings into transcripts through Plaud's partner APIs.

    \b
    Examples:
      plaud-workers demo                 # the whole flow on the bundled samples, against the sandbox
      plaud-workers sandbox --port 8765  # a local Plaud-compatible API to develop and test against
    """


@main.command()
def demo() -> None:
    """Transcribe the bundled sample recordings against a private sandbox and print the results.

    Starts the sandbox in this process on a free port and drives each sample through the
    documented flow (token, presign, part PUTs, complete, submit, poll). Needs no credentials
    and no network.
    """
    from plaud.sandbox import SandboxThread
    from plaud.sandbox.contract_client import transcribe

    samples = sorted(p for p in importlib.resources.files(SAMPLES_PACKAGE).joinpath("samples").iterdir()
                     if p.name.endswith(".mp3"))
    with SandboxThread() as sb:
        s = sb.settings
        click.echo(f"sandbox at {sb.base_url}; transcribing {len(samples)} sample(s)…")
        credentials = {"base_url": sb.base_url, "client_id": s.client_id, "secret_key": s.secret_key,
                       "api_key": s.api_key}
        params = {"diarization": {"enabled": True}}
        failed = 0
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = {pool.submit(transcribe, str(p), params=params, poll_interval_s=0.5, **credentials): p
                       for p in samples}
            for future in concurrent.futures.as_completed(futures):
                name = futures[future].name
                try:
                    result = future.result()
                except Exception as exc:  # show every sample's outcome, then exit non-zero
                    failed += 1
                    click.echo(f"\n{name}: FAILED ({type(exc).__name__}: {exc})")
                    continue
                data = result["data"]
                click.echo(f"\n{name}: {result['status']}, {data.get('duration')} s, language {data.get('language')}")
                click.echo(f"  {data.get('text') or result.get('message')}")
                for seg in data.get("results", []):
                    click.echo(f"  [{seg['start']:7.2f} – {seg['end']:7.2f}] {seg['speaker_id'] or '':<10} {seg['text']}")
    sys.exit(1 if failed else 0)


main.add_command(sandbox)
main.add_command(make_audio)
if __name__ == "__main__":
    main()
