"""A local server that speaks Plaud's partner API contract (docs/plaud-api.md, "The flow").

It is the embedded default of plaud-workers: the demo, the tests and the benchmarks run
against it. It is faithful to the documented contract (paths, auth, shapes, statuses,
limits) and honest about what it fakes: it does no speech recognition; the transcript text
comes from the audio file's tags (see ``audio``), the timing from the audio itself.
"""

from .server import SandboxProcess, SandboxThread, admin, serve, worker_environment
from .settings import SandboxSettings

__all__ = ["SandboxProcess", "SandboxSettings", "SandboxThread", "admin", "serve", "worker_environment"]
