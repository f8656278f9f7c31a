"""The partner API flow of docs/plaud-api.md ("The flow"), under ``/developer/api``."""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any, TypeGuard
from urllib.parse import parse_qsl, urlsplit

from . import media
from .base import ApiError, JsonHandler
from .state import StoredFile, Upload

USER_ID_LENGTH = (6, 120)
KNOWN_MODELS = frozenset({"plaud-fast-whisper", "plaud-omni-3", "azure-fast-transcribe", "plaud-transcribe-1"})
LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")


# -- auth ------------------------------------------------------------------------------------

class PartnerTokenHandler(JsonHandler):
    endpoint = "partner_token"

    def post(self) -> None:
        client_id = self.basic_client()
        self.limit(self.ctx.token_limiter, client_id, "partner-token")
        self.write_json(self._issue(client_id))

    def _issue(self, client_id: str) -> dict[str, Any]:
        s = self.settings_
        self.state.stats.partner_tokens_issued += 1
        return {
            "access_token": self.ctx.signer.issue_token("partner", s.partner_token_ttl_s, client_id=client_id,
                                                        sub=f"partner_{client_id}"),
            "refresh_token": self.ctx.signer.issue_token("refresh", s.refresh_token_ttl_s, client_id=client_id),
            "token_type": "bearer",
            "expires_in": s.partner_token_ttl_s,
        }


class RefreshTokenHandler(PartnerTokenHandler):
    endpoint = "partner_token_refresh"

    def post(self) -> None:
        client_id = self.basic_client()
        refresh_token = self.get_body_argument("refresh_token", default="").strip()
        if not refresh_token:
            raise ApiError(400, "PARAMS_INVALID", "the form field refresh_token is required")
        claims = self.verify_token(refresh_token, "refresh")
        if claims.get("client_id") != client_id:
            raise ApiError(401, "TOKEN_INVALID", "the refresh token belongs to another client")
        self.write_json(self._issue(client_id))


class UserTokenHandler(JsonHandler):
    endpoint = "user_token"

    def post(self) -> None:
        partner = self.bearer("partner")
        body = self.json_body()
        user_id = body.get("user_id")
        if not isinstance(user_id, str) or not USER_ID_LENGTH[0] <= len(user_id) <= USER_ID_LENGTH[1]:
            raise ApiError(400, "USER_ID_INVALID",
                           f"user_id must be a string of {USER_ID_LENGTH[0]} to {USER_ID_LENGTH[1]} characters")
        s = self.settings_
        expires_in = body.get("expires_in", s.user_token_default_ttl_s)
        if not _is_int(expires_in) or not 0 < expires_in <= s.user_token_max_ttl_s:
            raise ApiError(400, "PARAMS_INVALID", f"expires_in must be an integer of seconds, "
                                                  f"1 to {s.user_token_max_ttl_s}")
        token = self.ctx.signer.issue_token("user", expires_in, client_id=partner["client_id"], user_id=user_id,
                                            sub=f"client_user_{user_id}")
        self.state.stats.user_tokens_issued += 1
        self.write_json({"access_token": token, "token_type": "bearer", "expires_in": expires_in})


# -- file upload -----------------------------------------------------------------------------

class UploadHandler(JsonHandler):
    """What starting and completing an upload share: URLs on this server's own origin."""

    def origin(self) -> str:
        return f"{self.request.protocol}://{self.request.host}"


class PresignHandler(UploadHandler):
    endpoint = "generate_presigned_urls"

    def post(self) -> None:
        user = self.bearer("user")
        body = self.json_body()
        filesize, filetype = body.get("filesize"), body.get("filetype")
        if not _is_int(filesize) or filesize <= 0:
            raise ApiError(400, "PARAMS_INVALID", "filesize must be a positive integer of bytes")
        if not isinstance(filetype, str) or not filetype:
            raise ApiError(400, "PARAMS_INVALID", "filetype must be a file extension such as 'mp3'")
        s = self.settings_
        filetype = filetype.lower().lstrip(".")
        if filetype not in s.filetypes:
            raise ApiError(400, "FILE_TYPE_INVALID", f"filetype {filetype!r} is not supported; "
                                                     f"accepted: {', '.join(sorted(s.filetypes))}")
        if filesize > s.max_file_size_bytes:
            raise ApiError(400, "FILE_SIZE_INVALID", f"filesize {filesize} exceeds the limit of "
                                                     f"{s.max_file_size_bytes} bytes")
        upload = self.state.start_upload(user["client_id"], user["user_id"], filesize, filetype, s.chunk_size_bytes)
        self.write_json({
            "FileId": upload.file_id,
            "UploadId": upload.upload_id,
            "ChunkSize": upload.chunk_size,
            "Parts": [{"PartNumber": n, "PresignedUrl": self._part_url(upload, n)}
                      for n in range(1, upload.part_count + 1)],
        })

    def _part_url(self, upload: Upload, part_number: int) -> str:
        return self.ctx.signer.presign(self.origin(), f"/_storage/uploads/{upload.upload_id}/{part_number}",
                                       self.settings_.presign_ttl_s)


