"""docker-compose.yml, run without Docker: each service's own command and environment, locally.

There is no Docker engine on these machines, so this starts what every compose service would
run (Redis with its flags and password, the sandbox, a worker per role, beat, Flower) as local
processes wired the way compose wires them, and sends a recording through.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
import requests
import yaml
from celery import Celery

from plaud.sandbox import SandboxProcess
from tasks import names
from tests.helpers import outcome, wait_http_ok
from workers.flower_view import TASKS_COLUMNS
from workers.local_redis import RedisServer, free_port
from workers.local_stack import WorkerProcess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The innermost ${VAR} or ${VAR:-default}: substituted repeatedly, so nested defaults work as in compose.
VAR = re.compile(r"\$\{(\w+)(?::-([^${}]*))?\}")


def dotenv(path: str) -> dict[str, str]:
    values = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def interpolate(value, env):
    if isinstance(value, str):
        while (done := VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)) != value:
            value = done
        return value
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose():
    env = dotenv(os.path.join(ROOT, ".env.example"))
    return interpolate(yaml.safe_load(open(os.path.join(ROOT, "docker-compose.yml"))), env), env


def test_compose_shape(compose):
    services = compose[0]["services"]
    assert {"redis", "sandbox", "worker-api", "worker-uploads", "worker-polls", "beat", "flower",
            "exporter"} <= set(services)
    for name, service in services.items():
        assert "container_name" not in service, f"{name} could not be scaled"
        if name.startswith("worker-"):
            assert "ports" not in service and service["stop_grace_period"] == "2m"
    queues = ",".join(services[n]["command"][2] for n in ("worker-api", "worker-uploads", "worker-polls"))
    assert set(queues.split(",")) == set(names.WORKER_QUEUES)
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "noeviction" in redis_command and "--requirepass" in redis_command
    assert services["flower"]["environment"]["FLOWER_PERSISTENT"] == "True"
    assert services["worker-api"]["environment"]["REDIS_URL"] == \
        f"redis://:{compose[1]['REDIS_PASSWORD']}@redis:6379/0"  # without the "ha" profile's REDIS_URL


def test_the_ha_profile_has_a_replica_and_three_sentinels_watching_the_redis_service(compose):
    services = compose[0]["services"]
    ha = {name for name, service in services.items() if "ha" in service.get("profiles", ())}
    assert ha == {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    replica = " ".join(services["redis-replica"]["command"])
    assert "--replicaof redis 6379" in replica and "--masterauth" in replica and "--requirepass" in replica
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        script = services[name]["command"][0]
        assert "sentinel monitor plaud redis 6379 2" in script and "--sentinel" in script
        assert services[name]["volumes"] == [f"{name}-data:/data"]  # each keeps what it learned
    example = open(os.path.join(ROOT, ".env.example")).read()
    assert "# REDIS_URL=\"sentinel://:${REDIS_PASSWORD}@sentinel-1:26379/0;" in example
    assert "# PLAUD_SENTINEL_MASTER=plaud" in example and "# COMPOSE_PROFILES=ha" in example
    assert services["flower"]["environment"]["FLOWER_TASKS_COLUMNS"] == TASKS_COLUMNS  # the recording id shows


def test_the_compose_services_run_a_recording_through(compose, tmp_path, good_files):
    spec, dotenv_values = compose
    services = spec["services"]
    password = dotenv_values["REDIS_PASSWORD"]
    redis_args = services["redis"]["command"][1:]
    server = RedisServer(*redis_args, password=password)
    server.dir = str(tmp_path / "redis")
    os.makedirs(server.dir)
    started = []
    try:
        server.start()
        redis_url = server.url
        assert server.url.startswith(f"redis://:{password}@")
        sandbox_cmd = services["sandbox"]["command"][1:]  # without the "sandbox" subcommand
        sandbox = SandboxProcess(*sandbox_cmd, "--host", "127.0.0.1", "--port", "0").start()
        started.append(sandbox)

        def env_of(name):
            env = dict(dotenv_values)
            env.update(services[name].get("environment") or {})
            env["REDIS_URL"] = env["REDIS_URL"].replace("@redis:6379", f"@127.0.0.1:{server.port}")
            env["PLAUD_SANDBOX_URL"] = env["PLAUD_SANDBOX_URL"].replace("http://sandbox:8765", sandbox.origin)
            env["PLAUD_WEBHOOK_ALLOW_PRIVATE"] = "true"
            return env

        for name in ("worker-api", "worker-uploads", "worker-polls"):
            command = services[name]["command"]
            assert command[0] == "worker"
            queues = tuple(command[command.index("-Q") + 1].split(","))
            worker = WorkerProcess(env_of(name), queues=queues, concurrency=int(command[command.index("-c") + 1]),
                                   pool=command[command.index("-P") + 1],
                                   name=name, logfile=str(tmp_path / f"{name}.log")).start()
            started.append(worker)

        beat_cmd = [sys.executable, "-m", *services["beat"]["entrypoint"], *services["beat"]["command"]]
        beat_cmd[beat_cmd.index("--schedule") + 1] = str(tmp_path / "beat-schedule")
        beat = subprocess.Popen(beat_cmd, env={**os.environ, **env_of("beat")}, stdout=subprocess.DEVNULL,
                                stderr=open(tmp_path / "beat.log", "w"))
        started.append(beat)

        flower_env = env_of("flower")
        flower_port = free_port()
        flower_env.update(FLOWER_PORT=str(flower_port), FLOWER_DB=str(tmp_path / "flower.db"),
                          FLOWER_ADDRESS="127.0.0.1")
        flower = subprocess.Popen([sys.executable, "-m", *services["flower"]["entrypoint"]],
                                  env={**os.environ, **flower_env}, stdout=subprocess.DEVNULL,
                                  stderr=open(tmp_path / "flower.log", "w"))
        started.append(flower)

        exporter_cmd = list(services["exporter"]["command"])
        assert exporter_cmd[0] == "metrics"
        exporter_port = free_port()
        exporter_cmd[exporter_cmd.index("--port") + 1] = str(exporter_port)
        exporter = subprocess.Popen([sys.executable, "-m", "workers.cli", *exporter_cmd],
                                    env={**os.environ, **env_of("exporter")}, stdout=subprocess.DEVNULL,
                                    stderr=open(tmp_path / "exporter.log", "w"))
        started.append(exporter)

        client = Celery(broker=redis_url, backend=redis_url)
        path, text = good_files[3]
        handle = client.send_task(names.TRANSCRIBE,
                                  kwargs={"source": path, "recording_id": f"compose-{time.time_ns()}"})
        assert outcome(handle, timeout_s=90)["text"] == text

        flower_url = f"http://127.0.0.1:{flower_port}"
        wait_http_ok(f"{flower_url}/healthcheck", explain=lambda: open(tmp_path / "flower.log").read()[-2000:])
        assert requests.get(f"{flower_url}/api/workers", timeout=10).status_code == 401
        user, secret = dotenv_values["FLOWER_BASIC_AUTH"].split(":", 1)
        assert requests.get(f"{flower_url}/api/workers", auth=(user, secret), timeout=10).status_code == 200
        assert beat.poll() is None, open(tmp_path / "beat.log").read()[-2000:]
        metrics_url = f"http://127.0.0.1:{exporter_port}/metrics"
        wait_http_ok(metrics_url, explain=lambda: open(tmp_path / "exporter.log").read()[-2000:])
        scraped = requests.get(metrics_url, timeout=10).text
        assert 'plaud_recordings_ended_total{state="SUCCEEDED",tenant="default"} 1.0' in scraped
    finally:
        for process in reversed(started):
            if isinstance(process, subprocess.Popen):
                process.terminate()
                process.wait(timeout=30)
            else:
                process.stop()
        server.cleanup()
