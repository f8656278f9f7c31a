from __future__ import annotations

import pytest

from plaud.rates import Rate
from plaud.sandbox.faults import FaultInjector, KeyedLimiter
from plaud.sandbox.settings import SandboxSettings, SettingsError


def test_defaults_are_the_documented_ones():
    s = SandboxSettings()
    assert (s.client_id, s.secret_key, s.api_key) == ("sandbox-client-id", "sandbox-secret-key", "sandbox-api-key")
    assert s.port == 8765 and s.chunk_size_bytes == 5 * 1024 * 1024
    assert s.filetypes == {"mp3", "opus"}
    assert s.rate("token_rate_limit") == Rate(10, 60.0) and s.rate("tx_rate_limit") is None


def test_environment_then_flags():
    env = {"PLAUD_SANDBOX_PORT": "9000", "PLAUD_SANDBOX_FAULT_5XX": "0.25", "PLAUD_SANDBOX_API_KEY": "k"}
    s = SandboxSettings.from_env(env, port=9100, api_key=None)
    assert (s.port, s.fault_5xx, s.api_key) == (9100, 0.25, "k")


@pytest.mark.parametrize("env, words", [
    ({"PLAUD_SANDBOX_PORT": "eighty"}, "PLAUD_SANDBOX_PORT must be a int"),
    ({"PLAUD_SANDBOX_FAULT_DROP": "1.5"}, "fault_drop must be a probability"),
    ({"PLAUD_SANDBOX_TX_RATE_LIMIT": "lots"}, "tx_rate_limit"),
    ({"PLAUD_SANDBOX_CHUNK_SIZE_BYTES": "0"}, "chunk_size_bytes must be positive"),
    ({"PLAUD_SANDBOX_ACCEPTED_FILETYPES": " , "}, "accepted_filetypes"),
])
def test_bad_values_name_the_setting(env, words):
    with pytest.raises(SettingsError, match=words.replace("(", r"\(")):
        SandboxSettings.from_env(env)


@pytest.mark.parametrize("text, rate", [("10/m", Rate(10, 60)), ("60/min", Rate(60, 60)), ("5 / s", Rate(5, 1)),
                                        ("100/h", Rate(100, 3600))])
def test_rate_parse(text, rate):
    assert Rate.parse(text) == rate


@pytest.mark.parametrize("text", ["10", "0/m", "ten/m", "10/d"])
def test_rate_parse_refuses(text):
    with pytest.raises(ValueError):
        Rate.parse(text)


def test_runtime_update_refuses_start_only_and_unknown_fields():
    s = SandboxSettings()
    assert s.updated({"fault_5xx": "0.5"}).fault_5xx == 0.5
    with pytest.raises(SettingsError, match="fixed at start"):
        s.updated({"port": 1})
    with pytest.raises(SettingsError, match="unknown setting"):
        s.updated({"bogus": 1})
    with pytest.raises(SettingsError, match="must be a int"):
        s.updated({"presign_ttl_s": True})


def test_sliding_window_limiter():
    limiter = KeyedLimiter(Rate(2, 10.0))
    assert limiter.acquire("a", 0.0) is None and limiter.acquire("a", 1.0) is None
    assert limiter.acquire("a", 2.0) == pytest.approx(8.0)
    assert limiter.acquire("b", 2.0) is None  # per key
    assert limiter.acquire("a", 10.5) is None  # the first hit left the window
    assert KeyedLimiter(None).acquire("a", 0.0) is None


def test_fault_stream_depends_only_on_the_seed():
    settings = SandboxSettings(fault_seed=3, fault_5xx=0.3, fault_drop=0.1)
    kinds = [FaultInjector(settings).decide().kind for _ in range(1)]
    first = FaultInjector(settings)
    second = FaultInjector(settings)
    a = [first.decide().kind for _ in range(200)]
    assert a == [second.decide().kind for _ in range(200)]
    assert 0.15 < a.count("5xx") / 200 < 0.45 and a.count("drop") > 0
    assert kinds[0] == a[0]


def test_no_faults_by_default():
    injector = FaultInjector(SandboxSettings())
    assert {injector.decide().kind for _ in range(100)} == {"none"}
    assert not any(injector.task_fails() for _ in range(100))
