"""Flower in a real headless browser: log in, see the recording's tasks, and no secret in them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import requests

from tests.helpers import outcome, wait_http_ok
from workers.local_redis import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARTIFACTS = os.path.join(ROOT, "test-artifacts")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--virtual-time-budget=8000"]
USER, PASSWORD = "admin", "flower-test-password"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    return path


@pytest.fixture
def flower(pipeline, tmp_path):
    port = free_port()
    env = {**os.environ, **pipeline.env, "FLOWER_PORT": str(port), "FLOWER_ADDRESS": "127.0.0.1",
           "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}", "FLOWER_PERSISTENT": "True",
           "FLOWER_DB": str(tmp_path / "flower.db")}
    log = open(tmp_path / "flower.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", "flower"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{url}/healthcheck", explain=lambda: open(tmp_path / "flower.log").read()[-2000:])
    time.sleep(2)  # Flower subscribes to worker events after it starts serving
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def render(url: str, screenshot: str | None = None) -> str:
    with tempfile.TemporaryDirectory() as profile:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000"]
        if screenshot:
            subprocess.run([chromium(), *flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=90)
        done = subprocess.run([chromium(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    return done.stdout


def test_flower_shows_the_recordings_tasks_and_no_secret(pipeline, flower, good_files, file_server):
    directory, origin = file_server
    path, text = good_files[0]
    (directory / "flower.mp3").write_bytes(open(path, "rb").read())
    recording_id = f"flower-{time.time_ns()}"
    handle = pipeline.send(source=f"{origin}/flower.mp3?X-Amz-Signature=flowersecret123", recording_id=recording_id)
    assert outcome(handle)["text"] == text
    assert requests.get(f"{flower}/tasks", timeout=10).status_code == 401  # basic auth is on

    # What Flower knows, through its API: the recording's stages, each by name and state. The
    # entry task's id is carried by the chain's last task, so it ends as plaud.deliver.
    tasks = requests.get(f"{flower}/api/tasks", auth=(USER, PASSWORD), timeout=10).json()
    mine = {t["name"]: t for t in tasks.values() if recording_id in str(t.get("args"))}
    assert {"plaud.upload", "plaud.submit", "plaud.poll", "plaud.deliver"} <= set(mine), tasks
    assert all(t["state"] == "SUCCESS" for t in mine.values())
    assert tasks[handle.id]["name"] == "plaud.deliver" and tasks[handle.id]["state"] == "SUCCESS"
    assert "flowersecret123" not in str(tasks)

    # The same in the browser: log in, let the AJAX rows load, and look.
    authed = flower.replace("http://", f"http://{USER}:{PASSWORD}@")
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, "flower-tasks.png")
    dom = render(f"{authed}/tasks", screenshot=shot)
    for name in ("plaud.upload", "plaud.submit", "plaud.poll", "plaud.deliver"):
        assert name in dom, dom[-3000:]
    assert handle.id in dom and "SUCCESS" in dom
    assert "flowersecret123" not in dom
    assert os.path.getsize(shot) > 10_000
    detail = render(f"{authed}/task/{mine['plaud.upload']['uuid']}")
    assert recording_id in detail and "flowersecret123" not in detail
