"""A no-op task for the baseline: the same chain length as the pipeline, doing nothing."""

from celery import shared_task


@shared_task(name="bench.noop")
def noop(*args, **kwargs):
    return None
