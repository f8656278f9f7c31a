"""Make a recording uploadable: Plaud's upload API reportedly takes only mp3 and opus.

- mp3 and opus pass through untouched.
- Whatever libsndfile decodes (WAV, FLAC, Ogg Vorbis, AIFF, …) is transcoded in-process to
  mono MP3 with LAME (``lameenc``), blockwise: memory does not grow with the recording.
- Anything else (M4A/AAC, WMA, …) is transcoded by ffmpeg when it is installed; otherwise it
  fails with UnsupportedAudio naming the fix.

The format is recognised from the file's first bytes, not its name.

The audio libraries load on first use, not on import: every worker process imports this module
(through the client), and numpy, libsndfile and LAME cost tens of MiB that only a process that
transcodes needs. An MP3's duration is read from its frame headers here (``mp3_frames``); mutagen,
which reads other formats' durations, loads only when one of those, or an MP3 those headers do
not describe, comes.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from . import mp3_frames
from .errors import SourceError, UnsupportedAudio

log = logging.getLogger("plaud.transcode")

UPLOADABLE = ("mp3", "opus")
BLOCK_FRAMES = 65536
FFMPEG_TIMEOUT_S = 3600
LAME_QUALITY = 5  # LAME's 2 (best) .. 7 (fastest); 5 is its default trade-off


@dataclass(frozen=True)
class Transcoded:
    path: str
    filetype: str  # always "mp3"
    original_bytes: int
    bytes: int
    via: str  # "lame" or "ffmpeg"

    @property
    def bytes_saved(self) -> int:
        return self.original_bytes - self.bytes


def sniff(head: bytes) -> str | None:
    """The audio container from a file's first bytes (64 are enough), or None."""
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head.startswith(b"OggS"):
        return "opus" if b"OpusHead" in head[:64] else "ogg"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head.startswith(b"\x30\x26\xb2\x75"):
        return "wma"
    return None


def probe_duration_s(path: str, kind: str | None = None) -> float | None:
    """The audio's duration from its headers (cheap: no decoding), or None when unknown.

    ``kind`` (what ``sniff`` found) goes straight to that format's reader; ``mutagen.File`` would
    import and try every format mutagen knows, several times the work. Should that reader fail,
    every format is tried as before.
    """
    if kind == "mp3":
        length = mp3_frames.duration_s(path)
        if length:
            return length
    import mutagen

    reader = _duration_reader(kind)
    if reader is not None:
        try:
            length = getattr(getattr(reader(path), "info", None), "length", None)
        except (mutagen.MutagenError, OSError, ValueError):
            length = None
        if length:
            return float(length)
    try:
        media = mutagen.File(path)
    except (mutagen.MutagenError, OSError, ValueError):
        return None
    length = getattr(getattr(media, "info", None), "length", None)
    return float(length) if length else None


def _duration_reader(kind: str | None) -> Any:
    if kind == "mp3":
        from mutagen.mp3 import MP3

        return MP3
    if kind == "opus":
        from mutagen.oggopus import OggOpus

        return OggOpus
    return None


def sniff_file(path: str) -> str | None:
    with open(path, "rb") as handle:
        return sniff(handle.read(64))


def to_mp3(source_path: str, target_path: str, *, bitrate_kbps: int, ffmpeg_path: str = "ffmpeg",
           detected: str | None = None) -> Transcoded:
    """Transcode ``source_path`` to a mono MP3 at ``target_path``."""
    original = os.path.getsize(source_path)
    try:
        _with_lame(source_path, target_path, bitrate_kbps)
        via = "lame"
    except RuntimeError:  # libsndfile cannot decode it (LibsndfileError), or LAME refused its sample rate
        ffmpeg = shutil.which(ffmpeg_path)
        if ffmpeg is None:
            kind = detected or "this format"
            raise UnsupportedAudio(
                f"{kind} audio cannot be transcoded to MP3 here: install ffmpeg (Debian: apt-get install ffmpeg; "
                f"or point PLAUD_FFMPEG at it), or send MP3/Opus") from None
        _with_ffmpeg(ffmpeg, source_path, target_path, bitrate_kbps)
        via = "ffmpeg"
    result = Transcoded(target_path, "mp3", original, os.path.getsize(target_path), via)
    log.info("transcoded %s to MP3 at %d kbps with %s: %d -> %d bytes (%d saved)", detected or "audio",
             bitrate_kbps, via, original, result.bytes, result.bytes_saved)
    return result


def _with_lame(source_path: str, target_path: str, bitrate_kbps: int) -> None:
    import lameenc
    import numpy as np
    import soundfile

    with soundfile.SoundFile(source_path) as audio:
        if audio.frames == 0:
            raise SourceError("the recording holds no audio samples")
        encoder = lameenc.Encoder()
        encoder.set_bit_rate(bitrate_kbps)
        encoder.set_in_sample_rate(audio.samplerate)
        encoder.set_channels(1)
        encoder.set_quality(LAME_QUALITY)
        with open(target_path, "wb") as out:
            for block in audio.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
                mono = np.clip(block.mean(axis=1), -1.0, 1.0)
                out.write(encoder.encode((mono * 32767.0).astype("<i2").tobytes()))
            out.write(encoder.flush())


def _with_ffmpeg(ffmpeg: str, source_path: str, target_path: str, bitrate_kbps: int) -> None:
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", source_path, "-vn", "-ac", "1",
           "-codec:a", "libmp3lame", "-b:a", f"{bitrate_kbps}k", "-f", "mp3", target_path]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UnsupportedAudio(f"ffmpeg did not finish transcoding within {FFMPEG_TIMEOUT_S} s") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise UnsupportedAudio(f"ffmpeg could not transcode the recording: {reason}")
