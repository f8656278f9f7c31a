"""Celery tasks, one module per pipeline stage (transcribe, upload, submit, poll, deliver).

Empty until the pipeline lands; the package exists so the layout is fixed from the start.
"""
