"""What the sandbox learns from an audio file: duration, speech regions, speakers and tag text.

The sandbox does no speech recognition. It decodes the audio (MP3, Opus, WAV, FLAC via the
libsndfile bundled with ``soundfile``), finds speech with a simple energy VAD, tells speakers
apart by the pitch of each speech region, and takes the transcript *text* from the file's tags:

- MP3: the ID3v2 ``USLT`` frame (unsynchronised lyrics/text transcription), its language code
  giving the transcript language;
- Ogg Opus / Vorbis: the ``LYRICS`` or ``TRANSCRIPT`` comment;
- M4A: the ``©lyr`` atom.

Formats libsndfile cannot decode but mutagen can read (M4A) still get a duration and tag text,
with one region spanning the whole file. Anything else is undecodable.

Decoding is blockwise, so a long recording costs memory in proportion to its number of
32 ms frames, never its sample count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mutagen
import numpy as np
import soundfile

FRAME_S = 0.032
SPEECH_THRESHOLD_DBFS = -40.0
MIN_SPEECH_S = 0.2
MIN_SILENCE_S = 0.3
PITCH_BAND_HZ = (60.0, 1000.0)
SAME_SPEAKER_RATIO = 1.15

# ISO 639-2 (ID3 USLT) to the BCP-47 primary tags Plaud reports.
_ISO639_2_TO_1 = {
    "eng": "en", "jpn": "ja", "zho": "zh", "chi": "zh", "deu": "de", "ger": "de", "fra": "fr",
    "fre": "fr", "spa": "es", "ita": "it", "por": "pt", "kor": "ko", "rus": "ru", "nld": "nl",
    "dut": "nl",
}


class UndecodableAudio(Exception):
    """Raised when a file is neither decodable audio nor a container mutagen can read."""


@dataclass(frozen=True)
class Region:
    start_s: float
    end_s: float
    speaker: int  # 0-based index of the speaker cluster


@dataclass(frozen=True)
class Analysis:
    duration_s: float
    regions: tuple[Region, ...]
    speaker_pitches_hz: tuple[float, ...] = field(default=())
    tag_text: str | None = None
    tag_language: str | None = None
    decoded: bool = True  # False: duration and tags only, the whole file is one region


def analyse(path: str) -> Analysis:
    """Analyse the audio at ``path``; raises UndecodableAudio with a reason a person can act on."""
    tag_text, tag_language, tag_duration = _read_tags(path)
    try:
        duration_s, regions, pitches = _decode_and_segment(path)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        if tag_duration is None:
            raise UndecodableAudio(f"the file is not audio the sandbox can decode ({_short(exc)})") from None
        region = Region(0.0, round(tag_duration, 3), 0)
        return Analysis(tag_duration, (region,), (), tag_text, tag_language, decoded=False)
    return Analysis(duration_s, regions, pitches, tag_text, tag_language)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _read_tags(path: str) -> tuple[str | None, str | None, float | None]:
    try:
        media = mutagen.File(path)
    except (mutagen.MutagenError, OSError, ValueError):
        return None, None, None
    if media is None:
        return None, None, None
    duration = getattr(media.info, "length", None) or None
    tags = media.tags
    if tags is None:
        return None, None, duration
    if hasattr(tags, "getall"):  # ID3
        for frame in tags.getall("USLT"):
            if str(frame.text).strip():
                return str(frame.text).strip(), _ISO639_2_TO_1.get(frame.lang.lower()), duration
        return None, None, duration
    for key in ("lyrics", "transcript", "LYRICS", "TRANSCRIPT", "\xa9lyr"):
        try:
            values = tags[key]
        except (KeyError, ValueError, TypeError):
            continue
        text = values[0] if isinstance(values, list) and values else values
        if isinstance(text, str) and text.strip():
            return text.strip(), None, duration
    return None, None, duration


def _decode_and_segment(path: str) -> tuple[float, tuple[Region, ...], tuple[float, ...]]:
    with soundfile.SoundFile(path) as audio:
        samplerate = audio.samplerate
        frame_len = max(int(samplerate * FRAME_S), 64)
        freqs = np.fft.rfftfreq(frame_len, 1.0 / samplerate)
        band = (freqs >= PITCH_BAND_HZ[0]) & (freqs <= PITCH_BAND_HZ[1])
        window = np.hanning(frame_len).astype(np.float32)
        levels_db: list[np.ndarray] = []
        peaks_hz: list[np.ndarray] = []
        total = 0
        for block in audio.blocks(blocksize=frame_len * 256, dtype="float32", always_2d=True):
            mono = block.mean(axis=1)
            total += len(mono)
            usable = len(mono) - len(mono) % frame_len
            if usable == 0:
                continue
            frames = mono[:usable].reshape(-1, frame_len)
            rms = np.sqrt(np.mean(frames * frames, axis=1) + 1e-12)
            levels_db.append(20.0 * np.log10(rms))
            spectrum = np.abs(np.fft.rfft(frames * window, axis=1))[:, band]
            peaks_hz.append(freqs[band][np.argmax(spectrum, axis=1)])
    if total == 0:
        raise ValueError("the file holds no audio samples")
    level = np.concatenate(levels_db) if levels_db else np.zeros(0)
    peak = np.concatenate(peaks_hz) if peaks_hz else np.zeros(0)
    raw = _speech_runs(level > SPEECH_THRESHOLD_DBFS)
    regions, pitches = _label_speakers(raw, peak)
    return round(total / samplerate, 3), regions, pitches


def _speech_runs(voiced: np.ndarray) -> list[tuple[int, int]]:
    """Frame-index runs of speech, with short gaps bridged and short blips dropped."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, v in enumerate(voiced):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(voiced)))
    merged: list[tuple[int, int]] = []
    for run in runs:
        if merged and (run[0] - merged[-1][1]) * FRAME_S < MIN_SILENCE_S:
            merged[-1] = (merged[-1][0], run[1])
        else:
            merged.append(run)
    return [r for r in merged if (r[1] - r[0]) * FRAME_S >= MIN_SPEECH_S]


def _label_speakers(runs: list[tuple[int, int]], peak_hz: np.ndarray) -> tuple[tuple[Region, ...], tuple[float, ...]]:
    """Cluster runs by median pitch; speakers are numbered in order of first appearance."""
    centres: list[float] = []
    regions: list[Region] = []
    for start, end in runs:
        pitch = float(np.median(peak_hz[start:end]))
        for index, centre in enumerate(centres):
            if max(pitch, centre) / max(min(pitch, centre), 1.0) <= SAME_SPEAKER_RATIO:
                speaker = index
                break
        else:
            centres.append(pitch)
            speaker = len(centres) - 1
        regions.append(Region(round(start * FRAME_S, 3), round(end * FRAME_S, 3), speaker))
    return tuple(regions), tuple(round(c, 1) for c in centres)
