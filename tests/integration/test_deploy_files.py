"""The compose file and Dockerfile, checked the way we can without a Docker engine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import requests
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _dockerfile_entrypoint() -> list[str]:
    text = open(os.path.join(ROOT, "deploy", "Dockerfile")).read()
    match = re.search(r"^ENTRYPOINT (.+)$", text, re.M)
    assert match, "the Dockerfile has no ENTRYPOINT"
    return json.loads(match.group(1))  # exec form: a JSON array, so signals reach the process


def test_compose_sandbox_command_serves_the_api():
    compose = yaml.safe_load(open(os.path.join(ROOT, "docker-compose.yml")))
    service = compose["services"]["sandbox"]
    entrypoint = _dockerfile_entrypoint()
    assert entrypoint == ["plaud-workers"]
    # Same command, but on loopback and a free port: this machine is not a container.
    cmd = [sys.executable, "-m", "workers.cli", *service["command"], "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        origin = re.search(r"(http://\S+?)/developer/api", line).group(1)  # printed once bound
        assert requests.get(f"{origin}/healthz", timeout=5).json() == {"ok": True}
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0

