"""How Flower is set up to show recordings: one place for `up`, the tests and the chaos suite.

By default Flower's task list shows each task's name, id, state and times: ``plaud.upload``,
``plaud.submit``, … with no recording in sight. Every stage task is sent with the recording id as
its first argument (``tasks.transcribe.pipeline``), and the entry task carries it in its kwargs
(masked where a URL could hold a signature: ``tasks.requests``), so showing the args column next to
the name, and the kwargs last, puts the id on every row of a recording. Flower's search box then
lists one recording's tasks: type its id.

The reconciler's tick (every minute, from beat) sends no task events, so it does not push the
recordings' rows off the page (``tasks.reconcile``, ``workers.celery_app``).

docker-compose.yml and deploy/k8s/base/flower.yaml spell the same value; the tests check they match.
"""

from __future__ import annotations

TASKS_COLUMNS = "name,args,state,received,runtime,uuid,worker,kwargs"


def flower_environment(*, port: int, user: str, password: str, address: str = "127.0.0.1") -> dict[str, str]:
    """What ``celery -A workers flower`` reads (its FLOWER_* variables) to serve this view with basic auth."""
    return {"FLOWER_PORT": str(port), "FLOWER_ADDRESS": address, "FLOWER_BASIC_AUTH": f"{user}:{password}",
            "FLOWER_TASKS_COLUMNS": TASKS_COLUMNS}
