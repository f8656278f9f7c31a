"""``plaud-workers up`` as a person runs it: the stack comes up, the printed ways to enqueue work,
Flower opens with the printed password, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import requests

from tasks import names
from tasks.settings import PipelineSettings
from tests.browser import ARTIFACTS, render, table_rows
from workers.local_redis import free_port
from workers.local_stack import redis_answers

STAGES = (names.UPLOAD, names.SUBMIT, names.POLL, names.DELIVER)


class Output:
    """The lines a process prints, read in a thread so that waiting for one never blocks."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self.thread = threading.Thread(target=self.read, args=(proc.stdout,), daemon=True)
        self.thread.start()

    def read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, proc: subprocess.Popen[str], timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            match = re.search(pattern, self.text, flags=re.M)
            if match:
                return match
            assert proc.poll() is None, f"up exited with {proc.returncode}:\n{self.text}"
            assert time.monotonic() < deadline, f"no {pattern!r} after {timeout_s} s:\n{self.text}"
            time.sleep(0.2)


def descendants(root: int) -> dict[int, str]:
    """Every process under ``root`` (children, their children, …), by pid, with its start time."""
    parents: dict[int, int] = {}
    started: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)], started[int(entry)] = int(fields[1]), fields[19]
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = started[pid]
                frontier.append(pid)
    return found


def still_running(pid: int, start_time: str) -> bool:
    """The same process (not a reused pid), alive and not a zombie."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == start_time and fields[0] != "Z"


def run_printed(line: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """A command line as printed: leading NAME=value words are its environment."""
    words = shlex.split(line)
    env = dict(os.environ)
    while "=" in words[0] and not words[0].startswith("/"):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    return subprocess.run(words, env=env, capture_output=True, text=True, timeout=timeout_s)


def test_up_runs_the_stack_and_ctrl_c_leaves_nothing_behind(tmp_path):
    # Nothing listens at REDIS_URL, so up starts a private redis-server; no PLAUD_*: the sandbox.
    env = {name: value for name, value in os.environ.items() if not name.startswith(("PLAUD_", "CELERY_"))}
    env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    flower_port, metrics_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "up", "--workers", "2", "--flower-port",
                             str(flower_port), "--metrics-port", str(metrics_port), "--stop-grace-s", "20"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    out = Output(proc)
    started: dict[int, str] = {}
    try:
        out.wait_for(r"^  node -e ", proc, timeout_s=240)
        text = out.text
        redis_url = re.search(r"^  redis    (\S+) \(private", text, flags=re.M).group(1)
        assert redis_url != env["REDIS_URL"]
        flower = re.search(r"^  flower   (http://\S+)  user (\S+)  password (\S+)$", text, flags=re.M)
        flower_url, user, password = flower.groups()
        assert flower_url == f"http://127.0.0.1:{flower_port}"
        printed_pids = {int(p) for p in re.search(r"^  pids     ([\d ]+)$", text, flags=re.M).group(1).split()}
        started = descendants(proc.pid)  # workers with their pool children, beat, Flower, Redis
        assert printed_pids <= set(started) and len(started) >= len(printed_pids) + 4, (printed_pids, started)
        # The exporter answers where printed, and sees the workers up has started.
        scraped = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert f"  metrics  http://127.0.0.1:{metrics_port}/metrics" in text
        assert scraped.status_code == 200 and 'plaud_exporter_redis_up 1.0' in scraped.text

        # Enqueue as printed: the command line, then a bare Celery client in Python, which prints the text.
        transcribe = re.search(r"^  (REDIS_URL=\S+ \S+ transcribe .*--wait)$", text, flags=re.M).group(1)
        done = run_printed(transcribe)
        assert done.returncode == 0 and "1 succeeded" in done.stdout, done.stdout + done.stderr
        python = re.search(r"^  (\S+ -c 'from celery import Celery.*)$", text, flags=re.M).group(1)
        done = run_printed(python)
        assert done.returncode == 0 and "Welcome to plaud-workers" in done.stdout, done.stdout + done.stderr
        recording_id = re.search(r'"recording_id": "([^"]+)"', python).group(1)
        assert recording_id.startswith("try-py-")

        # Flower with the printed password: the recording's tasks, each with its id beside it.
        assert requests.get(f"{flower_url}/api/tasks", timeout=10).status_code == 401
        tasks = requests.get(f"{flower_url}/api/tasks", auth=(user, password), timeout=10).json()
        mine = {t["name"] for t in tasks.values() if recording_id in str(t.get("args"))}
        assert set(STAGES) <= mine, tasks
        os.makedirs(ARTIFACTS, exist_ok=True)
        shot = os.path.join(ARTIFACTS, "up-flower-tasks.png")
        dom = render(flower_url.replace("http://", f"http://{user}:{password}@") + "/tasks", screenshot=shot)
        rows = table_rows(dom)
        for name in STAGES:
            assert [row for row in rows if name in row and recording_id in row], (name, rows, dom[-3000:])
        assert os.path.getsize(shot) > 10_000
    finally:
        if proc.poll() is None:
            started = started or descendants(proc.pid)
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        out.thread.join(timeout=10)
        left = {pid: open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
                for pid, start in started.items() if still_running(pid, start)}
        for pid in left:  # never leave them to the next test
            os.kill(pid, signal.SIGKILL)
    assert code == 0, out.text
    assert not left, f"left running after Ctrl-C: {left}\n{out.text}"
    assert "stopped; the logs stay in" in out.text
    assert not redis_answers(PipelineSettings(redis_url=redis_url))
