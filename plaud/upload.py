"""Streaming, parallel, resumable multipart upload to Plaud's presigned URLs.

One reader walks the source from its first byte, computing the whole file's MD5 in that same
pass, and hands each part to a pool of at most ``parallel_parts`` PUTs; it waits for a free slot
before reading the next part, so memory stays near ``ChunkSize × parallel_parts`` whatever the
file size. Each finished part is checkpointed (``on_checkpoint``) with its ETag: given that
progress back, a later run re-reads finished parts only to hash them and sends just the rest.

Plaud documents no way to re-sign the URLs of an upload in progress, so when a part URL is
refused (403: expired) or the upload id is gone (404), the upload starts over under a new one,
at most ``max_restarts`` times.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import retry
from .errors import AuthError, BadRequest, IntegrityError, NotFound, SourceError, UploadRestartNeeded
from .sources import Source
from .transcode import Transcoded
from .transport import Transport

log = logging.getLogger("plaud.upload")

MD5_MISMATCH_CODES = ("FILE_MD5_NOT_MATCH", "FILE_MD5_MISMATCH")
RESTART_CODES = MD5_MISMATCH_CODES + ("FILE_UPLOAD_FAILED",)


@dataclass
class UploadProgress:
    """What resumes an upload: ids, the part URLs (secret: seal them at rest) and finished ETags."""

    file_id: str
    upload_id: str
    chunk_size: int
    filesize: int
    filetype: str
    part_urls: dict[int, str]
    etags: dict[int, str] = field(default_factory=dict)

    @property
    def part_count(self) -> int:
        return len(self.part_urls)

    def part_size(self, number: int) -> int:
        return min(self.chunk_size, self.filesize - (number - 1) * self.chunk_size)

    @property
    def bytes_done(self) -> int:
        return sum(self.part_size(n) for n in self.etags)

    def fits(self, source: Source) -> bool:
        return (self.filesize, self.filetype) == (source.size, source.filetype)

    def to_dict(self) -> dict[str, Any]:
        return {"file_id": self.file_id, "upload_id": self.upload_id, "chunk_size": self.chunk_size,
                "filesize": self.filesize, "filetype": self.filetype,
                "part_urls": {str(n): u for n, u in self.part_urls.items()},
                "etags": {str(n): e for n, e in self.etags.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UploadProgress:
        return cls(data["file_id"], data["upload_id"], int(data["chunk_size"]), int(data["filesize"]),
                   data["filetype"], {int(n): u for n, u in data["part_urls"].items()},
                   {int(n): e for n, e in data.get("etags", {}).items()})


@dataclass(frozen=True)
class UploadResult:
    file_id: str
    download_url: str
    file_md5: str
    filesize: int
    filetype: str
    parts_sent: int
    parts_reused: int
    restarts: int
    transcoded: Transcoded | None = None
    duration_s: float | None = None


class UploadApi(Protocol):
    def presign(self, user_id: str, filesize: int, filetype: str) -> dict[str, Any]: ...

    def complete(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]: ...


Checkpoint = Callable[[UploadProgress], None]
ProgressCallback = Callable[[int, int], None]


class InThisThread:
    """An executor that runs what it is given at once, in the caller's thread."""

    def __enter__(self) -> InThisThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def submit(self, fn: Callable[..., None], *args: Any) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            fn(*args)
            future.set_result(None)
        except Exception as exc:  # kept for the caller to raise, as a pool's future would
            future.set_exception(exc)
        return future


