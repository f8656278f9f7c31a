"""The client under faults, crashes, expired URLs and revoked tokens, against the sandbox."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import subprocess
import sys
import time

import pytest

from plaud.client import PlaudClient
from plaud.retry import RetryPolicy
from plaud.sandbox.signing import Signer
from plaud.upload import UploadProgress
from tasks import names

CHUNK = 64 * 1024


class Crash(Exception):
    """Stands for a worker dying mid-upload."""


def crash_after(parts: int, saved: dict):
    """A checkpoint callback that saves progress, then dies after ``parts`` parts; dead, it saves nothing."""

    def checkpoint(progress: UploadProgress) -> None:
        if "crashed" in saved:
            return
        saved["progress"] = progress.to_dict()
        if len(progress.etags) == parts:
            saved["crashed"] = True
            raise Crash()

    return checkpoint


def recording(tmp_path, name, parts=4, seed=0):
    data = b"ID3" + hashlib.sha256(f"{name}{seed}".encode()).digest() * ((CHUNK * parts - CHUNK // 3) // 32)
    path = tmp_path / name
    path.write_bytes(data)
    return str(path), data


def test_50_uploads_through_5xx_429_and_dropped_connections(plaud_config, redis_client, api, configure, tmp_path):
    configure(chunk_size_bytes=CHUNK, fault_seed=11, fault_5xx=0.10, fault_429=0.025, fault_429_bare=0.025,
              fault_drop=0.02)
    client = PlaudClient(plaud_config, redis=redis_client, policy=RetryPolicy(attempts=10, base_s=0.05, cap_s=1.0))
    files = [recording(tmp_path, f"r{i}.mp3", parts=1 + i % 4, seed=i) for i in range(50)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda f: client.upload(f[0]), files))
    assert [r.file_md5 for r in results] == [hashlib.md5(data).hexdigest() for _, data in files]
    stats = api.stats()
    assert stats["uploads_completed"] == 50
    faults = {status: n for endpoint in stats["requests"].values() for status, n in endpoint.items()}
    assert faults.get("dropped", 0) > 0 and faults.get("429", 0) > 0
    assert sum(n for status, n in faults.items() if status.startswith("5")) > 0
    assert stats["partner_tokens_issued"] == 1


def test_resume_sends_only_the_missing_parts(plaud_config, redis_client, api, configure, tmp_path):
    configure(chunk_size_bytes=CHUNK)
    path, data = recording(tmp_path, "long.mp3", parts=8)
    saved = {}
    one_at_a_time = PlaudClient(dataclass_replace(plaud_config, parallel_parts=1), redis=redis_client)
    with pytest.raises(Crash):
        one_at_a_time.upload(path, on_checkpoint=crash_after(3, saved))
    assert api.stats()["part_uploads"] == 3

    resumed = PlaudClient(plaud_config, redis=redis_client).upload(
        path, progress=UploadProgress.from_dict(saved["progress"]))
    assert resumed.parts_reused == 3 and resumed.parts_sent == 5
    assert resumed.file_md5 == hashlib.md5(data).hexdigest()
    stats = api.stats()
    assert stats["part_uploads"] == 8  # no finished part went up twice
    assert stats["uploads_started"] == 1 and stats["uploads_completed"] == 1


def test_a_crash_with_parts_in_flight_resends_at_most_those(plaud_config, redis_client, api, configure, tmp_path):
    configure(chunk_size_bytes=CHUNK, fault_latency_ms=30)
    path, data = recording(tmp_path, "long.mp3", parts=12)
    saved = {}
    client = PlaudClient(plaud_config, redis=redis_client)
    with pytest.raises(Crash):
        client.upload(path, on_checkpoint=crash_after(5, saved))
    sent_before = api.stats()["part_uploads"]
    resumed = client.upload(path, progress=UploadProgress.from_dict(saved["progress"]))
    assert resumed.file_md5 == hashlib.md5(data).hexdigest()
    assert resumed.parts_reused == 5
    assert api.stats()["part_uploads"] == sent_before + 7
    assert sent_before - 5 <= client.config.parallel_parts - 1  # only parts in flight at the crash are repeated


def test_expired_part_urls_start_the_upload_over(plaud_config, redis_client, api, configure, tmp_path):
    # X-Amz-Date has whole seconds, as in S3: 2 s leaves the restarted upload at least 1 s to finish.
    configure(chunk_size_bytes=CHUNK, presign_ttl_s=2)
    path, data = recording(tmp_path, "slow.mp3", parts=4)
    saved = {}
    client = PlaudClient(plaud_config, redis=redis_client)
    with pytest.raises(Crash):
        client.upload(path, on_checkpoint=crash_after(1, saved))
    time.sleep(2.1)  # the saved part URLs are now expired
    result = client.upload(path, progress=UploadProgress.from_dict(saved["progress"]))
    assert result.restarts == 1 and result.file_md5 == hashlib.md5(data).hexdigest()
    stats = api.stats()
    assert stats["uploads_started"] == 2 and stats["uploads_completed"] == 1
    assert stats["requests"]["part_upload"].get("403", 0) >= 1


def test_revoked_tokens_are_replaced_once(plaud_config, redis_client, api, sandbox, tmp_path, configure):
    configure(chunk_size_bytes=CHUNK)
    path, data = recording(tmp_path, "a.mp3", parts=2)
    client = PlaudClient(plaud_config, redis=redis_client)
    client.upload(path)
    # The sandbox forgets its signing key: every cached token is now refused with 401.
    sandbox.call(lambda: setattr(sandbox.running.ctx, "signer", Signer.random()))
    result = client.upload(path)
    assert result.file_md5 == hashlib.md5(data).hexdigest()
    stats = api.stats()
    assert stats["partner_tokens_issued"] == 2 and stats["user_tokens_issued"] == 2
    assert stats["requests"]["user_token"] == {"200": 2, "401": 1}


def test_tokens_in_redis_are_sealed(plaud_config, redis_client, tmp_path, configure):
    configure(chunk_size_bytes=CHUNK)
    path, _ = recording(tmp_path, "a.mp3", parts=1)
    PlaudClient(plaud_config, redis=redis_client).upload(path)
    values = [redis_client.get(key) for key in redis_client.keys(names.TOKEN_PREFIX + "*")]
    assert len(values) == 2
    for value in values:
        assert value.startswith(b"sealed:v1:") and b"eyJ" not in value


def test_processes_share_one_partner_token(sandbox, redis_server, redis_client, api, configure, tmp_path):
    configure(chunk_size_bytes=CHUNK)
    path, _ = recording(tmp_path, "shared.mp3", parts=2)
    env = {**os.environ, "PLAUD_BASE_URL": sandbox.base_url, "REDIS_URL": redis_server.url}
    cmd = [sys.executable, "-m", "bench.token_sharing", "--child", "--uploads", "3", path]
    procs = [subprocess.Popen(cmd, env=env) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    stats = api.stats()
    assert stats["uploads_completed"] == 12
    assert stats["partner_tokens_issued"] == 1


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)
