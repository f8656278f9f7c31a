"""The worker side: the command line today; the Celery app, queues and recording store next."""
