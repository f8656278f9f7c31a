"""Plaud partner API: the client (coming next) and the local sandbox that mimics the API.

This package knows nothing of Celery; `tasks` and `workers` build on it.
"""
