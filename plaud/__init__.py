"""Plaud partner API: the client (``plaud.client``) and the local sandbox that mimics the API.

This package knows nothing of Celery; `tasks` and `workers` build on it.
"""
