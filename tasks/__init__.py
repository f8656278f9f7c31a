"""The pipeline as Celery tasks: the public entry ``plaud.transcribe`` and its stages.

One module per stage — ``upload``, ``submit``, ``poll``, ``deliver`` — built on ``stage`` (the
shared base class: lease, errors, retries), with ``transcribe`` (the entry and the chain),
``reconcile`` (re-driving lost work and retries), ``notify`` (webhooks and callbacks) and
``failures`` (why a recording failed, as data). ``names`` holds every queue, task and Redis key
name; ``runtime`` the per-process resources. Knows nothing of how workers are started (``workers``).
"""
