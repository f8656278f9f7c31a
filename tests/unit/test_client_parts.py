"""Config, redaction, sealing, token store, limiter, result normalisation, format handling."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

import fakeredis
import numpy as np
import pytest
import soundfile

from plaud import auth
from plaud.auth import MemoryTokenStore, RedisTokenStore, Token, TokenProvider, usable_until
from plaud.client import PlaudClient, merge_params
from plaud.config import PlaudConfig
from plaud.errors import AuthError, ConfigError, UnsupportedAudio
from plaud.ratelimit import MemoryLimiter
from plaud.rates import Rate
from plaud.redact import RedactingFilter, redact, register_secrets
from plaud.sealing import Sealer
from plaud.transcode import sniff, to_mp3
from plaud.transcriptions import TranscriptionStatus, parse_state

# -- config ------------------------------------------------------------------------------------


def test_no_settings_means_the_sandbox():
    config = PlaudConfig.from_env({})
    assert config.is_sandbox and config.base_url == "http://127.0.0.1:8765/developer/api"
    assert config.client_id == "sandbox-client-id" and config.user_id == "plaud-workers"
    assert "sandbox-secret-key" not in repr(config) and "sandbox-api-key" not in repr(config)


@pytest.mark.parametrize("region, url", [("us", "https://platform-us.plaud.ai/developer/api"),
                                         ("JP", "https://platform-jp.plaud.ai/developer/api")])
def test_regions(region, url):
    env = {"PLAUD_REGION": region, "PLAUD_CLIENT_ID": "c", "PLAUD_SECRET_KEY": "s", "PLAUD_API_KEY": "k"}
    config = PlaudConfig.from_env(env)
    assert config.base_url == url and not config.is_sandbox


def test_tenant_weights_reach_the_fleets_budget(redis_client):
    config = PlaudConfig.from_env({"PLAUD_TENANT_WEIGHTS": "acme=3, beta=0.5", "PLAUD_TX_RATE_LIMIT": "60/m"})
    assert config.tenant_weights == (("acme", 3.0), ("beta", 0.5))
    budget = PlaudClient(config, redis=redis_client).budget
    assert (budget.weight("acme"), budget.weight("beta"), budget.weight("anyone")) == (3.0, 0.5, 1.0)


def test_a_deployments_sandbox_url_never_outranks_a_region():
    """Compose names its sandbox service for every container: real credentials must still reach Plaud."""
    compose = {"PLAUD_SANDBOX_URL": "http://sandbox:8765/developer/api"}
    assert PlaudConfig.from_env(compose).base_url == "http://sandbox:8765/developer/api"
    live = {**compose, "PLAUD_REGION": "us", "PLAUD_CLIENT_ID": "c", "PLAUD_SECRET_KEY": "s", "PLAUD_API_KEY": "k"}
    config = PlaudConfig.from_env(live)
    assert config.base_url == "https://platform-us.plaud.ai/developer/api" and not config.is_sandbox


@pytest.mark.parametrize("env, words", [
    ({"PLAUD_REGION": "eu"}, "coming soon"),
    ({"PLAUD_REGION": "sg"}, "coming soon"),
    ({"PLAUD_REGION": "mars"}, "not a Plaud region"),
    ({"PLAUD_REGION": "us"}, "PLAUD_CLIENT_ID, PLAUD_SECRET_KEY, PLAUD_API_KEY must be set"),
    ({"PLAUD_CLIENT_ID": "c", "PLAUD_SECRET_KEY": "s"}, "PLAUD_API_KEY must be set"),
    ({"PLAUD_BASE_URL": "ftp://x"}, "PLAUD_BASE_URL"),
    ({"PLAUD_USER_ID": "abc"}, "PLAUD_USER_ID must be 6 to 120"),
    ({"PLAUD_TX_RATE_LIMIT": "lots"}, "PLAUD_TX_RATE_LIMIT"),
    ({"PLAUD_TENANT_WEIGHTS": "acme=lots"}, "PLAUD_TENANT_WEIGHTS: the weight of tenant 'acme' must be a number"),
    ({"PLAUD_TENANT_WEIGHTS": "acme"}, "PLAUD_TENANT_WEIGHTS: tenant weights are written"),
    ({"PLAUD_PARALLEL_PARTS": "0"}, "PLAUD_PARALLEL_PARTS must be above 0"),
    ({"PLAUD_PARALLEL_PARTS": "four"}, "PLAUD_PARALLEL_PARTS must be a whole number"),
    ({"PLAUD_API_KEY_FILE": "/nonexistent/key"}, "PLAUD_API_KEY_FILE='/nonexistent/key' cannot be read"),
    ({"PLAUD_API_KEY": "k", "PLAUD_API_KEY_FILE": "/x"}, "not both"),
])
def test_bad_config_names_the_variable(env, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        PlaudConfig.from_env(env)


def test_how_the_target_is_described():
    sandbox_creds = {"PLAUD_CLIENT_ID": "sandbox-client-id", "PLAUD_SECRET_KEY": "sandbox-secret-key",
                     "PLAUD_API_KEY": "sandbox-api-key", "PLAUD_BASE_URL": "http://127.0.0.1:9999/developer/api"}
    assert PlaudConfig.from_env(sandbox_creds).describe().startswith("the local sandbox at http://127.0.0.1:9999")
    custom = {**sandbox_creds, "PLAUD_API_KEY": "another-key"}
    assert PlaudConfig.from_env(custom).describe().startswith("a Plaud-compatible API")
    real = {"PLAUD_REGION": "jp", "PLAUD_CLIENT_ID": "client-1", "PLAUD_SECRET_KEY": "secret-value-xyz",
            "PLAUD_API_KEY": "api-key-value-xyz"}
    described = PlaudConfig.from_env(real).describe()
    assert described.startswith("Plaud region jp") and "client-1" in described
    assert "secret-value-xyz" not in described and "api-key-value-xyz" not in described


def test_credentials_from_files(tmp_path):
    for name, value in (("client_id", "c-1"), ("secret", "s-1"), ("api", "k-1\n")):
        (tmp_path / name).write_text(value)
    config = PlaudConfig.from_env({"PLAUD_REGION": "us", "PLAUD_CLIENT_ID_FILE": str(tmp_path / "client_id"),
                                   "PLAUD_SECRET_KEY_FILE": str(tmp_path / "secret"),
                                   "PLAUD_API_KEY_FILE": str(tmp_path / "api"), "PLAUD_TX_RATE_LIMIT": "60/m"})
    assert (config.client_id, config.secret_key, config.api_key) == ("c-1", "s-1", "k-1")
    assert config.tx_rate_limit == Rate(60, 60)


# -- redaction and sealing ---------------------------------------------------------------------


@pytest.mark.parametrize("text, secret", [
    ("PUT https://b.s3.amazonaws.com/k?X-Amz-Date=1&X-Amz-Signature=abcdef123", "abcdef123"),
    ("Authorization: Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", "eyJhbGciOi"),
    ('{"access_token": "tok-123456", "expires_in": 3600}', "tok-123456"),
    ("headers={'X-Client-Api-Key': 'key-987654'}", "key-987654"),
    ("basic auth Basic c2FuZGJveDpzZWNyZXQ=", "c2FuZGJveDpzZWNyZXQ="),
])
def test_redact_masks_secrets(text, secret):
    assert secret not in redact(text)


def test_registered_secrets_are_masked_in_logs():
    register_secrets(["my-very-secret-api-key"])
    record = logging.LogRecord("plaud", logging.INFO, __file__, 1, "using %s", ("my-very-secret-api-key",), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == "using ***"


def test_sealer_round_trip_and_binding():
    sealer = Sealer("secret-1")
    sealed = sealer.seal("token-value", context="plaud:token:a")
    assert "token-value" not in sealed
    assert sealer.open(sealed, context="plaud:token:a") == "token-value"
    assert sealer.open(sealed, context="plaud:token:b") is None  # moved to another key
    assert Sealer("secret-2").open(sealed, context="plaud:token:a") is None  # rotated secret
    assert sealer.open("plain", context="plaud:token:a") is None and sealer.open(None, context="x") is None


# -- tokens ------------------------------------------------------------------------------------


def test_usable_until_keeps_a_margin():
    assert usable_until(0, 3600) == 3600 - 120
    assert usable_until(0, 60) == 54  # 10 % of a short life
    assert usable_until(0, 2) == 1  # never less than half


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        return MemoryTokenStore()
    return RedisTokenStore(fakeredis.FakeRedis(), Sealer("s"))


def test_single_flight_fetches_once_for_many_threads(store):
    calls = []
    gate = threading.Event()

    def fetch():
        calls.append(1)
        gate.wait(1)
        return Token("t", time.time() + 100)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(store.single_flight, "k", fetch) for _ in range(8)]
        time.sleep(0.2)
        gate.set()
        assert {f.result().value for f in futures} == {"t"}
    assert len(calls) == 1


def test_drop_only_removes_the_token_it_was_given(store):
    old, new = Token("old", time.time() + 100), Token("new", time.time() + 100)
    store.put("k", new)
    store.drop("k", old)  # someone else already replaced it
    assert store.get("k") == new
    store.drop("k", new)
    assert store.get("k") is None


def test_expired_tokens_are_not_served(store):
    store.put("k", Token("t", time.time() - 1))
    assert store.get("k") is None


def test_provider_replaces_a_refused_partner_token_once():
    minted = []

    def mint_partner():
        minted.append(1)
        return {"access_token": f"p{len(minted)}", "expires_in": 3600}

    def mint_user(partner, user_id):
        if partner == "p1":
            raise AuthError("expired", status=401)
        return {"access_token": f"u-{partner}", "expires_in": 86400}

    provider = TokenProvider(store=MemoryTokenStore(), client_id="c", mint_partner=mint_partner, mint_user=mint_user)
    assert provider.user_token("someone").value == "u-p2"
    assert len(minted) == 2


def test_with_user_token_retries_a_401_once_with_a_fresh_token():
    counter = iter(range(100))
    provider = TokenProvider(store=MemoryTokenStore(), client_id="c",
                             mint_partner=lambda: {"access_token": "p", "expires_in": 3600},
                             mint_user=lambda p, u: {"access_token": f"u{next(counter)}", "expires_in": 3600})
    seen = []

    def call(token):
        seen.append(token)
        if token == "u0":
            raise AuthError("revoked", status=401)
        return "ok"

    assert provider.with_user_token("someone", call) == "ok" and seen == ["u0", "u1"]
    with pytest.raises(AuthError):
        provider.with_user_token("someone", lambda t: (_ for _ in ()).throw(AuthError("no", status=401)))


def test_a_process_reads_the_fleets_user_token_again_only_after_a_while_or_a_401(store, monkeypatch):
    minted = iter(range(100))
    provider = TokenProvider(store=store, client_id="c", mint_partner=lambda: {"access_token": "p", "expires_in": 3600},
                             mint_user=lambda p, u: {"access_token": f"u{next(minted)}", "expires_in": 3600})
    reads = []
    monkeypatch.setattr(store, "get", lambda key, get=store.get: reads.append(key) or get(key))
    assert provider.user_token("someone").value == "u0"
    read_once = len(reads)
    assert provider.user_token("someone").value == "u0" and len(reads) == read_once  # remembered
    # Another process replaced it in the fleet's cache: this one keeps its own until it reads again...
    replaced = Token("u9", time.time() + 3600)
    store.put(provider._user_key("someone"), replaced)
    assert provider.user_token("someone").value == "u0"
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + auth.READ_AGAIN_AFTER_S + 1)
    assert provider.user_token("someone").value == "u9"  # ...after a while
    monkeypatch.undo()
    provider.drop_user_token("someone", replaced)  # ...or at once after a 401
    assert provider.user_token("someone").value == "u1"


# -- limiter (one process; the fleet's budget is tested in test_budget.py) -----------------------


def test_one_process_limiter_allows_the_budget_then_says_how_long_to_wait():
    limiter = MemoryLimiter(Rate(3, 60))
    assert [limiter.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.try_acquire()
    assert 59 < wait <= 60


# -- transcription results ---------------------------------------------------------------------


def test_primary_shape():
    state = parse_state({"transcription_id": "task_exec_1", "status": "SUCCESS", "data": {
        "text": "hello world", "language": "en", "duration": 3,
        "results": [{"start": 0, "end": 1.5, "text": "hello world", "speaker_id": "Speaker 1", "language": "en",
                     "language_probability": 0.9}]}})
    assert state.status is TranscriptionStatus.SUCCESS and state.transcript.text == "hello world"
    segment = state.transcript.segments[0]
    assert (segment.start_s, segment.end_s, segment.speaker, segment.language_probability) == (0, 1.5, "Speaker 1", 0.9)
    assert state.transcript.duration_s == 3.0


def test_alternative_shapes():
    state = parse_state({"data": {"task_id": "t-2", "task_status": "success", "segments": [
        {"start": 0, "end": 1, "text": "one", "speaker": "Speaker 2", "language_probabilitiy": 0.5},
        {"start": 1, "end": 2, "text": " two "}]}})
    assert state.transcription_id == "t-2" and state.status is TranscriptionStatus.SUCCESS
    assert state.transcript.text == "one two"
    assert state.transcript.segments[0].speaker == "Speaker 2"
    assert state.transcript.segments[0].language_probability == 0.5


def test_empty_transcript_on_success_is_valid():
    state = parse_state({"transcription_id": "t", "status": "SUCCESS", "data": {"text": "", "results": []}})
    assert state.status.is_terminal and state.transcript.text == "" and state.transcript.segments == ()


@pytest.mark.parametrize("raw, terminal, failure", [("PENDING", False, False), ("RECEIVED", False, False),
                                                    ("STARTED", False, False), ("PROGRESS", False, False),
                                                    ("QUEUED_SOMEWHERE", False, False), ("SUCCESS", True, False),
                                                    ("FAILURE", True, True), ("REVOKED", True, True)])
def test_statuses(raw, terminal, failure):
    state = parse_state({"transcription_id": "t", "status": raw, "data": {}})
    assert (state.status.is_terminal, state.status.is_failure) == (terminal, failure)
    assert state.raw_status == raw


def test_failure_reason_from_message_or_data_error():
    assert parse_state({"status": "FAILURE", "message": "bad audio"}).message == "bad audio"
    assert parse_state({"status": "FAILURE", "data": {"error": "codec"}}).message == "codec"


def test_params_merge_keeps_defaults_and_unknown_keys():
    params = merge_params({"diarization": {"enabled": True}, "hotwords": "a,b", "transcribe": {"language": "ja"}})
    assert params["diarization"] == {"enabled": True, "return_embedding": False}
    assert params["transcribe"] == {"language": "ja", "model": "plaud-fast-whisper"}
    assert params["hotwords"] == "a,b" and params["vad"] == {"decode_silence": False}


# -- formats -----------------------------------------------------------------------------------


@pytest.mark.parametrize("head, kind", [
    (b"ID3\x04\x00", "mp3"), (b"\xff\xfb\x90\x00", "mp3"), (b"OggS" + b"\x00" * 24 + b"OpusHead", "opus"),
    (b"OggS" + b"\x00" * 24 + b"\x01vorbis", "ogg"), (b"RIFF\x00\x00\x00\x00WAVEfmt ", "wav"), (b"fLaC", "flac"),
    (b"FORM\x00\x00\x00\x00AIFF", "aiff"), (b"\x00\x00\x00\x20ftypM4A ", "m4a"), (b"hello world", None),
])
def test_sniff(head, kind):
    assert sniff(head) == kind


@pytest.mark.parametrize("fmt, ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg")])
def test_decodable_formats_become_mono_mp3_at_the_asked_bitrate(tmp_path, fmt, ext):
    source = tmp_path / f"in.{ext}"
    t = np.arange(44100 * 10) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1) * 0.3
    soundfile.write(str(source), stereo.astype("float32"), 44100, format=fmt)
    result = to_mp3(str(source), str(tmp_path / "out.mp3"), bitrate_kbps=32, ffmpeg_path="/nonexistent")
    assert result.via == "lame" and result.bytes_saved == result.original_bytes - result.bytes
    if fmt != "OGG":  # lossless input always shrinks; a Vorbis file may already be smaller than the MP3
        assert result.bytes_saved > 0
    assert result.bytes * 8 / 10 / 1000 == pytest.approx(32, rel=0.1)
    info = soundfile.info(str(tmp_path / "out.mp3"))
    assert info.channels == 1 and info.duration == pytest.approx(10, abs=0.2)


def test_undecodable_without_ffmpeg_names_the_fix(tmp_path):
    source = tmp_path / "in.m4a"
    source.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(2000))
    with pytest.raises(UnsupportedAudio, match="install ffmpeg"):
        to_mp3(str(source), str(tmp_path / "out.mp3"), bitrate_kbps=32, ffmpeg_path="/nonexistent", detected="m4a")
