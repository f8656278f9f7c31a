"""Shared fixtures: one sandbox per test session, reset and reconfigured for each test."""

from __future__ import annotations

import dataclasses

import pytest
import redis

from plaud.config import PlaudConfig
from plaud.sandbox import SandboxSettings, SandboxThread
from plaud.sandbox.testaudio import make_recording
from tests.helpers import SandboxApi
from workers.local_redis import RedisServer

# Fast defaults for tests: tasks finish within a fraction of a second of audio-free time.
TEST_SETTINGS = SandboxSettings(port=0, processing_base_s=0.2, processing_rtf=0.0)


@pytest.fixture(scope="session")
def sandbox_thread():
    with SandboxThread(TEST_SETTINGS) as sb:
        yield sb


@pytest.fixture
def sandbox(sandbox_thread):
    """The session's sandbox, with fresh state and the test settings restored."""
    sandbox_thread.call(lambda: sandbox_thread.running.ctx.apply(TEST_SETTINGS))
    sandbox_thread.call(sandbox_thread.running.ctx.reset)
    yield sandbox_thread


@pytest.fixture
def configure(sandbox):
    """Change sandbox settings for one test: ``configure(fault_5xx=0.1)``."""

    def apply(**changes):
        ctx = sandbox.running.ctx
        sandbox.call(lambda: ctx.apply(dataclasses.replace(ctx.settings, **changes)))

    return apply


@pytest.fixture
def api(sandbox):
    return SandboxApi(sandbox.base_url, sandbox.settings)


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="session")
def speech_mp3(audio_dir):
    """12 s, two speakers, tagged text."""
    return make_recording(str(audio_dir / "speech.mp3"), 12.0, speakers=2, seed=5,
                          text="The quick brown fox jumps over the lazy dog while the sandbox listens.")


@pytest.fixture(scope="session")
def untagged_mp3(audio_dir):
    return make_recording(str(audio_dir / "untagged.mp3"), 6.0, seed=2)


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_client(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def plaud_config(sandbox):
    """Client settings pointing at the test sandbox."""
    return PlaudConfig.sandbox(sandbox.base_url)
