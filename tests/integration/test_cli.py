"""The command line, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import requests

from plaud.sandbox import SandboxProcess, admin
from plaud.sandbox.audio import analyse
from tasks import names

CLI = [sys.executable, "-m", "workers.cli"]


def test_sandbox_command_prints_what_a_worker_needs():
    with SandboxProcess("--api-key", "k-123", env={"PLAUD_SANDBOX_CLIENT_ID": "env-client"}) as sb:
        assert requests.get(f"{sb.origin}/healthz", timeout=10).json() == {"ok": True}
        assert admin(sb.origin, "config")["client_id"] == "env-client"
        r = requests.post(f"{sb.base_url}/oauth/partner/access-token", auth=("env-client", "sandbox-secret-key"),
                          timeout=10)
        assert r.status_code == 200
        assert admin(sb.origin, "stats")["partner_tokens_issued"] == 1
    assert sb.proc.returncode == 0  # stopped cleanly on SIGTERM


def test_sandbox_command_prints_the_environment():
    proc = subprocess.Popen([*CLI, "sandbox", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(8)]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    text = "".join(lines)
    assert "listening on http://127.0.0.1:" in text
    for name in ("PLAUD_BASE_URL", "PLAUD_CLIENT_ID", "PLAUD_SECRET_KEY", "PLAUD_API_KEY", "PLAUD_USER_ID"):
        assert f"export {name}=" in text


def test_sandbox_command_rejects_a_bad_setting():
    r = subprocess.run([*CLI, "sandbox", "--fault-5xx", "3"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "fault_5xx must be a probability" in r.stderr


def test_make_audio(tmp_path):
    path = tmp_path / "meeting.mp3"
    r = subprocess.run([*CLI, "make-audio", str(path), "--duration-s", "8", "--speakers", "2", "--text", "hi there"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    analysis = analyse(str(path))
    assert analysis.tag_text == "hi there" and len(analysis.speaker_pitches_hz) == 2


def test_demo_runs_the_pipeline_on_the_bundled_samples(redis_server):
    env = {**os.environ, "REDIS_URL": redis_server.url.replace("/0", "/3")}  # never the machine's Redis
    r = subprocess.run([*CLI, "demo", "--timeout-s", "90"], capture_output=True, text=True, timeout=150, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "welcome.mp3: SUCCEEDED" in r.stdout and "interview.mp3: SUCCEEDED" in r.stdout
    assert "Welcome to plaud-workers." in r.stdout
    assert "Speaker 2" in r.stdout
    assert f"redis {env['REDIS_URL']}" in r.stdout


def test_demo_starts_a_private_redis_when_none_answers():
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing listens on port 1
    r = subprocess.run([*CLI, "demo", "--timeout-s", "90"], capture_output=True, text=True, timeout=150, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(private)" in r.stdout and "welcome.mp3: SUCCEEDED" in r.stdout


def test_a_worker_without_credentials_refuses_to_start(tmp_path):
    from workers.local_stack import WorkerProcess

    worker = WorkerProcess({"PLAUD_REGION": "us", "REDIS_URL": "redis://127.0.0.1:1/0"},
                           logfile=str(tmp_path / "w.log"))
    try:
        worker.start(ready_timeout_s=60)
    except RuntimeError as exc:
        assert "PLAUD_CLIENT_ID, PLAUD_SECRET_KEY, PLAUD_API_KEY must be set" in str(exc)
        assert worker.proc.returncode != 0
    else:
        worker.stop()
        raise AssertionError("the worker started without credentials")


def test_the_worker_command_names_the_unavailable_region():
    r = subprocess.run([*CLI, "worker"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PLAUD_REGION": "eu", "PLAUD_CLIENT_ID": "c", "PLAUD_SECRET_KEY": "s",
                            "PLAUD_API_KEY": "k"})
    assert r.returncode == 1 and "coming soon" in r.stderr


def test_plaud_workers_worker_starts_a_worker(sandbox, redis_server, tmp_path):
    from plaud.sandbox import worker_environment

    log = tmp_path / "worker.log"
    env = {**os.environ, **worker_environment(sandbox.running), "REDIS_URL": redis_server.url.replace("/0", "/4")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CLI, "worker", "-Q", names.API_QUEUE, "-c", "1"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert "talking to the local sandbox" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
