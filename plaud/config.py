"""Client configuration from the environment, checked at start; errors name the variable.

With no Plaud settings at all, the client targets the local sandbox with its default
credentials (the embedded default). Setting ``PLAUD_REGION`` or any credential switches to
real Plaud, and then every credential is required. Each credential may instead come from a
file (``PLAUD_API_KEY_FILE=/run/secrets/plaud_api_key``), as container secrets are mounted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .budget import PACE_SLICES, parse_tenant_weights
from .errors import ConfigError
from .rates import Rate

REGIONS = {
    "us": "https://platform-us.plaud.ai/developer/api",
    "jp": "https://platform-jp.plaud.ai/developer/api",
}
COMING_SOON_REGIONS = ("eu", "sg")
SANDBOX_BASE_URL = "http://127.0.0.1:8765/developer/api"
SANDBOX_CREDENTIALS = {"PLAUD_CLIENT_ID": "sandbox-client-id", "PLAUD_SECRET_KEY": "sandbox-secret-key",
                       "PLAUD_API_KEY": "sandbox-api-key"}
CREDENTIAL_VARS = ("PLAUD_CLIENT_ID", "PLAUD_SECRET_KEY", "PLAUD_API_KEY")
DEFAULT_USER_ID = "plaud-workers"
USER_ID_LENGTH = (6, 120)


@dataclass(frozen=True)
class PlaudConfig:
    base_url: str
    client_id: str
    secret_key: str = field(repr=False)
    api_key: str = field(repr=False)
    user_id: str = DEFAULT_USER_ID
    region: str | None = None
    is_sandbox: bool = False
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    part_timeout_s: float = 120.0
    parallel_parts: int = 4
    tx_rate_limit: Rate | None = None
    # Each tenant's weight in the budget's fair shares ((tenant, weight), ...); others weigh 1.
    tenant_weights: tuple[tuple[str, float], ...] = ()
    # The budget's pace lets at most limit / tx_pace_slices go at once (1: the whole window at once).
    tx_pace_slices: int = PACE_SLICES
    mp3_bitrate_kbps: int = 64
    ffmpeg_path: str = "ffmpeg"

    @classmethod
    def sandbox(cls, base_url: str = SANDBOX_BASE_URL, **overrides: object) -> PlaudConfig:
        return cls(base_url=base_url, client_id=SANDBOX_CREDENTIALS["PLAUD_CLIENT_ID"],
                   secret_key=SANDBOX_CREDENTIALS["PLAUD_SECRET_KEY"], api_key=SANDBOX_CREDENTIALS["PLAUD_API_KEY"],
                   is_sandbox=True, **overrides)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PlaudConfig:
        env = os.environ if environ is None else environ
        region = env.get("PLAUD_REGION", "").strip().lower() or None
        base_url = env.get("PLAUD_BASE_URL", "").strip().rstrip("/") or None
        given = {name: read_secret(env, name) for name in (*CREDENTIAL_VARS, "PLAUD_USER_ID")}

        if region is not None:
            if region in COMING_SOON_REGIONS:
                raise ConfigError(f"PLAUD_REGION={region!r}: Plaud lists this region as coming soon; "
                                  f"use one of {', '.join(sorted(REGIONS))}")
            if region not in REGIONS:
                raise ConfigError(f"PLAUD_REGION={region!r} is not a Plaud region; use one of "
                                  f"{', '.join(sorted(REGIONS))}")
        no_credentials = region is None and not any(given[name] for name in CREDENTIAL_VARS)
        # The sandbox's own credentials, set explicitly (as `plaud-workers sandbox` suggests), are the sandbox too.
        is_sandbox = no_credentials or (region is None and all(given[n] == SANDBOX_CREDENTIALS[n]
                                                               for n in CREDENTIAL_VARS))
        if no_credentials:
            credentials = dict(SANDBOX_CREDENTIALS)
        else:
            missing = [name for name in CREDENTIAL_VARS if not given[name]]
            if missing:
                raise ConfigError(f"{', '.join(missing)} must be set (or {missing[0]}_FILE) when PLAUD_REGION or "
                                  f"any Plaud credential is set")
            credentials = {name: given[name] or "" for name in CREDENTIAL_VARS}
        # Where a sandbox is, for deployments that run one (compose): used only when nothing names
        # real Plaud, so that setting PLAUD_REGION and credentials is all it takes to go live.
        sandbox_url = env.get("PLAUD_SANDBOX_URL", "").strip().rstrip("/") or SANDBOX_BASE_URL
        url = base_url or (REGIONS[region] if region else sandbox_url)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"PLAUD_BASE_URL={url!r} is not an http(s) URL")

        user_id = given["PLAUD_USER_ID"] or DEFAULT_USER_ID
        if not USER_ID_LENGTH[0] <= len(user_id) <= USER_ID_LENGTH[1]:
            raise ConfigError(f"PLAUD_USER_ID must be {USER_ID_LENGTH[0]} to {USER_ID_LENGTH[1]} characters")
        rate_text = env.get("PLAUD_TX_RATE_LIMIT", "").strip()
        try:
            tx_rate = Rate.parse(rate_text) if rate_text else None
        except ValueError as exc:
            raise ConfigError(f"PLAUD_TX_RATE_LIMIT: {exc}") from None
        try:
            weights = parse_tenant_weights(env.get("PLAUD_TENANT_WEIGHTS", ""))
        except ValueError as exc:
            raise ConfigError(f"PLAUD_TENANT_WEIGHTS: {exc}") from None
        return cls(
            base_url=url, client_id=credentials["PLAUD_CLIENT_ID"], secret_key=credentials["PLAUD_SECRET_KEY"],
            api_key=credentials["PLAUD_API_KEY"], user_id=user_id, region=region, is_sandbox=is_sandbox,
            connect_timeout_s=_number(env, "PLAUD_CONNECT_TIMEOUT_S", 5.0),
            read_timeout_s=_number(env, "PLAUD_READ_TIMEOUT_S", 30.0),
            part_timeout_s=_number(env, "PLAUD_PART_TIMEOUT_S", 120.0),
            parallel_parts=int(_number(env, "PLAUD_PARALLEL_PARTS", 4, integer=True, upper=64)),
            tx_rate_limit=tx_rate, tenant_weights=tuple(sorted(weights.items())),
            tx_pace_slices=int(_number(env, "PLAUD_TX_PACE_SLICES", PACE_SLICES, integer=True, upper=1000)),
            mp3_bitrate_kbps=int(_number(env, "PLAUD_MP3_BITRATE_KBPS", 64, integer=True, upper=320)),
            ffmpeg_path=env.get("PLAUD_FFMPEG", "ffmpeg").strip() or "ffmpeg",
        )

    def describe(self) -> str:
        """One line for logs: where the client points, never a secret."""
        target = ("the local sandbox" if self.is_sandbox
                  else f"Plaud region {self.region}" if self.region else "a Plaud-compatible API")
        return f"{target} at {self.base_url} as client {self.client_id}, user {self.user_id}"


def read_secret(env: Mapping[str, str], name: str) -> str | None:
    """``name`` from the environment, or the content of the file named by ``name``_FILE."""
    value = env.get(name, "").strip() or None
    path = env.get(f"{name}_FILE", "").strip() or None
    if value and path:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read().strip() or None
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None
        if value is None:
            raise ConfigError(f"{name}_FILE={path!r} is empty")
    return value


def _number(env: Mapping[str, str], name: str, default: float, *, integer: bool = False,
            upper: float | None = None) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a {'whole ' if integer else ''}number, got {text!r}") from None
    if value <= 0 or (upper is not None and value > upper):
        raise ConfigError(f"{name} must be above 0{f' and at most {upper:g}' if upper else ''}, got {text!r}")
    return value