class Uploader:
    def __init__(self, api: UploadApi, transport: Transport, *, parallel_parts: int = 4,
                 part_timeout_s: float = 120.0, policy: retry.RetryPolicy = retry.RetryPolicy(),
                 max_restarts: int = 2) -> None:
        self.api = api
        self.transport = transport
        self.parallel_parts = parallel_parts
        self.part_timeout_s = part_timeout_s
        self.policy = policy
        self.max_restarts = max_restarts

    def upload(self, source: Source, *, user_id: str, progress: UploadProgress | None = None,
               on_progress: ProgressCallback | None = None, on_checkpoint: Checkpoint | None = None) -> UploadResult:
        restarts = 0
        while True:
            if progress is None or not progress.fits(source):
                progress = self._start(source, user_id)
                if on_checkpoint:
                    on_checkpoint(progress)
            reused = len(progress.etags)
            try:
                md5_hex = self._send_parts(source, progress, on_progress, on_checkpoint)
                result = self._complete(progress, user_id, md5_hex)
            except UploadRestartNeeded as exc:
                restarts += 1
                if restarts > self.max_restarts:
                    if exc.code in MD5_MISMATCH_CODES:
                        raise IntegrityError(f"Plaud's MD5 of the upload differs from ours after "
                                             f"{restarts} attempts: the source may be changing while read",
                                             code=exc.code, path=exc.path) from None
                    raise
                log.warning("upload %s must start over (%s); restart %d/%d", progress.upload_id, exc, restarts,
                            self.max_restarts)
                progress = None
                continue
            return UploadResult(result["FileId"], result["DownloadUrl"], md5_hex, source.size, source.filetype,
                                progress.part_count - reused, reused, restarts, source.transcoded,
                                source.duration_s)

    def _start(self, source: Source, user_id: str) -> UploadProgress:
        body = self.api.presign(user_id, source.size, source.filetype)
        try:
            urls = {int(p["PartNumber"]): str(p["PresignedUrl"]) for p in body["Parts"]}
            progress = UploadProgress(str(body["FileId"]), str(body["UploadId"]), int(body["ChunkSize"]),
                                      source.size, source.filetype, urls)
        except (KeyError, TypeError, ValueError):
            raise BadRequest("generate-presigned-urls answered without FileId, UploadId, ChunkSize or Parts") from None
        expected = -(-source.size // progress.chunk_size)
        if sorted(urls) != list(range(1, expected + 1)):
            raise BadRequest(f"generate-presigned-urls gave parts {sorted(urls)[:5]}…, expected 1..{expected}")
        return progress

    def _send_parts(self, source: Source, progress: UploadProgress, on_progress: ProgressCallback | None,
                    on_checkpoint: Checkpoint | None) -> str:
        digest = hashlib.md5()
        slots = threading.BoundedSemaphore(self.parallel_parts)
        lock = threading.Lock()
        failed = threading.Event()
        futures: list[concurrent.futures.Future[None]] = []
        if on_progress:
            on_progress(progress.bytes_done, progress.filesize)

        def send(number: int, data: bytes) -> None:
            try:
                etag = self._put_part(progress.part_urls[number], number, data)
                with lock:
                    progress.etags[number] = etag
                    if on_checkpoint:
                        on_checkpoint(progress)
                    if on_progress:
                        on_progress(progress.bytes_done, progress.filesize)
            except BaseException:
                failed.set()
                raise
            finally:
                slots.release()

        # A single part to send (every short recording) goes from this thread: starting a pool's
        # thread for it costs more CPU (about 0.2 ms) than the request itself.
        parallel = progress.part_count - len(progress.etags) > 1 and self.parallel_parts > 1
        runner = (concurrent.futures.ThreadPoolExecutor(self.parallel_parts, thread_name_prefix="plaud-part")
                  if parallel else InThisThread())
        with source.open() as stream, runner as pool:
            for number in range(1, progress.part_count + 1):
                if number not in progress.etags:
                    slots.acquire()
                    if failed.is_set():
                        slots.release()
                        break
                data = _read_exactly(stream, progress.part_size(number))
                digest.update(data)
                if number not in progress.etags:
                    futures.append(pool.submit(send, number, data))
                del data
        errors = [exc for f in futures if (exc := f.exception()) is not None]
        if errors:
            # A restart outranks other failures: it is the one that can still succeed.
            raise next((e for e in errors if isinstance(e, UploadRestartNeeded)), errors[0])
        return digest.hexdigest()

    def _put_part(self, url: str, number: int, data: bytes) -> str:
        def put() -> str:
            response = self.transport.request("PUT", url, data=data, read_timeout_s=self.part_timeout_s)
            etag = response.headers.get("ETag", "").strip().strip('"')
            if not etag:
                raise BadRequest(f"part {number} was stored without an ETag")
            return etag

        try:
            return retry.call(put, self.policy, what=f"PUT part {number}")
        except (AuthError, NotFound) as exc:
            raise UploadRestartNeeded(f"part {number} was refused ({exc.status} {exc.code or ''}): the presigned "
                                      f"URL expired or the upload is gone", status=exc.status, code=exc.code,
                                      path=exc.path) from None

    def _complete(self, progress: UploadProgress, user_id: str, md5_hex: str) -> dict[str, Any]:
        body = {"file_id": progress.file_id, "upload_id": progress.upload_id, "filetype": progress.filetype,
                "part_list": [{"PartNumber": n, "ETag": progress.etags[n]} for n in sorted(progress.etags)],
                "file_md5": md5_hex}
        try:
            result = retry.call(lambda: self.api.complete(user_id, body), self.policy, what="complete-upload")
        except NotFound as exc:
            # Gone: completed by an attempt whose answer we lost, or expired. Either way, start over.
            raise UploadRestartNeeded("the upload id is no longer open", status=exc.status, code=exc.code,
                                      path=exc.path) from None
        except BadRequest as exc:
            if exc.code in RESTART_CODES:
                raise UploadRestartNeeded(f"complete-upload refused the parts: {exc.message}", status=exc.status,
                                          code=exc.code, path=exc.path) from None
            raise
        theirs = str(result.get("FileMd5", "")).lower()
        if theirs and theirs != md5_hex:
            raise UploadRestartNeeded(f"Plaud's MD5 {theirs} differs from ours {md5_hex}", code="FILE_MD5_NOT_MATCH")
        if not result.get("DownloadUrl"):
            raise BadRequest("complete-upload answered without a DownloadUrl")
        return result


def _read_exactly(stream: Any, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining > 0:
        block = stream.read(remaining)
        if not block:
            raise SourceError(f"the recording ended {remaining} bytes early: it changed while being read")
        chunks.append(block)
        remaining -= len(block)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