class CompleteUploadHandler(UploadHandler):
    endpoint = "complete_upload"

    async def post(self) -> None:
        user = self.bearer("user")
        body = self.json_body()
        upload_id = body.get("upload_id")
        upload = self.state.uploads.get(upload_id) if isinstance(upload_id, str) else None
        if upload is None or upload.file_id != body.get("file_id") or (upload.client_id, upload.user_id) != (
                user["client_id"], user["user_id"]):
            raise ApiError(404, "UPLOAD_NOT_FOUND", "no open upload with this file_id and upload_id for this user "
                                                    "(an upload can be completed once)")
        filetype = body.get("filetype")
        if not isinstance(filetype, str) or filetype.lower().lstrip(".") != upload.filetype:
            raise ApiError(400, "FILE_TYPE_INVALID", f"filetype must be {upload.filetype!r}, as when the upload "
                                                     f"was started")
        file_md5 = body.get("file_md5")
        if file_md5 is not None and (not isinstance(file_md5, str) or not MD5_RE.match(file_md5)):
            raise ApiError(400, "PARAMS_INVALID", "file_md5 must be 32 hexadecimal digits")
        self._check_parts(upload, body.get("part_list"))
        if upload.completing:
            raise ApiError(409, "FILE_UPLOAD_FAILED", "this upload is already being completed")
        upload.completing = True
        try:
            parts = [self.state.part_path(upload.upload_id, n) for n in range(1, upload.part_count + 1)]
            target = self.state.merged_path(upload)
            if upload.part_count == 1:
                # One part is the whole file, its MD5 known from its PUT: renamed into place below,
                # not copied through a thread (most recordings fit one part).
                size, md5_hex = upload.parts[1].size, upload.parts[1].md5_hex
            else:
                size, md5_hex = await asyncio.get_running_loop().run_in_executor(
                    self.ctx.executor, media.merge_parts, parts, target)
        finally:
            upload.completing = False
        if file_md5 is not None and file_md5.lower() != md5_hex:
            media.remove_quietly(target)  # a merged copy; a single part stays for another try
            raise ApiError(400, "FILE_MD5_NOT_MATCH", f"file_md5 {file_md5.lower()} does not match the MD5 of "
                                                      f"the uploaded bytes")
        if upload.part_count == 1:
            os.replace(parts[0], target)
        self.state.finish_upload(upload, StoredFile(upload.file_id, upload.filetype, target, size, md5_hex))
        download_url = self.ctx.signer.presign(self.origin(), f"/_storage/files/{upload.file_id}.{upload.filetype}",
                                               self.settings_.download_ttl_s)
        self.write_json({"FileId": upload.file_id, "FileType": upload.filetype, "DownloadUrl": download_url,
                         "FileMd5": md5_hex})

    @staticmethod
    def _check_parts(upload: Upload, part_list: Any) -> None:
        if not isinstance(part_list, list) or not part_list:
            raise ApiError(400, "PARAMS_INVALID", "part_list must be a non-empty list of {PartNumber, ETag}")
        listed: dict[int, str] = {}
        for item in part_list:
            if not (isinstance(item, dict) and _is_int(item.get("PartNumber")) and isinstance(item.get("ETag"), str)):
                raise ApiError(400, "PARAMS_INVALID", "each part_list item needs an integer PartNumber and an ETag")
            if item["PartNumber"] in listed:
                raise ApiError(400, "FILE_UPLOAD_FAILED", f"part {item['PartNumber']} is listed twice")
            listed[item["PartNumber"]] = item["ETag"].strip().strip('"').lower()
        expected = set(range(1, upload.part_count + 1))
        if set(listed) != expected:
            missing, extra = sorted(expected - set(listed)), sorted(set(listed) - expected)
            raise ApiError(400, "FILE_UPLOAD_FAILED", f"part_list must name parts 1..{upload.part_count}"
                                                      + (f"; missing {missing}" if missing else "")
                                                      + (f"; unknown {extra}" if extra else ""))
        for number in sorted(listed):
            part = upload.parts.get(number)
            if part is None:
                raise ApiError(400, "FILE_UPLOAD_FAILED", f"part {number} was never uploaded")
            if part.md5_hex != listed[number]:
                raise ApiError(400, "FILE_UPLOAD_FAILED", f"the ETag of part {number} does not match the bytes "
                                                          f"uploaded for it")
            if part.size != upload.expected_size(number):
                raise ApiError(400, "FILE_UPLOAD_FAILED", f"part {number} holds {part.size} bytes; expected "
                                                          f"{upload.expected_size(number)} for a file of "
                                                          f"{upload.filesize} bytes in chunks of {upload.chunk_size}")


