"""A Celery app run by test_celery_prefork.py in a real worker subprocess (prefork pool).

Configured from the environment: the filesystem broker's folder, the devserver URL and the
phactor instance name. phactor starts here, in the worker's main process before the pool forks
(as an app module does), with a flush interval far beyond the test: events leave a worker process
only through the integration's flush when that process shuts down.
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

import phactor
from phactor.integrations.celery import PhactorCelery

BROKER_DIR = os.environ.get("PHACTOR_TEST_BROKER_DIR", ".")
DONE_DIR = Path(os.environ.get("PHACTOR_TEST_DONE_DIR", BROKER_DIR))
INSTANCE = os.environ.get("PHACTOR_TEST_INSTANCE", "default")


def make_app(broker_dir: str = BROKER_DIR) -> Celery:
    """The worker's app; the test process builds one too, to publish."""
    app = Celery("celery_prefork_app", broker="filesystem://")
    app.conf.broker_transport_options = {
        "data_folder_in": broker_dir,
        "data_folder_out": broker_dir,
        "control_folder": os.path.join(broker_dir, "control"),
        "polling_interval": 0.05,
    }
    app.conf.task_default_queue = "phactor-tests"
    app.conf.worker_prefetch_multiplier = 1
    app.conf.task_acks_late = False
    return app


app = make_app()


@app.task(name="celery_prefork_app.record")
def record(i: int) -> None:
    phactor.capture("task_ran", properties={"i": i, "pid": os.getpid()}, instance=INSTANCE)
    (DONE_DIR / f"{i}.done").write_text(str(os.getpid()))


if os.environ.get("PHACTOR_TEST_WORKER") == "1":
    phactor.start(
        INSTANCE,
        api_key="phc_celery",
        host=os.environ["PHACTOR_TEST_HOST"],
        flush_at=1000,
        flush_interval=3600,
        shutdown_timeout=5,
    )
    PhactorCelery(
        INSTANCE, flush_on_shutdown=os.environ.get("PHACTOR_TEST_FLUSH", "1") == "1"
    ).instrument()
