"""Transcript exports: json, txt, srt, vtt, all from one normalised transcript.

Input is the result dict the pipeline delivers (``text``, ``language``, ``duration``,
``segments[{start_s, end_s, text, speaker, ...}]``). Segments with no text (silence decoded
when ``vad.decode_silence`` is on) are left out of txt and subtitles. Speakers, when diarised,
prefix the line (txt, srt) or use WebVTT's voice tag.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

FORMATS = ("json", "txt", "srt", "vtt")


def export(result: dict[str, Any], fmt: str) -> str:
    try:
        return _EXPORTERS[fmt](result)
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}") from None


def timestamp(seconds: float, *, separator: str) -> str:
    """``HH:MM:SS,mmm`` (srt) or ``HH:MM:SS.mmm`` (vtt); hours grow past 99 rather than wrap."""
    millis = max(int(round(seconds * 1000)), 0)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _spoken(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in result.get("segments") or [] if str(s.get("text") or "").strip()]


def _to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, ensure_ascii=False) + "\n"


def _to_txt(result: dict[str, Any]) -> str:
    segments = _spoken(result)
    if not any(s.get("speaker") for s in segments):
        text = str(result.get("text") or "").strip()
        return text + "\n" if text else ""
    lines: list[str] = []
    for segment in segments:  # one paragraph per change of speaker
        speaker, text = segment.get("speaker") or "Unknown speaker", str(segment["text"]).strip()
        if lines and lines[-1].startswith(f"{speaker}: "):
            lines[-1] += " " + text
        else:
            lines.append(f"{speaker}: {text}")
    return "\n\n".join(lines) + "\n"


def _to_srt(result: dict[str, Any]) -> str:
    blocks = []
    for number, segment in enumerate(_spoken(result), start=1):
        text = str(segment["text"]).strip()
        if segment.get("speaker"):
            text = f"{segment['speaker']}: {text}"
        blocks.append(f"{number}\n{timestamp(segment['start_s'], separator=',')} --> "
                      f"{timestamp(segment['end_s'], separator=',')}\n{text}\n")
    return "\n".join(blocks)


def _to_vtt(result: dict[str, Any]) -> str:
    blocks = ["WEBVTT\n"]
    for segment in _spoken(result):
        text = str(segment["text"]).strip().replace("-->", "→")
        if segment.get("speaker"):
            text = f"<v {segment['speaker']}>{text}</v>"
        blocks.append(f"{timestamp(segment['start_s'], separator='.')} --> "
                      f"{timestamp(segment['end_s'], separator='.')}\n{text}\n")
    return "\n".join(blocks)


_EXPORTERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "json": _to_json, "txt": _to_txt, "srt": _to_srt, "vtt": _to_vtt,
}
