"""Flower in a real headless browser: log in, see the recording's tasks by its id, and no secret in them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from tasks import names
from tests.browser import ARTIFACTS, render, table_rows
from tests.helpers import outcome, wait_http_ok
from workers.flower_view import flower_environment
from workers.local_redis import free_port

USER, PASSWORD = "admin", "flower-test-password"
STAGES = (names.UPLOAD, names.SUBMIT, names.POLL, names.DELIVER)


@pytest.fixture
def flower(pipeline, tmp_path):
    port = free_port()
    env = {**os.environ, **pipeline.env, **flower_environment(port=port, user=USER, password=PASSWORD),
           "FLOWER_PERSISTENT": "True", "FLOWER_DB": str(tmp_path / "flower.db")}
    log = open(tmp_path / "flower.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", "flower"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{url}/healthcheck", explain=lambda: open(tmp_path / "flower.log").read()[-2000:])
    time.sleep(2)  # Flower subscribes to worker events after it starts serving
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def reconciler_ticks(pipeline) -> int:
    """How often the pipeline worker's beat (-B) has sent the reconciler's tick, from its log."""
    return sum(w.log_text().count("Sending due task plaud-reconcile") for w in pipeline.workers)


def test_flower_shows_the_recordings_tasks_and_no_secret(pipeline, flower, good_files, file_server):
    directory, origin = file_server
    path, text = good_files[0]
    (directory / "flower.mp3").write_bytes(open(path, "rb").read())
    recording_id = f"flower-{time.time_ns()}"
    ticks_before = reconciler_ticks(pipeline)
    handle = pipeline.send(source=f"{origin}/flower.mp3?X-Amz-Signature=flowersecret123", recording_id=recording_id)
    assert outcome(handle)["text"] == text
    assert requests.get(f"{flower}/tasks", timeout=10).status_code == 401  # basic auth is on

    # What Flower knows, through its API: the recording's stages, each by name and state. The
    # entry task's id is carried by the chain's last task, so it ends as plaud.deliver.
    tasks = requests.get(f"{flower}/api/tasks", auth=(USER, PASSWORD), timeout=10).json()
    mine = {t["name"]: t for t in tasks.values() if recording_id in str(t.get("args"))}
    assert set(STAGES) <= set(mine), tasks
    assert all(t["state"] == "SUCCESS" for t in mine.values())
    assert tasks[handle.id]["name"] == names.DELIVER and tasks[handle.id]["state"] == "SUCCESS"
    assert "flowersecret123" not in str(tasks)
    # The reconciler ticks every second here (PLAUD_RECONCILE_EVERY_S=1) and Flower sees none of it.
    deadline = time.monotonic() + 30
    while reconciler_ticks(pipeline) < ticks_before + 2:
        assert time.monotonic() < deadline, "beat sent no reconciler tick while Flower watched"
        time.sleep(0.2)
    tasks = requests.get(f"{flower}/api/tasks", auth=(USER, PASSWORD), timeout=10).json()
    assert not [t for t in tasks.values() if t["name"] == names.RECONCILE], tasks

    # The same in the browser: log in, let the AJAX rows load, and look.
    authed = flower.replace("http://", f"http://{USER}:{PASSWORD}@")
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, "flower-tasks.png")
    dom = render(f"{authed}/tasks", screenshot=shot)
    # Each of the recording's tasks is a row that shows its name and the recording id side by side.
    rows = table_rows(dom)
    for name in STAGES:
        assert [row for row in rows if name in row and recording_id in row], (name, rows, dom[-3000:])
    assert handle.id in dom and "SUCCESS" in dom
    assert "flowersecret123" not in dom
    assert os.path.getsize(shot) > 10_000
    detail = render(f"{authed}/task/{mine[names.UPLOAD]['uuid']}")
    assert recording_id in detail and "flowersecret123" not in detail
