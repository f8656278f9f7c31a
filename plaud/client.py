"""``PlaudClient``: fleet-wide auth, streaming resumable upload, transcriptions. No Celery here.

    client = PlaudClient.from_env(redis=redis.Redis.from_url(...))   # or no redis: in-process caches
    uploaded = client.upload("meeting.wav")                          # transcoded to MP3, streamed up
    tid = client.submit(uploaded.download_url, {"diarization": {"enabled": True}})
    state = client.get(tid)                                          # TranscriptionState

Every call has a timeout; retryable failures of idempotent calls are retried here a bounded
number of times (``retry.RetryPolicy``), then raised for the caller's own schedule. ``submit`` is
not idempotent at Plaud, so it is retried only when the request provably never arrived.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import IO, Any

from . import retry
from .auth import MemoryTokenStore, RedisTokenStore, TokenProvider
from .budget import DEFAULT_PRIORITY, DEFAULT_TENANT, Budget
from .config import PlaudConfig
from .errors import BadRequest, BudgetQueued, BudgetSpent
from .keys import tx_budget_key
from .ratelimit import POLL, SUBMIT, Load, MemoryLimiter
from .redact import register_secrets
from .sealing import Sealer
from .sources import Source, prepare_source
from .transcriptions import TranscriptionState, parse_state
from .transport import Transport
from .upload import Checkpoint, ProgressCallback, Uploader, UploadProgress, UploadResult

log = logging.getLogger("plaud.client")

DEFAULT_PARAMS: dict[str, Any] = {
    "transcribe": {"language": "auto", "model": "plaud-fast-whisper"},
    "vad": {"decode_silence": False},
    "diarization": {"enabled": False, "return_embedding": False},
}


class PlaudClient:
    def __init__(self, config: PlaudConfig, *, redis: Any = None,
                 policy: retry.RetryPolicy = retry.RetryPolicy(), limiter_wait_max_s: float = 0.0,
                 workdir: str | None = None) -> None:
        self.config = config
        self.policy = policy
        self.workdir = workdir
        self.limiter_wait_max_s = limiter_wait_max_s
        register_secrets([config.secret_key, config.api_key])
        self.sealer = Sealer(config.secret_key)
        self.transport = Transport(connect_timeout_s=config.connect_timeout_s,
                                   read_timeout_s=config.read_timeout_s)
        store = RedisTokenStore(redis, self.sealer) if redis is not None else MemoryTokenStore()
        self.tokens = TokenProvider(store=store, client_id=config.client_id, mint_partner=self._mint_partner,
                                    mint_user=self._mint_user)
        # The fleet shares one budget through Redis; a client on its own counts its own requests.
        self.budget: Budget | MemoryLimiter | None = None
        if config.tx_rate_limit is not None:
            self.budget = (Budget(redis, config.tx_rate_limit, key=tx_budget_key(config.client_id),
                                  tenant_weights=dict(config.tenant_weights), slices=config.tx_pace_slices)
                           if redis is not None else MemoryLimiter(config.tx_rate_limit))
        self.uploader = Uploader(self, self.transport, parallel_parts=config.parallel_parts,
                                 part_timeout_s=config.part_timeout_s, policy=policy)

    @classmethod
    def from_env(cls, *, redis: Any = None, **kwargs: Any) -> PlaudClient:
        return cls(PlaudConfig.from_env(), redis=redis, **kwargs)

    def _url(self, path: str) -> str:
        return self.config.base_url + path

    # -- auth ------------------------------------------------------------------------------

    def _mint_partner(self) -> dict[str, Any]:
        def mint() -> dict[str, Any]:
            return self.transport.request("POST", self._url("/oauth/partner/access-token"),
                                          auth=(self.config.client_id, self.config.secret_key)).json()

        return retry.call(mint, self.policy, what="partner token")

    def _mint_user(self, partner_token: str, user_id: str) -> dict[str, Any]:
        def mint() -> dict[str, Any]:
            return self.transport.request("POST", self._url("/open/partner/users/access-token"),
                                          headers={"Authorization": f"Bearer {partner_token}"},
                                          json={"user_id": user_id}).json()

        return retry.call(mint, self.policy, what="user token")

    # -- upload ----------------------------------------------------------------------------

    def presign(self, user_id: str, filesize: int, filetype: str) -> dict[str, Any]:
        return self._with_user(user_id, "/open/partner/files/upload/generate-presigned-urls",
                               {"filesize": filesize, "filetype": filetype}, what="generate-presigned-urls")

    def complete(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        # Retried by the uploader, which knows what a 404 after a lost answer means.
        return self.tokens.with_user_token(user_id, lambda token: self.transport.request(
            "POST", self._url("/open/partner/files/upload/complete-upload"),
            headers={"Authorization": f"Bearer {token}"}, json=body).json())

    def _with_user(self, user_id: str, path: str, body: dict[str, Any], *, what: str) -> dict[str, Any]:
        def call(token: str) -> dict[str, Any]:
            return self.transport.request("POST", self._url(path), headers={"Authorization": f"Bearer {token}"},
                                          json=body).json()

        return retry.call(lambda: self.tokens.with_user_token(user_id, call), self.policy, what=what)

    def prepare(self, source: str | os.PathLike[str] | IO[bytes], *, size: int | None = None,
                filetype: str | None = None) -> Source:
        """Check a source and make it uploadable (transcoding if needed); call ``cleanup()`` after."""
        return prepare_source(source, transport=self.transport, bitrate_kbps=self.config.mp3_bitrate_kbps,
                              ffmpeg_path=self.config.ffmpeg_path, size=size, filetype=filetype,
                              workdir=self.workdir)

    def upload(self, source: str | os.PathLike[str] | IO[bytes] | Source, *, user_id: str | None = None,
               size: int | None = None, filetype: str | None = None, progress: UploadProgress | None = None,
               on_progress: ProgressCallback | None = None, on_checkpoint: Checkpoint | None = None) -> UploadResult:
        """Upload a recording; returns the DownloadUrl to submit. Resumes from ``progress`` when given."""
        prepared = source if isinstance(source, Source) else self.prepare(source, size=size, filetype=filetype)
        try:
            return self.uploader.upload(prepared, user_id=user_id or self.config.user_id, progress=progress,
                                        on_progress=on_progress, on_checkpoint=on_checkpoint)
        finally:
            if prepared is not source:
                prepared.cleanup()

    # -- transcriptions --------------------------------------------------------------------

    def submit(self, file_url: str, params: dict[str, Any] | None = None, *, waiter: str | None = None,
               tenant: str = DEFAULT_TENANT, priority: str = DEFAULT_PRIORITY,
               before_send: Callable[[], None] | None = None) -> str:
        """Create a transcription task; returns its transcription_id.

        ``waiter`` names the caller in the fleet budget's wait list (a recording id): refused, the
        request waits there as data and BudgetQueued ends the caller's task until the dispatcher
        wakes it; ``tenant`` and ``priority`` place it there (the budget's fair shares). Without a
        waiter a refusal raises BudgetSpent with when to ask again.
        ``before_send`` runs just before each request goes out (after the budget granted it): the
        place to count billable attempts.
        """
        body = {"file_url": file_url, "params": merge_params(params)}

        def post() -> dict[str, Any]:
            self._take_budget(waiter, SUBMIT, tenant, priority)
            if before_send is not None:
                before_send()
            return self.transport.request("POST", self._url("/open/partner/ai/transcriptions/"),
                                          headers=self._api_headers(), json=body).json()

        answer = retry.call(post, self.policy, what="submit transcription", idempotent=False)
        transcription_id = answer.get("transcription_id") or (answer.get("data") or {}).get("task_id")
        if not transcription_id:
            raise BadRequest("the submit answer has no transcription_id")
        return str(transcription_id)

    def get(self, transcription_id: str, *, waiter: str | None = None, tenant: str = DEFAULT_TENANT,
            priority: str = DEFAULT_PRIORITY, before_send: Callable[[], None] | None = None) -> TranscriptionState:
        """The transcription's state; ``waiter`` and ``before_send`` as for ``submit``."""

        def fetch() -> Any:
            self._take_budget(waiter, POLL, tenant, priority)
            if before_send is not None:
                before_send()
            return self.transport.request("GET", self._url(f"/open/partner/ai/transcriptions/{transcription_id}"),
                                          headers=self._api_headers()).json()

        return parse_state(retry.call(fetch, self.policy, what="get transcription"), transcription_id)

    def _api_headers(self) -> dict[str, str]:
        return {"X-Client-Id": self.config.client_id, "X-Client-Api-Key": self.config.api_key}

    def budget_load(self) -> Load | None:
        """How busy the Transcription API budget is; None when there is no limit."""
        return self.budget.load() if self.budget is not None else None

    def _take_budget(self, waiter: str | None, kind: str, tenant: str = DEFAULT_TENANT,
                     priority: str = DEFAULT_PRIORITY) -> None:
        """Spend one Transcription API slot; or queue as ``waiter`` (BudgetQueued), or raise BudgetSpent."""
        budget = self.budget
        if budget is None:
            return
        give_up = time.monotonic() + self.limiter_wait_max_s
        while True:
            if isinstance(budget, Budget):
                if budget.take(kind, waiter or uuid.uuid4().hex, tenant=tenant, priority=priority,
                               queue=waiter is not None):
                    return
                if waiter is not None:
                    raise BudgetQueued(f"the fleet-wide budget of {budget.rate} transcription requests is spent; "
                                       f"{waiter}'s {kind} waits for a slot", kind=kind)
                wait_s = max(budget.next_free_in_s(), 0.05)
            else:
                wait_s = budget.try_acquire(waiter, kind)
                if wait_s <= 0:
                    return
            if time.monotonic() + wait_s > give_up:
                raise BudgetSpent(f"the fleet-wide budget of {budget.rate} transcription requests is spent",
                                  retry_after_s=wait_s)
            time.sleep(wait_s)


def merge_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """The documented defaults, overlaid section by section; unknown keys pass through unchanged."""
    merged: dict[str, Any] = {section: dict(values) for section, values in DEFAULT_PARAMS.items()}
    for key, value in (params or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
