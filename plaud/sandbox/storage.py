"""S3-like storage routes behind the presigned URLs: part PUT and file GET.

Part bodies stream straight to disk (``stream_request_body``), hashed as they arrive, so a
part costs a few buffers of memory however large the file. A part is written to a temp name and
renamed when whole: a dropped or repeated PUT never leaves a torn part behind.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import IO, cast

import tornado.web
from tornado.http1connection import HTTP1Connection

from .base import ApiError, SandboxContext, XmlHandler
from .media import remove_quietly
from .signing import SignatureError
from .state import Upload

DOWNLOAD_BLOCK_BYTES = 256 * 1024


class PresignedHandler(XmlHandler):
    def check_signature(self) -> None:
        query = {k: self.get_query_argument(k) for k in self.request.query_arguments}
        try:
            self.ctx.signer.verify_presigned(self.request.path, query)
        except SignatureError as exc:
            raise ApiError(403, exc.code, exc.message) from None


@tornado.web.stream_request_body
class PartUploadHandler(PresignedHandler):
    endpoint = "part_upload"

    def initialize(self, ctx: SandboxContext) -> None:
        super().initialize(ctx)
        self.upload: Upload | None = None
        self.part_number = 0
        self.tmp_path = ""
        self.out: IO[bytes] | None = None
        self.digest = hashlib.md5()
        self.received = 0
        self.too_large = False
        self.counted_in_flight = False
        self.rejection: ApiError | None = None

    async def prepare(self) -> None:
        # A rejection is answered after the body has been drained: closing mid-body would show the
        # client a broken pipe instead of the 403 it must act on (re-issue the URL).
        # Tornado's HTTPServer hands handlers an HTTP1Connection; its annotation is the abstract base.
        cast(HTTP1Connection, self.request.connection).set_max_body_size(self.settings_.max_file_size_bytes)
        if self.request.method == "PUT":  # in flight from arrival: injected latency is network time
            self.state.stats.part_upload_started()
            self.counted_in_flight = True
        try:
            await super().prepare()
            self._accept()
        except ApiError as exc:
            self.rejection = exc

    def _accept(self) -> None:
        self.check_signature()
        upload_id, part = self.path_args
        self.upload = self.state.uploads.get(upload_id)
        if self.upload is None:
            raise ApiError(404, "NoSuchUpload", "The specified upload does not exist. The upload ID may be "
                                                "invalid, or the upload may have been completed or aborted.")
        self.part_number = int(part)
        if not 1 <= self.part_number <= self.upload.part_count:
            raise ApiError(400, "InvalidArgument", f"Part number must be between 1 and {self.upload.part_count}")
        length = self.request.headers.get("Content-Length")
        if length is not None and int(length) > self.upload.chunk_size:
            raise ApiError(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
        self.tmp_path = f"{self.state.part_path(upload_id, self.part_number)}.{secrets.token_hex(4)}.tmp"
        self.out = open(self.tmp_path, "wb")

    def data_received(self, chunk: bytes) -> None:
        if self.out is None or self.too_large:
            return
        self.received += len(chunk)
        if self.upload is not None and self.received > self.upload.chunk_size:
            self.too_large = True
            return
        self.digest.update(chunk)
        self.out.write(chunk)

    def put(self, upload_id: str, part: str) -> None:
        if self.rejection is not None:
            raise self.rejection
        assert self.out is not None and self.upload is not None
        self.out.close()
        if self.too_large:
            raise ApiError(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
        if self.state.uploads.get(upload_id) is not self.upload:
            raise ApiError(404, "NoSuchUpload", "The upload was completed or aborted while this part was sent")
        os.replace(self.tmp_path, self.state.part_path(upload_id, self.part_number))
        md5_hex = self.digest.hexdigest()
        self.state.record_part(self.upload, self.part_number, self.received, md5_hex)
        self.set_header("ETag", f'"{md5_hex}"')
        self.finish()

    def on_connection_close(self) -> None:
        self._release()
        super().on_connection_close()

    def on_finish(self) -> None:
        self._release()
        super().on_finish()

    def _release(self) -> None:
        if self.out is not None:
            self.out.close()
        if self.tmp_path:
            remove_quietly(self.tmp_path)  # no-op once renamed into place
        if self.counted_in_flight:
            self.counted_in_flight = False
            self.state.stats.part_upload_ended()


class FileDownloadHandler(PresignedHandler):
    endpoint = "file_download"

    async def get(self, file_id: str, extension: str) -> None:
        self.check_signature()
        stored = self.state.files.get(file_id)
        if stored is None or stored.filetype != extension:
            raise ApiError(404, "NoSuchKey", "The specified key does not exist.")
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(stored.size))
        self.set_header("ETag", f'"{stored.md5_hex}"')
        with open(stored.path, "rb") as handle:
            while block := handle.read(DOWNLOAD_BLOCK_BYTES):
                self.write(block)
                await self.flush()
        self.finish()