# -- transcriptions --------------------------------------------------------------------------

class SubmitTranscriptionHandler(JsonHandler):
    endpoint = "submit_transcription"

    def post(self) -> None:
        client_id = self.api_key_client()
        self.limit_tx(client_id)
        body = self.json_body()
        file_url = body.get("file_url")
        if not isinstance(file_url, str) or urlsplit(file_url).scheme not in ("http", "https") \
                or not urlsplit(file_url).netloc:
            raise ApiError(400, "PARAMS_INVALID", "file_url must be an http(s) URL of the audio file")
        params = validate_params(body.get("params"))
        tx = self.state.create_transcription(client_id, file_url, params, self.ctx.faults.task_fails(), time.time(),
                                             self.ctx.faults.speed_factor())
        asyncio.get_running_loop().create_task(media.prepare_transcription(self.ctx, tx, self._own_file(file_url)))
        self.write_json({"transcription_id": tx.transcription_id, "status": "PENDING", "data": {}})

    def _own_file(self, file_url: str) -> tuple[str, dict[str, str]] | None:
        """Path and query when ``file_url`` points at this sandbox's storage, else None."""
        parts = urlsplit(file_url)
        if not parts.path.startswith("/_storage/files/"):
            return None
        return parts.path, dict(parse_qsl(parts.query))


class GetTranscriptionHandler(JsonHandler):
    endpoint = "get_transcription"

    def get(self, transcription_id: str) -> None:
        client_id = self.api_key_client()
        self.limit_tx(client_id)
        tx = self.state.transcriptions.get(transcription_id)
        if tx is None or tx.client_id != client_id:
            raise ApiError(404, "TRANSCRIPTION_NOT_FOUND", f"no transcription {transcription_id!r}")
        s = self.settings_
        self.write_json(tx.view(time.time(), s.processing_base_s, s.processing_rtf))


def validate_params(params: Any) -> dict[str, Any]:
    """Check the documented params; unknown keys are kept as they are, as Plaud would ignore them."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ApiError(400, "PARAMS_INVALID", "params must be a JSON object")
    for section in ("transcribe", "vad", "diarization"):
        if section in params and not isinstance(params[section], dict):
            raise ApiError(400, "PARAMS_INVALID", f"params.{section} must be a JSON object")
    transcribe = params.get("transcribe") or {}
    language = transcribe.get("language", "auto")
    if not isinstance(language, str) or (language != "auto" and not LANGUAGE_RE.match(language)):
        raise ApiError(400, "LANGUAGE_INVALID", f"params.transcribe.language must be 'auto' or a BCP-47 code, "
                                                f"got {language!r}")
    model = transcribe.get("model", "plaud-fast-whisper")
    if model not in KNOWN_MODELS:
        raise ApiError(400, "MODEL_INVALID", f"unknown model {model!r}; known: {', '.join(sorted(KNOWN_MODELS))}")
    for section, key in (("vad", "decode_silence"), ("diarization", "enabled"),
                         ("diarization", "return_embedding")):
        value = (params.get(section) or {}).get(key, False)
        if not isinstance(value, bool):
            raise ApiError(400, "PARAMS_INVALID", f"params.{section}.{key} must be true or false")
    return params


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
