"""Build the ``data`` of a finished transcription from an audio analysis and the request params.

The shape is the primary one in docs/plaud-api.md ("Transcription results"): ``text``,
``language``, ``duration``, ``results[{start, end, text, speaker_id, language,
language_probability}]`` and, when asked for, ``embeddings``. The words of the transcript text
are spread over the speech regions in proportion to their length, so segment timing follows the
real audio.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any

from .audio import Analysis, Region

EMBEDDING_DIMENSIONS = 256
DEFAULT_LANGUAGE = "en"
TAGGED_LANGUAGE_PROBABILITY = 0.99
GUESSED_LANGUAGE_PROBABILITY = 0.9


def placeholder_text(md5_hex: str) -> str:
    return (f"Sandbox transcript of the audio with MD5 {md5_hex}: the Plaud sandbox does no speech "
            f"recognition; tag the file to choose this text.")


def build_result(analysis: Analysis, params: dict[str, Any], md5_hex: str) -> dict[str, Any]:
    transcribe = params.get("transcribe") or {}
    diarization = params.get("diarization") or {}
    decode_silence = bool((params.get("vad") or {}).get("decode_silence", False))
    diarize = bool(diarization.get("enabled", False))

    requested = transcribe.get("language", "auto")
    language = requested if requested and requested != "auto" else (analysis.tag_language or DEFAULT_LANGUAGE)
    probability = (TAGGED_LANGUAGE_PROBABILITY if analysis.tag_language or requested not in (None, "auto")
                   else GUESSED_LANGUAGE_PROBABILITY)

    text = analysis.tag_text if analysis.tag_text is not None else placeholder_text(md5_hex)
    if not analysis.regions:
        text = ""  # no speech found: like a real recogniser, an empty transcript on SUCCESS
    words_per_region = spread_words(text.split(), analysis.regions)

    results: list[dict[str, Any]] = []
    cursor = 0.0
    for region, words in zip(analysis.regions, words_per_region, strict=True):
        if decode_silence and region.start_s - cursor >= 0.3:
            results.append(_segment(cursor, region.start_s, "", None, language, probability))
        if words:
            speaker = f"Speaker {region.speaker + 1}" if diarize else None
            results.append(_segment(region.start_s, region.end_s, " ".join(words), speaker, language, probability))
        cursor = region.end_s
    if decode_silence and analysis.duration_s - cursor >= 0.3:
        results.append(_segment(cursor, analysis.duration_s, "", None, language, probability))

    data: dict[str, Any] = {
        "text": text,
        "language": language,
        "duration": analysis.duration_s,
        "results": results,
    }
    if diarize and diarization.get("return_embedding", False):
        speakers = sorted({r.speaker for r in analysis.regions})
        data["embeddings"] = {f"Speaker {s + 1}": speaker_embedding(md5_hex, s) for s in speakers}
    return data


def spread_words(words: list[str], regions: tuple[Region, ...]) -> list[list[str]]:
    """Split ``words`` over ``regions`` in proportion to each region's length, keeping order."""
    lengths = [max(r.end_s - r.start_s, 0.0) for r in regions]
    total = sum(lengths)
    if not regions or total <= 0:
        return [list(words)] + [[] for _ in regions[1:]] if regions else []
    out: list[list[str]] = []
    elapsed = 0.0
    taken = 0
    for length in lengths:
        elapsed += length
        upto = round(len(words) * elapsed / total)
        out.append(words[taken:upto])
        taken = upto
    return out


def speaker_embedding(md5_hex: str, speaker: int) -> list[float]:
    """A deterministic unit vector per (file, speaker): stable across polls and runs."""
    seed = int.from_bytes(hashlib.sha256(f"{md5_hex}:{speaker}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    vector = [rng.gauss(0.0, 1.0) for _ in range(EMBEDDING_DIMENSIONS)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]


def _segment(start: float, end: float, text: str, speaker: str | None, language: str,
             probability: float) -> dict[str, Any]:
    return {"start": round(start, 3), "end": round(end, 3), "text": text, "speaker_id": speaker,
            "language": language, "language_probability": probability}
