"""A local server that speaks Plaud's partner API contract (docs/plaud-api.md, "The flow").

It is the embedded default of plaud-workers: the demo, the tests and the benchmarks run
against it. It is faithful to the documented contract (paths, auth, shapes, statuses,
limits) and honest about what it fakes: it does no speech recognition; the transcript text
comes from the audio file's tags (see ``audio``), the timing from the audio itself.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SandboxProcess", "SandboxSettings", "SandboxThread", "admin", "serve", "worker_environment"]


def __getattr__(name: str) -> Any:
    """Load the server (Tornado, numpy, libsndfile) only when it is asked for: ``plaud-workers``'
    command line carries the sandbox's commands, and a worker it starts must not pay for them."""
    if name == "SandboxSettings":
        from .settings import SandboxSettings

        return SandboxSettings
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
