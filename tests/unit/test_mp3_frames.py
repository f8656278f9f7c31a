"""An MP3's duration from its frame headers agrees with mutagen's, and needs no mutagen."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile

from plaud import mp3_frames


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


def lame_cbr(path, seconds: float, rate: int, channels: int, kbps: int) -> None:
    """Raw LAME frames: no Xing/Info header, so the length comes from the bitrate."""
    import lameenc

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(kbps)
    encoder.set_in_sample_rate(rate)
    encoder.set_channels(channels)
    pcm = (tone(seconds, rate, channels) * 32767).astype(np.int16).tobytes()
    path.write_bytes(encoder.encode(pcm) + encoder.flush())


def mutagen_length(path) -> float:
    from mutagen.mp3 import MP3

    return MP3(str(path)).info.length


def written(tmp_path, name: str, seconds: float, rate: int, channels: int = 1):
    """libsndfile's MP3 (LAME with a Xing/Info header)."""
    path = tmp_path / name
    soundfile.write(str(path), tone(seconds, rate, channels), rate, format="MP3", subtype="MPEG_LAYER_III")
    return path


@pytest.mark.parametrize(("seconds", "rate", "channels"), [
    (3.0, 44100, 1), (7.5, 48000, 2), (2.0, 16000, 1), (5.0, 22050, 2), (4.0, 8000, 1), (61.0, 32000, 1)])
def test_a_file_with_a_xing_header_reads_as_mutagen_reads_it(tmp_path, seconds, rate, channels):
    path = written(tmp_path, "x.mp3", seconds, rate, channels)
    assert mp3_frames.duration_s(str(path)) == pytest.approx(mutagen_length(path), abs=1e-9)  # the same formula
    assert mp3_frames.duration_s(str(path)) == pytest.approx(seconds, abs=0.1)


@pytest.mark.parametrize(("seconds", "rate", "channels", "kbps"), [
    (3.0, 44100, 1, 64), (6.0, 48000, 2, 128), (4.0, 16000, 1, 32), (9.0, 8000, 1, 16)])
def test_a_constant_bitrate_stream_without_a_header_reads_as_mutagen_reads_it(tmp_path, seconds, rate, channels,
                                                                              kbps):
    path = tmp_path / "cbr.mp3"
    lame_cbr(path, seconds, rate, channels, kbps)
    assert mp3_frames.duration_s(str(path)) == pytest.approx(mutagen_length(path), abs=1e-9)
    assert mp3_frames.duration_s(str(path)) == pytest.approx(seconds, abs=0.15)


def test_tags_before_and_after_and_junk_before_the_first_frame_are_stepped_over(tmp_path):
    from plaud.sandbox.testaudio import tag_text

    path = tmp_path / "cbr.mp3"
    lame_cbr(path, 5.0, 44100, 1, 64)
    tag_text(str(path), "a transcript long enough to make the tag a few hundred bytes " * 20)  # ID3v2 in front
    audio = path.read_bytes()
    # Junk holding a false sync between the tag and the first frame, and an ID3v1 tag at the end.
    tag_size = 10 + int.from_bytes(bytes(b & 0x7F for b in audio[6:10]), "big")  # synchsafe, 7 bits a byte
    id3v1 = b"TAG" + b"\0" * 125
    path.write_bytes(audio[:tag_size] + b"\xff\xfb\x00junk" * 3 + audio[tag_size:] + id3v1)
    assert mp3_frames.duration_s(str(path)) == pytest.approx(5.0, abs=0.15)
    assert mp3_frames.duration_s(str(path)) == pytest.approx(mutagen_length(path), rel=0.01, abs=0.05)


def test_what_is_not_an_mp3_has_no_duration(tmp_path):
    for name, data in (("empty", b""), ("zeros", b"\0" * 5000), ("id3-only", b"ID3\x04\0\0\0\0\0\x10" + b"\0" * 16),
                       ("text", b"hello world\n" * 100), ("bad-id3-size", b"ID3\x04\0\0\xff\xff\xff\xff"),
                       ("only-tags", b"ID3\x04\0\0\0\0\0\0" * 100_000)):
        (tmp_path / name).write_bytes(data)
        assert mp3_frames.duration_s(str(tmp_path / name)) is None, name
    assert mp3_frames.duration_s(str(tmp_path / "missing.mp3")) is None


def test_probing_an_mp3_loads_no_mutagen(tmp_path):
    path = written(tmp_path, "x.mp3", 2.0, 16000)
    probe = (f"import sys\nfrom plaud.transcode import probe_duration_s\n"
             f"print(probe_duration_s({str(path)!r}, 'mp3'), 'mutagen' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    length, loaded = done.stdout.split()
    assert float(length) == pytest.approx(2.0, abs=0.1) and loaded == "False"
