"""The worker side: the Celery app (``celery -A workers worker``) and the command line."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # PEP 562: ``celery -A workers`` finds ``workers.app``, while importing a helper module of this
    # package (workers.local_redis, workers.local_stack) builds no app from the environment.
    if name == "app":
        from .celery_app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app"]
