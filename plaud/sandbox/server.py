"""Routes, the admin endpoints, and the ways to run the sandbox.

- ``serve(settings)`` runs it in the foreground (``plaud-workers sandbox``).
- ``SandboxThread`` runs it in a thread of the current process (test fixtures).
- ``SandboxProcess`` runs it as a subprocess on a free port (benchmarks, or where its memory
  must be measured apart from the caller's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from ..processes import stop_process
from . import api, storage
from .base import JSON_BODY_MAX_BYTES, ApiError, JsonHandler, NotFoundHandler, SandboxContext
from .settings import SandboxSettings, SettingsError
from .state import SandboxState

API_PREFIX = "/developer/api"
READY_LINE_RE = re.compile(r"listening on (http://\S+?)/developer/api")


class StatsHandler(JsonHandler):
    endpoint = "sandbox_stats"
    faultable = False

    def get(self) -> None:
        self.write_json(self.state.stats.as_json())


class TxArrivalsHandler(JsonHandler):
    """When each Transcription API request arrived (the latest 50,000) and which ones got a 429."""

    endpoint = "sandbox_tx_arrivals"
    faultable = False

    def get(self) -> None:
        self.write_json(self.state.stats.tx_arrivals_json())


class ResetHandler(JsonHandler):
    endpoint = "sandbox_reset"
    faultable = False

    def post(self) -> None:
        self.ctx.reset()
        self.write_json({"reset": True})


class ConfigHandler(JsonHandler):
    endpoint = "sandbox_config"
    faultable = False

    def get(self) -> None:
        self.write_json(self.ctx.settings.public())

    def patch(self) -> None:
        try:
            self.ctx.apply(self.ctx.settings.updated(self.json_body()))
        except SettingsError as exc:
            raise ApiError(400, "PARAMS_INVALID", str(exc)) from None
        self.write_json(self.ctx.settings.public())


class TranscriptionsHandler(JsonHandler):
    """When each transcription was created and when it finishes: what benchmarks measure delays from."""

    endpoint = "sandbox_transcriptions"
    faultable = False

    def get(self) -> None:
        s = self.settings_
        timings = {}
        for tx in self.state.transcriptions.values():
            processing_s = tx.processing_s(s.processing_base_s, s.processing_rtf)
            timings[tx.transcription_id] = {
                "created_at": tx.created_at, "md5": tx.md5_hex, "failed": tx.forced_failure or tx.error is not None,
                "finishes_at": None if processing_s is None
                else max(tx.created_at + processing_s, tx.analyzed_at or 0.0)}
        self.write_json(timings)


class IssuedHandler(JsonHandler):
    """Every token and presigned-URL signature handed out: for audits that look for leaks."""

    endpoint = "sandbox_issued"
    faultable = False

    def get(self) -> None:
        self.write_json({"signatures": list(self.ctx.signer.issued)})


class HealthHandler(JsonHandler):
    endpoint = "healthz"
    faultable = False

    def get(self) -> None:
        self.write_json({"ok": True})


def make_app(ctx: SandboxContext) -> tornado.web.Application:
    a = {"ctx": ctx}
    routes: list[tuple[str, type, dict[str, Any]]] = [
        (API_PREFIX + "/oauth/partner/access-token", api.PartnerTokenHandler, a),
        (API_PREFIX + "/oauth/partner/access-token/refresh", api.RefreshTokenHandler, a),
        (API_PREFIX + "/open/partner/users/access-token", api.UserTokenHandler, a),
        (API_PREFIX + "/open/partner/files/upload/generate-presigned-urls", api.PresignHandler, a),
        (API_PREFIX + "/open/partner/files/upload/complete-upload", api.CompleteUploadHandler, a),
        (API_PREFIX + "/open/partner/ai/transcriptions/", api.SubmitTranscriptionHandler, a),
        (API_PREFIX + r"/open/partner/ai/transcriptions/([^/]+)", api.GetTranscriptionHandler, a),
        (r"/_storage/uploads/([A-Za-z0-9_]+)/([0-9]{1,5})", storage.PartUploadHandler, a),
        (r"/_storage/files/([A-Za-z0-9_]+)\.([a-z0-9]+)", storage.FileDownloadHandler, a),
        (r"/_sandbox/stats", StatsHandler, a),
        (r"/_sandbox/tx_arrivals", TxArrivalsHandler, a),
        (r"/_sandbox/reset", ResetHandler, a),
        (r"/_sandbox/config", ConfigHandler, a),
        (r"/_sandbox/transcriptions", TranscriptionsHandler, a),
        (r"/_sandbox/issued", IssuedHandler, a),
        (r"/healthz", HealthHandler, a),
    ]
    return tornado.web.Application(routes, default_handler_class=NotFoundHandler, default_handler_args=a)


@dataclass
class Running:
    """A started sandbox: where it listens and how to stop it."""

    base_url: str  # e.g. http://127.0.0.1:8765/developer/api
    origin: str  # e.g. http://127.0.0.1:8765
    ctx: SandboxContext
    server: tornado.httpserver.HTTPServer


async def start(settings: SandboxSettings) -> Running:
    """Bind and start serving on the running event loop."""
    data_dir = settings.data_dir or tempfile.mkdtemp(prefix="plaud-sandbox-")
    ctx = SandboxContext(settings=settings, state=SandboxState(data_dir))
    server = tornado.httpserver.HTTPServer(make_app(ctx), max_body_size=JSON_BODY_MAX_BYTES,
                                           idle_connection_timeout=120)
    sockets = tornado.netutil.bind_sockets(settings.port, settings.host)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    origin = f"http://{'127.0.0.1' if settings.host in ('0.0.0.0', '') else host}:{port}"
    return Running(origin + API_PREFIX, origin, ctx, server)


async def stop(running: Running) -> None:
    running.server.stop()
    await running.server.close_all_connections()
    running.ctx.executor.shutdown(wait=False, cancel_futures=True)
    if not running.ctx.settings.data_dir:
        shutil.rmtree(running.ctx.state.data_dir, ignore_errors=True)


def worker_environment(running: Running, user_id: str = "sandbox-user") -> dict[str, str]:
    """The environment a worker needs to talk to this sandbox."""
    s = running.ctx.settings
    return {"PLAUD_BASE_URL": running.base_url, "PLAUD_CLIENT_ID": s.client_id, "PLAUD_SECRET_KEY": s.secret_key,
            "PLAUD_API_KEY": s.api_key, "PLAUD_USER_ID": user_id}


def serve(settings: SandboxSettings, echo: Callable[[str], None] = print) -> None:
    """Run in the foreground until SIGINT or SIGTERM."""

    async def main() -> None:
        running = await start(settings)
        echo(f"Plaud sandbox listening on {running.base_url}")
        echo("It does no speech recognition: transcripts come from the audio's tags (see docs/sandbox.md).")
        echo("Point a worker at it with:")
        for name, value in worker_environment(running).items():
            echo(f"  export {name}={value}")
        sys.stdout.flush()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
        await stop(running)

    asyncio.run(main())


class SandboxThread:
    """A sandbox on its own event loop in a daemon thread; ``with SandboxThread() as sb:``."""

    def __init__(self, settings: SandboxSettings | None = None, **overrides: Any) -> None:
        base = settings or SandboxSettings(port=0)
        self.settings = dataclasses.replace(base, **overrides)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="plaud-sandbox", daemon=True)
        self.running: Running | None = None

    def start(self) -> SandboxThread:
        self._thread.start()
        self.running = asyncio.run_coroutine_threadsafe(start(self.settings), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        if self.running is not None:
            asyncio.run_coroutine_threadsafe(stop(self.running), self._loop).result(timeout=30)
            self.running = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the sandbox's loop (its state is not thread-safe) and return its result."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    @property
    def base_url(self) -> str:
        assert self.running is not None, "the sandbox is not started"
        return self.running.base_url

    @property
    def origin(self) -> str:
        assert self.running is not None, "the sandbox is not started"
        return self.running.origin

    def __enter__(self) -> SandboxThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SandboxProcess:
    """``plaud-workers sandbox`` as a subprocess on a free port; ``with SandboxProcess(...) as sb:``."""

    def __init__(self, *flags: str, env: dict[str, str] | None = None, startup_timeout_s: float = 30.0) -> None:
        self.flags = list(flags)
        self.env = env
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.origin = ""
        self.base_url = ""

    def start(self) -> SandboxProcess:
        cmd = [sys.executable, "-m", "plaud.sandbox", "--port", "0", *self.flags]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, **(self.env or {})})
        ready = threading.Event()
        lines: list[str] = []

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.append(line)
                match = READY_LINE_RE.search(line)
                if match and not ready.is_set():
                    self.origin = match.group(1)
                    self.base_url = self.origin + API_PREFIX
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(self.startup_timeout_s):
            self.stop()
            raise RuntimeError("the sandbox did not start: " + "".join(lines)[-2000:])
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s=15)

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def admin(origin: str, path: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    """Call an admin endpoint (``stats``, ``tx_arrivals``, ``reset``, ``config``) of a running sandbox, stdlib only."""
    import urllib.request

    data = json.dumps(body).encode() if body is not None else (b"" if method != "GET" else None)
    request = urllib.request.Request(f"{origin}/_sandbox/{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())
