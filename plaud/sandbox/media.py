"""Blocking file work and the background preparation of a submitted transcription.

A submitted ``file_url`` is resolved the way Plaud would: downloaded (or, for the sandbox's own
DownloadUrl, read from its storage after checking the signature), then analysed off the event
loop. Whatever goes wrong becomes the task's FAILURE message, worded for a person.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import time
from typing import TYPE_CHECKING

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .audio import Analysis, UndecodableAudio, analyse
from .signing import SignatureError

if TYPE_CHECKING:
    from .base import SandboxContext
    from .state import Transcription

log = logging.getLogger("plaud.sandbox")

COPY_BLOCK_BYTES = 1024 * 1024
FETCH_TIMEOUT_S = 120.0
ANALYSIS_CACHE_ENTRIES = 512


class SourceUnavailable(Exception):
    """Raised when a submitted file_url cannot be read."""


def merge_parts(part_paths: list[str], target: str) -> tuple[int, str]:
    """Concatenate parts into ``target`` through a bounded buffer; returns size and MD5."""
    digest = hashlib.md5()
    size = 0
    tmp = f"{target}.partial"
    with open(tmp, "wb") as out:
        for path in part_paths:
            with open(path, "rb") as part:
                while block := part.read(COPY_BLOCK_BYTES):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
    os.replace(tmp, target)
    return size, digest.hexdigest()


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


async def prepare_transcription(ctx: SandboxContext, tx: Transcription,
                                own: tuple[str, dict[str, str]] | None) -> None:
    temp_path = None
    try:
        if own is not None:
            path, md5_hex = _own_file(ctx, *own)
        else:
            temp_path, md5_hex = await _download(tx.file_url, ctx.settings.max_file_size_bytes)
            path = temp_path
        ctx.state.file_identified(tx, md5_hex)
        analysis = ctx.state.analyses.get(md5_hex)
        if analysis is None:
            # One decode per file even when a batch submits it many times at once.
            pending = ctx.state.analyses_pending.get(md5_hex)
            if pending is None:
                pending = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(ctx.executor, analyse,
                                                                                           path))
                ctx.state.analyses_pending[md5_hex] = pending
                pending.add_done_callback(lambda _: ctx.state.analyses_pending.pop(md5_hex, None))
            analysis = await asyncio.shield(pending)
            _remember(ctx.state.analyses, md5_hex, analysis)
        tx.analysis = analysis
        tx.analyzed_at = time.time()
    except SourceUnavailable as exc:
        tx.error = f"file_url could not be read: {exc}"
    except UndecodableAudio as exc:
        tx.error = f"audio could not be decoded: {exc}"
    except Exception:  # a sandbox bug must still end the task, not leave it PROGRESS forever
        log.exception("preparing transcription %s failed", tx.transcription_id)
        tx.error = "internal sandbox error while preparing the audio"
    finally:
        if temp_path:
            remove_quietly(temp_path)


def _own_file(ctx: SandboxContext, path: str, query: dict[str, str]) -> tuple[str, str]:
    try:
        ctx.signer.verify_presigned(path, query)
    except SignatureError as exc:
        raise SourceUnavailable(f"storage answered 403 {exc.code}: {exc.message}") from None
    file_id = os.path.basename(path).rsplit(".", 1)[0]
    stored = ctx.state.files.get(file_id)
    if stored is None:
        raise SourceUnavailable("storage answered 404 NoSuchKey")
    return stored.path, stored.md5_hex


async def _download(url: str, max_bytes: int) -> tuple[str, str]:
    digest = hashlib.md5()
    handle = tempfile.NamedTemporaryFile(prefix="sandbox-fetch-", delete=False)
    received = 0

    def on_chunk(chunk: bytes) -> None:
        nonlocal received
        received += len(chunk)
        if received > max_bytes:
            raise SourceUnavailable(f"the file is larger than {max_bytes} bytes")
        digest.update(chunk)
        handle.write(chunk)

    try:
        request = HTTPRequest(url, streaming_callback=on_chunk, request_timeout=FETCH_TIMEOUT_S,
                              follow_redirects=True)
        await AsyncHTTPClient().fetch(request)
    except Exception as exc:
        handle.close()
        remove_quietly(handle.name)
        if isinstance(exc, SourceUnavailable):
            raise
        if isinstance(exc, HTTPClientError):
            raise SourceUnavailable(f"the server answered HTTP {exc.code}") from None
        raise SourceUnavailable(f"{type(exc).__name__}: {exc}") from None
    handle.close()
    return handle.name, digest.hexdigest()


def _remember(cache: dict[str, Analysis], key: str, value: Analysis) -> None:
    if len(cache) >= ANALYSIS_CACHE_ENTRIES:
        cache.pop(next(iter(cache)))
    cache[key] = value
