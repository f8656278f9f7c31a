"""Make tagged test recordings: speech-like regions between silences, with known ground truth.

Each speaker is a harmonic tone at its own pitch, shaped by a syllable-rate envelope, so the
sandbox's energy VAD finds the speech regions and its pitch clustering tells the speakers
apart. The transcript text goes into the ID3v2 ``USLT`` frame, which the sandbox returns as
the transcript. Generated blockwise, so a two-hour file costs no more memory than a short one::

    plaud-workers make-audio meeting.mp3 --duration-s 60 --speakers 2 --text "Hello from the test."

or from Python: ``make_recording("meeting.mp3", duration_s=60, text="...", speakers=2)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import soundfile
from mutagen.id3 import ID3, USLT, ID3NoHeaderError

SPEAKER_PITCHES_HZ = (140.0, 230.0, 330.0, 480.0)
SAMPLERATE_HZ = 16000
SYLLABLE_HZ = 4.0
LEAD_SILENCE_S = 0.5


@dataclass(frozen=True)
class PlannedRegion:
    start_s: float
    end_s: float
    speaker: int


@dataclass(frozen=True)
class Recording:
    path: str
    duration_s: float
    text: str | None
    regions: tuple[PlannedRegion, ...]  # the speech regions, ground truth for the VAD


def plan_regions(duration_s: float, speakers: int, seed: int,
                 speech_s: tuple[float, float] = (1.5, 3.5),
                 silence_s: tuple[float, float] = (0.6, 1.4)) -> tuple[PlannedRegion, ...]:
    """Alternate speech and silence after a short lead-in; speakers take turns."""
    rng = random.Random(seed)
    regions: list[PlannedRegion] = []
    t = min(LEAD_SILENCE_S, duration_s / 4)
    turn = 0
    while t < duration_s - 0.3:
        length = min(rng.uniform(*speech_s), duration_s - t - 0.1)
        if length < 0.3:
            break
        regions.append(PlannedRegion(round(t, 3), round(t + length, 3), turn % speakers))
        turn += 1
        t += length + rng.uniform(*silence_s)
    return tuple(regions)


def make_recording(path: str, duration_s: float, *, text: str | None = None, speakers: int = 1,
                   seed: int = 0, language: str = "eng", samplerate: int = SAMPLERATE_HZ,
                   regions: tuple[PlannedRegion, ...] | None = None) -> Recording:
    """Write an MP3 of ``duration_s`` seconds to ``path`` and tag it with ``text``."""
    if not 1 <= speakers <= len(SPEAKER_PITCHES_HZ):
        raise ValueError(f"speakers must be between 1 and {len(SPEAKER_PITCHES_HZ)}")
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    regions = plan_regions(duration_s, speakers, seed) if regions is None else regions
    total = int(round(duration_s * samplerate))
    block = samplerate * 10
    with soundfile.SoundFile(path, "w", samplerate=samplerate, channels=1,
                             format="MP3", subtype="MPEG_LAYER_III") as out:
        for first in range(0, total, block):
            out.write(_render(first, min(block, total - first), samplerate, regions))
    if text is not None:
        tag_text(path, text, language=language)
    return Recording(path, round(total / samplerate, 3), text, regions)


def tag_text(path: str, text: str, *, language: str = "eng") -> None:
    """Put ``text`` in the file's ID3v2 USLT frame, where the sandbox reads the transcript."""
    try:
        tags = ID3(path)
    except ID3NoHeaderError:
        tags = ID3()
    tags.delall("USLT")
    tags.add(USLT(encoding=3, lang=language, desc="", text=text))
    tags.save(path)


def _render(first: int, count: int, samplerate: int, regions: tuple[PlannedRegion, ...]) -> np.ndarray:
    t = (first + np.arange(count)) / samplerate
    out = np.zeros(count, dtype=np.float32)
    start_s, end_s = first / samplerate, (first + count) / samplerate
    for region in regions:
        if region.end_s <= start_s or region.start_s >= end_s:
            continue
        mask = (t >= region.start_s) & (t < region.end_s)
        tt = t[mask]
        f0 = SPEAKER_PITCHES_HZ[region.speaker]
        voice = sum((0.6 / h) * np.sin(2 * np.pi * h * f0 * tt) for h in (1, 2, 3))
        # Syllables: the level dips but never to silence, so the VAD sees one region.
        envelope = 0.55 + 0.45 * np.abs(np.sin(np.pi * SYLLABLE_HZ * (tt - region.start_s)))
        ramp = np.clip(np.minimum(tt - region.start_s, region.end_s - tt) / 0.02, 0.0, 1.0)
        out[mask] = (0.35 * voice * envelope * ramp).astype(np.float32)
    return out
