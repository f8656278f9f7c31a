"""An MP3's duration from its frame headers: no decoding, and no mutagen for a well-formed file.

mutagen reads it too, but importing ``mutagen.mp3`` loads its whole ID3 machinery (about 150
frame classes): 4 MiB of PSS in every process that probes a recording, for three numbers. What
this reads, in the order a player would:

- an ID3v2 tag at the start is skipped (its size is in its header; a footer adds 10 bytes);
- the first frame header that is followed by another where its length says: a lone sync pattern
  inside junk or a tag is not trusted;
- in that first frame, a Xing/Info header (LAME writes one, "Info" for constant bitrate) or a
  VBRI header gives the number of frames, less the encoder's delay and padding that LAME's tag
  counts, as mutagen reads them; without one the stream is constant bitrate, and its bytes (an
  ID3v1 tag at the end left out) over the bitrate give the duration.

Anything else (free-format bitrate, no second frame where the first says) is "unknown" (None):
the caller asks mutagen then.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

SCAN_BYTES = 64 * 1024  # how far past the tags to look for the first frame
ID3V1_BYTES = 128
MAX_ID3V2_TAGS = 8  # tags in front of the audio that are stepped over; a file of nothing but tags ends here

# Bitrates in kbit/s by bitrate index, for (MPEG-1, layer) and (MPEG-2/2.5, layer).
_BITRATES_KBPS = {
    (1, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (1, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (1, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
# Sample rates by the header's version bits: 0 is MPEG-2.5, 2 MPEG-2, 3 MPEG-1 (1 is reserved).
_SAMPLE_RATES = {0: (11025, 12000, 8000), 2: (22050, 24000, 16000), 3: (44100, 48000, 32000)}


class FrameHeader:
    """One MPEG audio frame header's fields that the duration needs."""

    __slots__ = ("mpeg1", "layer", "bitrate_bps", "sample_rate", "mono", "length")

    def __init__(self, word: int) -> None:
        version_bits = (word >> 19) & 0b11
        layer_bits = (word >> 17) & 0b11
        bitrate_index = (word >> 12) & 0b1111
        rate_index = (word >> 10) & 0b11
        if (word >> 21) != 0x7FF or version_bits == 1 or layer_bits == 0 or bitrate_index in (0, 15) \
                or rate_index == 3:
            raise ValueError("not a frame header")
        self.mpeg1 = version_bits == 3
        self.layer = 4 - layer_bits
        self.bitrate_bps = _BITRATES_KBPS[(1 if self.mpeg1 else 2, self.layer)][bitrate_index] * 1000
        self.sample_rate = _SAMPLE_RATES[version_bits][rate_index]
        self.mono = (word >> 6) & 0b11 == 0b11
        padding = (word >> 9) & 1
        if self.layer == 1:
            self.length = (12 * self.bitrate_bps // self.sample_rate + padding) * 4
        else:
            per_byte = 72 if (self.layer == 3 and not self.mpeg1) else 144
            self.length = per_byte * self.bitrate_bps // self.sample_rate + padding

    @property
    def samples(self) -> int:
        if self.layer == 1:
            return 384
        return 1152 if (self.layer == 2 or self.mpeg1) else 576

    @property
    def side_info_bytes(self) -> int:
        """Where a Xing/Info header starts, after the 4-byte frame header (layer III only)."""
        if self.mpeg1:
            return 17 if self.mono else 32
        return 9 if self.mono else 17


def duration_s(path: str) -> float | None:
    """The MP3's duration in seconds from its headers, or None when they do not say."""
    try:
        with open(path, "rb") as handle:
            return _duration(handle, os.fstat(handle.fileno()).st_size)
    except (OSError, ValueError):
        return None


def _duration(handle: BinaryIO, size: int) -> float | None:
    start = _audio_start(handle)
    handle.seek(start)
    data = handle.read(SCAN_BYTES)
    found = _first_frame(data)
    if found is None:
        return None
    offset, header = found
    samples = _samples_from_vbr_header(data, offset, header)
    if samples is not None:
        return samples / header.sample_rate if samples else None
    handle.seek(max(size - ID3V1_BYTES, 0))
    audio_end = size - ID3V1_BYTES if handle.read(3) == b"TAG" else size
    audio_bytes = audio_end - (start + offset)
    return audio_bytes * 8 / header.bitrate_bps if audio_bytes > 0 else None


def _audio_start(handle: BinaryIO) -> int:
    """Where the audio starts: after any ID3v2 tags at the front (a file may carry more than one)."""
    start = 0
    for _ in range(MAX_ID3V2_TAGS):
        handle.seek(start)
        head = handle.read(10)
        if len(head) < 10 or head[:3] != b"ID3":
            return start
        size_bytes = head[6:10]
        if any(b & 0x80 for b in size_bytes):
            raise ValueError("an ID3v2 size is synchsafe: no byte has its high bit set")
        size = (size_bytes[0] << 21) | (size_bytes[1] << 14) | (size_bytes[2] << 7) | size_bytes[3]
        start += 10 + size + (10 if head[5] & 0x10 else 0)
    return start


def _first_frame(data: bytes) -> tuple[int, FrameHeader] | None:
    """The first frame header in ``data`` that another follows where its length says."""
    offset = data.find(b"\xff")
    while 0 <= offset <= len(data) - 4:
        header = _header_at(data, offset)
        if header is not None:
            following = offset + header.length
            if following + 4 > len(data) or _header_at(data, following) is not None:
                return offset, header
        offset = data.find(b"\xff", offset + 1)
    return None


def _header_at(data: bytes, offset: int) -> FrameHeader | None:
    if offset + 4 > len(data):
        return None
    try:
        return FrameHeader(struct.unpack_from(">I", data, offset)[0])
    except ValueError:
        return None


def _samples_from_vbr_header(data: bytes, offset: int, header: FrameHeader) -> int | None:
    """The samples the stream holds, from a Xing/Info or VBRI header in the first frame; None if it
    has neither. LAME's tag in a Xing header says how many of them are its encoder's delay and
    padding, which are not part of the recording."""
    if header.layer != 3:
        return None
    xing = offset + 4 + header.side_info_bytes
    if data[xing:xing + 4] in (b"Xing", b"Info") and len(data) >= xing + 12:
        flags = struct.unpack_from(">I", data, xing + 4)[0]
        if not flags & 1:  # without its frame count a Xing header says nothing of the length: read as CBR
            return None
        samples = struct.unpack_from(">I", data, xing + 8)[0] * header.samples
        # The optional fields that follow: frames (read), bytes, table of contents, quality.
        lame = xing + 8 + sum(size for bit, size in ((1, 4), (2, 4), (4, 100), (8, 4)) if flags & bit)
        if data[lame:lame + 4] == b"LAME" and len(data) >= lame + 24 and data[lame + 9] >> 4 == 0:
            delays = int.from_bytes(data[lame + 21:lame + 24], "big")  # 12 bits of delay, 12 of padding
            samples = max(samples - (delays >> 12) - (delays & 0xFFF), 0)
        return samples
    vbri = offset + 4 + 32
    if data[vbri:vbri + 4] == b"VBRI" and len(data) >= vbri + 18:
        return struct.unpack_from(">I", data, vbri + 14)[0] * header.samples
    return None
