"""Celery's prefork pool in a real worker subprocess (filesystem broker, no external service):
each child sends its own events, and recycled children (`--max-tasks-per-child`) and a warm
shutdown lose nothing. The worker's instance flushes only on its own (interval: one hour), so
every event that arrives was sent by the integration's flush at a worker process's exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

pytest.importorskip("celery")

from celery_prefork_app import make_app

import phactor
from phactor.integrations.celery import PhactorCelery

HERE = Path(__file__).parent
TASKS = 6


def start_worker(tmp_path: Path, host: str, instance: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
        "PHACTOR_TEST_WORKER": "1",
        "PHACTOR_TEST_HOST": host,
        "PHACTOR_TEST_INSTANCE": instance,
        "PHACTOR_TEST_BROKER_DIR": str(tmp_path / "broker"),
        "PHACTOR_TEST_DONE_DIR": str(tmp_path / "done"),
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "celery_prefork_app",
        "worker",
        "--pool=prefork",
        "--concurrency=2",
        "--max-tasks-per-child=2",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "--loglevel=INFO",
    ]
    return subprocess.Popen(
        command, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def test_prefork_children_send_their_own_events_and_lose_none_at_recycle_or_shutdown(
    tmp_path: Path, devserver: Any, start_test_mode: Any
) -> None:
    (tmp_path / "broker").mkdir()
    (tmp_path / "done").mkdir()
    publisher = start_test_mode()
    producer = make_app(str(tmp_path / "broker"))
    integration = PhactorCelery(publisher.name).instrument()
    try:
        for i in range(TASKS):
            with phactor.context({"distinct_id": f"user-{i}"}, instance=publisher.name):
                producer.send_task("celery_prefork_app.record", args=[i])
    finally:
        integration.uninstrument()

    worker = start_worker(tmp_path, devserver.url, publisher.name)
    try:
        done = wait_until(lambda: len(list((tmp_path / "done").iterdir())) == TASKS, 60)
        assert done, "the worker did not run every task"
        # Recycled children (2 tasks each) flushed as they exited; the last ones have not.
        worker.send_signal(signal.SIGTERM)  # warm shutdown
        try:
            output, _ = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate(timeout=10)
            raise AssertionError(
                "the worker did not stop:\n" + output.decode(errors="replace")[-5000:]
            ) from None
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert worker.returncode == 0, output.decode(errors="replace")

    events = devserver.events(event="task_ran")
    assert sorted(e["properties"]["i"] for e in events) == list(range(TASKS)), output
    assert all(e["distinct_id"] == f"user-{e['properties']['i']}" for e in events)
    pids = {e["properties"]["pid"] for e in events}
    assert len(pids) >= 3  # recycled after 2 tasks: at least 3 children ran the 6 tasks
    assert worker.pid not in pids  # the children sent them, not the main process
