"""The worker side: the Celery app (``celery -A workers worker``) and the command line."""

from .celery_app import app

__all__ = ["app"]
