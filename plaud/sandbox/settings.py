"""Sandbox settings: one dataclass read from flags, the environment and ``PATCH /_sandbox/config``.

Every field is a flag (``--processing-base-s``), an environment variable
(``PLAUD_SANDBOX_PROCESSING_BASE_S``) and, unless it is fixed at start, a key of the runtime
config endpoint. Deriving all three from the fields keeps them from drifting apart.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..rates import Rate

ENV_PREFIX = "PLAUD_SANDBOX_"
MIB = 1024 * 1024


class SettingsError(ValueError):
    """Raised when a setting has a value the sandbox cannot use; the message names the setting."""


def _opt(help_text: str, *, runtime: bool = True, **kwargs: Any) -> Any:
    return field(metadata={"help": help_text, "runtime": runtime}, **kwargs)


@dataclass(frozen=True)
class SandboxSettings:
    host: str = _opt("Interface to listen on.", runtime=False, default="127.0.0.1")
    port: int = _opt("Port to listen on (0 picks a free one and prints it).", runtime=False, default=8765)
    data_dir: str = _opt("Where uploads are stored; empty means a temp dir removed on exit.",
                         runtime=False, default="")

    client_id: str = _opt("Partner client_id the sandbox accepts.", default="sandbox-client-id")
    secret_key: str = _opt("Partner secret_key the sandbox accepts.", default="sandbox-secret-key")
    api_key: str = _opt("Transcription API key the sandbox accepts.", default="sandbox-api-key")

    chunk_size_bytes: int = _opt("ChunkSize handed out by generate-presigned-urls.", default=5 * MIB)
    max_file_size_bytes: int = _opt("Uploads larger than this get FILE_SIZE_INVALID.", default=5 * 1024 * MIB)
    accepted_filetypes: str = _opt("Comma-separated filetypes the upload API accepts.", default="mp3,opus")

    partner_token_ttl_s: int = _opt("expires_in of partner access tokens.", default=3600)
    refresh_token_ttl_s: int = _opt("Lifetime of partner refresh tokens.", default=30 * 86400)
    user_token_default_ttl_s: int = _opt("expires_in of user tokens when the request names none.",
                                         default=86400)
    user_token_max_ttl_s: int = _opt("Largest expires_in a user token request may ask for.", default=30 * 86400)
    presign_ttl_s: int = _opt("Validity of presigned part-upload URLs.", default=3600)
    download_ttl_s: int = _opt("Validity of the DownloadUrl returned by complete-upload.", default=86400)

    processing_base_s: float = _opt("Fixed part of a transcription's processing time.", default=3.0)
    processing_rtf: float = _opt("Real-time factor: processing seconds added per second of audio.",
                                 default=0.05)
    processing_jitter: float = _opt("Each transcription's processing time is scaled by a factor drawn "
                                    "uniformly from 1 +/- this (seeded by fault_seed).", default=0.0)

    token_rate_limit: str = _opt("Partner-token requests allowed per client_id ('' for none).", default="10/m")
    tx_rate_limit: str = _opt("Transcription API requests (submit + get) per client_id ('' for none).",
                              default="")

    fault_seed: int = _opt("Seed of the fault-injection random stream (reset restarts it).", default=0)
    fault_5xx: float = _opt("Probability that a request gets a 5xx.", default=0.0)
    fault_429: float = _opt("Probability of a 429 that carries Retry-After.", default=0.0)
    fault_429_bare: float = _opt("Probability of a 429 without Retry-After.", default=0.0)
    fault_drop: float = _opt("Probability that the connection is closed without a response.", default=0.0)
    fault_latency_ms: float = _opt("Latency added to every API and storage request.", default=0.0)
    fault_task_failure: float = _opt("Probability that a transcription ends in FAILURE.", default=0.0)

    def __post_init__(self) -> None:
        for name in ("fault_5xx", "fault_429", "fault_429_bare", "fault_drop", "fault_task_failure"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SettingsError(f"{name} must be a probability between 0 and 1, got {value}")
        for name in ("chunk_size_bytes", "max_file_size_bytes", "partner_token_ttl_s", "refresh_token_ttl_s",
                     "user_token_default_ttl_s", "user_token_max_ttl_s", "presign_ttl_s", "download_ttl_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.processing_jitter < 1.0:
            raise SettingsError(f"processing_jitter must be at least 0 and below 1, got {self.processing_jitter}")
        for name in ("processing_base_s", "processing_rtf", "fault_latency_ms"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("token_rate_limit", "tx_rate_limit"):
            try:
                self.rate(name)
            except ValueError as exc:
                raise SettingsError(f"{name}: {exc}") from None
        if not self.filetypes:
            raise SettingsError("accepted_filetypes must name at least one filetype")

    @property
    def filetypes(self) -> frozenset[str]:
        return frozenset(t.strip().lower() for t in self.accepted_filetypes.split(",") if t.strip())

    def rate(self, name: str) -> Rate | None:
        text = getattr(self, name)
        return Rate.parse(text) if text.strip() else None

    # -- construction -------------------------------------------------------------------

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> SandboxSettings:
        """Defaults, then ``PLAUD_SANDBOX_*`` variables, then explicit ``overrides`` (flags)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in cls.fields():
            env_name = ENV_PREFIX + f.name.upper()
            if env_name in environ:
                values[f.name] = _coerce(f, environ[env_name], source=env_name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def updated(self, changes: Mapping[str, Any]) -> SandboxSettings:
        """A copy with runtime-changeable fields replaced; unknown or start-only keys are refused."""
        by_name = {f.name: f for f in self.fields()}
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            f = by_name.get(key)
            if f is None:
                raise SettingsError(f"unknown setting {key!r}")
            if not f.metadata["runtime"]:
                raise SettingsError(f"{key} is fixed at start and cannot be changed at runtime")
            clean[key] = _coerce(f, value, source=key)
        return dataclasses.replace(self, **clean)

    def public(self) -> dict[str, Any]:
        """Settings as JSON, with the credentials masked."""
        data = dataclasses.asdict(self)
        for secret in ("secret_key", "api_key"):
            data[secret] = "***"
        return data


def _coerce(f: dataclasses.Field, value: Any, *, source: str) -> Any:
    kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
    if isinstance(value, bool) or (kind is not str and isinstance(value, str) and not value.strip()):
        raise SettingsError(f"{source} must be a {kind.__name__}, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{source} must be a {kind.__name__}, got {value!r}") from None
