"""Command-line entry points of the sandbox: ``sandbox`` and ``make-audio``.

The ``sandbox`` options are generated from ``SandboxSettings``, so every setting is a flag, an
environment variable and a runtime config key under the same name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from .settings import ENV_PREFIX, SandboxSettings, SettingsError

_CLICK_TYPES = {"int": int, "float": float, "str": str}


def _settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for f in reversed(SandboxSettings.fields()):
        env = ENV_PREFIX + f.name.upper()
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{f.metadata['help']} [env {env}; default {default!r}]"
        command = click.option("--" + f.name.replace("_", "-"), f.name, type=_CLICK_TYPES[f.type],
                               default=None, help=help_text)(command)
    return command


@click.command(context_settings={"max_content_width": 110})
@_settings_options
def sandbox(**flags: Any) -> None:
    """Serve a local Plaud-compatible partner API (the embedded default of plaud-workers).

    \b
    Examples:
      plaud-workers sandbox                       # http://127.0.0.1:8765/developer/api
      plaud-workers sandbox --port 0              # any free port (printed)
      plaud-workers sandbox --fault-5xx 0.1 --fault-latency-ms 20 --fault-seed 7

    Admin endpoints (not part of Plaud's API): GET /_sandbox/stats, /_sandbox/transcriptions and
    /_sandbox/issued, POST /_sandbox/reset, GET and PATCH /_sandbox/config (JSON of any setting
    above except host, port, data-dir). See docs/sandbox.md.
    """
    from .server import serve

    try:
        settings = SandboxSettings.from_env(**flags)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    serve(settings, echo=click.echo)


@click.command("make-audio")
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
@click.option("--duration-s", type=float, default=10.0, show_default=True, help="Length of the recording.")
@click.option("--text", default=None, help="Transcript text, stored in the ID3 USLT frame.")
@click.option("--speakers", type=click.IntRange(1, 4), default=1, show_default=True,
              help="Voices taking turns (distinct pitches).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the speech/silence layout.")
@click.option("--language", default="eng", show_default=True, help="ISO 639-2 code of the USLT frame.")
def make_audio(path: str, duration_s: float, text: str | None, speakers: int, seed: int, language: str) -> None:
    """Write a test MP3 with speech-like regions, silences, and TEXT as its transcript.

    \b
    Example:
      plaud-workers make-audio meeting.mp3 --duration-s 60 --speakers 2 --text "Hello from the test."
    """
    from .testaudio import make_recording

    recording = make_recording(path, duration_s, text=text, speakers=speakers, seed=seed, language=language)
    click.echo(f"wrote {path}: {recording.duration_s:.1f} s, {len(recording.regions)} speech regions, "
               f"{speakers} speaker(s)")
