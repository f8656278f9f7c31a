"""Where a recording comes from: a local path, an open stream of known size, or an http(s) URL.

``prepare_source`` checks the input (missing, a directory, unreadable, empty, not audio, a URL
that fails, a scheme we do not fetch) and returns a ``Source`` the uploader can read from the
start as often as it needs (a restarted upload reads it again). MP3 and Opus go through as they
are; a URL with a Content-Length streams straight through; everything else is spooled to a temp
file and, if need be, transcoded.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlsplit

from .errors import AuthError, BadRequest, NotFound, SourceError, UnsupportedAudio
from .redact import url_without_query
from .transcode import UPLOADABLE, Transcoded, probe_duration_s, sniff, sniff_file, to_mp3
from .transport import Transport

SNIFF_BYTES = 64
SPOOL_BLOCK_BYTES = 1024 * 1024


@dataclass
class Source:
    """A readable recording: ``open()`` yields a binary stream positioned at its first byte."""

    description: str
    size: int
    filetype: str
    opener: Callable[[], Any]  # a context manager factory yielding a binary stream
    transcoded: Transcoded | None = None
    duration_s: float | None = None  # known when the recording is a local file; None when streamed
    temp_paths: list[str] = field(default_factory=list)

    def open(self) -> Any:
        return self.opener()

    def cleanup(self) -> None:
        for path in self.temp_paths:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        self.temp_paths.clear()


def prepare_source(source: str | os.PathLike[str] | IO[bytes], *, transport: Transport, bitrate_kbps: int,
                   ffmpeg_path: str = "ffmpeg", size: int | None = None, filetype: str | None = None,
                   workdir: str | None = None) -> Source:
    if hasattr(source, "read"):
        return _from_stream(source, size, filetype, bitrate_kbps, ffmpeg_path, workdir)  # type: ignore[arg-type]
    text = os.fspath(source)
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("http", "https"):
        return _from_url(text, transport, bitrate_kbps, ffmpeg_path, workdir)
    if scheme and len(scheme) > 1:  # one letter would be a Windows drive
        raise SourceError(f"unsupported URL scheme {scheme!r}: give a local path or an http(s) URL")
    return _from_path(text, bitrate_kbps, ffmpeg_path, workdir)


def _from_path(path: str, bitrate_kbps: int, ffmpeg_path: str, workdir: str | None) -> Source:
    if not os.path.exists(path):
        raise SourceError(f"no such file: {path}")
    if os.path.isdir(path):
        raise SourceError(f"{path} is a directory, not a recording")
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise SourceError(f"{path} cannot be read: {exc.strerror}") from None
    size = os.path.getsize(path)
    if size == 0:
        raise SourceError(f"{path} is empty")
    kind = _recognised(sniff(head), path)
    if kind in UPLOADABLE:
        return Source(path, size, kind, lambda: open(path, "rb"), duration_s=probe_duration_s(path, kind))
    return _transcoded(path, path, kind, bitrate_kbps, ffmpeg_path, workdir, temp_paths=[])


def _from_stream(stream: IO[bytes], size: int | None, filetype: str | None, bitrate_kbps: int, ffmpeg_path: str,
                 workdir: str | None) -> Source:
    seekable = getattr(stream, "seekable", lambda: False)()
    if size is None or size <= 0:
        raise SourceError("a stream source needs its size in bytes (size=...)")
    if seekable and filetype is None:
        start = stream.tell()
        filetype = sniff(stream.read(SNIFF_BYTES))
        stream.seek(start)
    if filetype in UPLOADABLE and seekable:
        start = stream.tell()

        @contextmanager
        def reopen() -> Iterator[IO[bytes]]:
            stream.seek(start)
            yield stream  # the caller owns the stream: we never close it

        return Source("stream", size, filetype, reopen)
    # Not re-readable, or needs transcoding: keep a copy we can read as often as needed.
    spooled = _spool(stream.read, workdir)
    return _after_spool(spooled, "stream", bitrate_kbps, ffmpeg_path, workdir)


def _from_url(url: str, transport: Transport, bitrate_kbps: int, ffmpeg_path: str, workdir: str | None) -> Source:
    shown = url_without_query(url)
    response = _get(transport, url, shown)
    length = response.headers.get("Content-Length")
    encoded = response.headers.get("Content-Encoding", "identity") not in ("", "identity")
    head = response.raw.read(SNIFF_BYTES, decode_content=True)
    if not head:
        response.close()
        raise SourceError(f"{shown} is empty")
    kind = sniff(head)
    if kind in UPLOADABLE and length and length.isdigit() and not encoded:
        first = {"response": response, "head": head}

        @contextmanager
        def stream_url() -> Iterator[_Prefixed]:
            # The first read reuses the response we already opened; a restart fetches again.
            if first:
                current, prefix = first.pop("response"), first.pop("head")
            else:
                current, prefix = _get(transport, url, shown), b""
            try:
                yield _Prefixed(prefix, current.raw)
            finally:
                current.close()

        return Source(shown, int(length), kind, stream_url)
    remaining = response.raw.read
    try:
        spooled = _spool(lambda n: remaining(n, decode_content=True), workdir, head)
    finally:
        response.close()
    return _after_spool(spooled, shown, bitrate_kbps, ffmpeg_path, workdir)


def _get(transport: Transport, url: str, shown: str) -> Any:
    try:
        return transport.request("GET", url, stream=True)
    except (NotFound, AuthError, BadRequest) as exc:
        raise SourceError(f"{shown} answered HTTP {exc.status}", status=exc.status) from None


def _after_spool(path: str, description: str, bitrate_kbps: int, ffmpeg_path: str, workdir: str | None) -> Source:
    size = os.path.getsize(path)
    if size == 0:
        os.remove(path)
        raise SourceError(f"{description} is empty")
    try:
        kind = _recognised(sniff_file(path), description)
    except UnsupportedAudio:
        os.remove(path)
        raise
    if kind in UPLOADABLE:
        return Source(description, size, kind, lambda: open(path, "rb"), duration_s=probe_duration_s(path, kind),
                      temp_paths=[path])
    return _transcoded(path, description, kind, bitrate_kbps, ffmpeg_path, workdir, temp_paths=[path])


def _transcoded(path: str, description: str, kind: str, bitrate_kbps: int, ffmpeg_path: str,
                workdir: str | None, *, temp_paths: list[str]) -> Source:
    fd, target = tempfile.mkstemp(prefix="plaud-transcoded-", suffix=".mp3", dir=workdir)
    os.close(fd)
    try:
        result = to_mp3(path, target, bitrate_kbps=bitrate_kbps, ffmpeg_path=ffmpeg_path, detected=kind)
    except Exception:
        for leftover in (target, *temp_paths):
            os.remove(leftover)
        raise
    for spooled in temp_paths:
        os.remove(spooled)  # the MP3 is all we read from now on
    return Source(description, result.bytes, "mp3", lambda: open(target, "rb"), transcoded=result,
                  duration_s=probe_duration_s(target, "mp3"), temp_paths=[target])


def _recognised(kind: str | None, description: str) -> str:
    if kind is None:
        raise UnsupportedAudio(f"{description} is not audio this service recognises (its first bytes match no "
                               f"audio format); send MP3, Opus, WAV, FLAC, Ogg, AIFF or M4A")
    return kind


def _spool(read: Callable[[int], bytes], workdir: str | None, head: bytes = b"") -> str:
    fd, path = tempfile.mkstemp(prefix="plaud-source-", dir=workdir)
    with os.fdopen(fd, "wb") as out:
        out.write(head)
        while block := read(SPOOL_BLOCK_BYTES):
            out.write(block)
    return path


class _Prefixed:
    """A read-only stream: ``prefix`` first, then ``rest``."""

    def __init__(self, prefix: bytes, rest: Any) -> None:
        self._prefix = prefix
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size < 0:
                data, self._prefix = self._prefix + self._rest.read(decode_content=True), b""
                return data
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            if len(data) < size:
                data += self._rest.read(size - len(data), decode_content=True)
            return data
        return self._rest.read(size if size >= 0 else None, decode_content=True)

