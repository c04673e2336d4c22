"""The Celery integration with a real Celery app and an in-process worker (memory broker, real
task execution), events posted to the loopback devserver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

celery = pytest.importorskip("celery")
from celery.contrib.testing.worker import start_worker  # noqa: E402
from celery.signals import setup_logging, task_postrun  # noqa: E402

import phactor  # noqa: E402
from phactor.integrations.celery import PhactorCelery  # noqa: E402

STATE: dict[str, str] = {}

app = celery.Celery("phactor_celery_tests", broker="memory://", backend="cache+memory://")
app.conf.worker_hijack_root_logger = False
app.conf.task_default_queue = "phactor-inprocess"
app.conf.broker_transport_options = {"polling_interval": 0.01}


class Expected(Exception):
    pass


@app.task(name="t.record")
def record(i: int, leak: bool = False) -> None:
    name = STATE["instance"]
    if leak:
        phactor.set_context({"leaky": i}, instance=name)  # without a scope, on the worker thread
    distinct_id = phactor.get_context(instance=name).get("distinct_id") or f"anon-{i}"
    phactor.capture("task_ran", distinct_id, {"i": i}, instance=name)


@app.task(name="t.fail")
def fail() -> None:
    raise ValueError("task failed")


@app.task(name="t.flaky", bind=True, max_retries=1, default_retry_delay=0)
def flaky(self: Any) -> None:
    try:
        raise ValueError(f"attempt {self.request.retries}")
    except ValueError as exc:
        raise self.retry(exc=exc, countdown=0) from None


@app.task(name="t.expected", throws=(Expected,))
def expected() -> None:
    raise Expected("declared in throws")


_finished: dict[str, threading.Event] = {}
_finished_lock = threading.Lock()


def _finished_event(task_id: str) -> threading.Event:
    with _finished_lock:
        return _finished.setdefault(task_id, threading.Event())


def mark_finished(task_id: str | None = None, state: str | None = None, **_: Any) -> None:
    """`task_postrun` receiver: the task ran to its end (a retry is not its end)."""
    if task_id is not None and state != "RETRY":
        _finished_event(task_id).set()


def finish(result: Any) -> Any:
    """Wait until the worker is completely done with the task (its result is stored earlier,
    before the failure signal and postrun): the test then sees everything the task did."""
    assert _finished_event(result.id).wait(10), "the task did not finish"
    return result


def leave_logging_alone(**_: Any) -> None:
    """A `setup_logging` receiver: the worker then leaves the process's logging as it is (else it
    sets the root logger's level, which other test modules of this process would inherit)."""


@pytest.fixture(scope="module")
def worker() -> Iterator[Any]:
    setup_logging.connect(leave_logging_alone, weak=False)
    task_postrun.connect(mark_finished, weak=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as w:
            yield w
    finally:
        setup_logging.disconnect(leave_logging_alone)
        task_postrun.disconnect(mark_finished)


@pytest.fixture
def inst(devserver: Any, start_instance: Any, worker: Any) -> Iterator[phactor.Instance]:
    instance = start_instance(api_key="phc_test", host=devserver.url, flush_interval=60)
    STATE["instance"] = instance.name
    yield instance


@pytest.fixture
def integration(inst: phactor.Instance) -> Iterator[PhactorCelery]:
    integration = PhactorCelery(inst.name).instrument()
    yield integration
    integration.uninstrument()


def events_of(inst: phactor.Instance, devserver: Any) -> list[dict[str, Any]]:
    assert inst.flush(10)
    return devserver.events()


def run_alternating(inst: phactor.Instance, n: int = 20) -> None:
    """Even tasks are published inside a user's context; every third task sets context itself."""
    for i in range(n):
        if i % 2 == 0:
            with inst.context({"distinct_id": f"user-{i}", "tag": i}):
                result = record.delay(i, leak=i % 3 == 0)
        else:
            result = record.delay(i, leak=i % 3 == 0)
        finish(result)


def violations(events: list[dict[str, Any]], n: int = 20) -> list[str]:
    problems = []
    for event in (e for e in events if e["event"] == "task_ran"):
        i, props = event["properties"]["i"], event["properties"]
        want = f"user-{i}" if i % 2 == 0 else f"anon-{i}"
        if event["distinct_id"] != want:
            problems.append(f"task {i}: distinct_id {event['distinct_id']}")
        if props.get("tag") != (i if i % 2 == 0 else None):
            problems.append(f"task {i}: tag {props.get('tag')}")
        if props.get("leaky") != (i if i % 3 == 0 else None):
            problems.append(f"task {i}: leaky {props.get('leaky')}")
    if len([e for e in events if e["event"] == "task_ran"]) != n:
        problems.append("not one event per task")
    return problems


def test_without_the_integration_context_is_lost_and_leaks_between_tasks(
    inst: phactor.Instance, devserver: Any
) -> None:
    run_alternating(inst)
    assert violations(events_of(inst, devserver))


def test_the_callers_context_travels_with_each_task_and_ends_with_it(
    inst: phactor.Instance, devserver: Any, integration: PhactorCelery
) -> None:
    run_alternating(inst)
    events = events_of(inst, devserver)
    assert violations(events) == []
    props = next(e for e in events if e["properties"]["i"] == 2)["properties"]
    assert props["celery_task_name"] == "t.record"
    assert props["celery_retry_count"] == 0
    assert props["celery_task_id"]


def test_a_failing_task_becomes_one_exception_event_with_its_task_and_context(
    inst: phactor.Instance, devserver: Any, integration: PhactorCelery
) -> None:
    with inst.context({"distinct_id": "user-f"}):
        result = finish(fail.delay())
    with pytest.raises(ValueError):
        result.get(timeout=1)
    events = events_of(inst, devserver)
    # celery.app.trace logs the same exception: it is not sent a second time.
    assert [e["event"] for e in events] == ["$exception"]
    (event,) = events
    assert event["distinct_id"] == "user-f"
    props = event["properties"]
    assert props["celery_task_name"] == "t.fail"
    assert props["celery_task_id"] == result.id
    assert props["celery_retry_count"] == 0
    assert props["$exception_list"][0]["type"] == "ValueError"


def test_retries_are_not_failures_until_the_last_one(
    inst: phactor.Instance, devserver: Any, integration: PhactorCelery
) -> None:
    with inst.context({"distinct_id": "user-r"}):
        result = finish(flaky.delay())
    with pytest.raises(ValueError, match="attempt 1"):
        result.get(timeout=1)
    (event,) = events_of(inst, devserver)
    assert event["event"] == "$exception"
    assert event["properties"]["celery_retry_count"] == 1
    assert event["distinct_id"] == "user-r"


def test_exceptions_a_task_declares_in_throws_are_not_tracked(
    inst: phactor.Instance, devserver: Any, integration: PhactorCelery
) -> None:
    with inst.context({"distinct_id": "user-e"}):
        result = finish(expected.delay())
    with pytest.raises(Expected):
        result.get(timeout=1)
    assert events_of(inst, devserver) == []


def test_lifecycle_events_are_off_by_default_and_on_when_asked(
    inst: phactor.Instance, devserver: Any
) -> None:
    integration = PhactorCelery(inst.name, lifecycle_events=True).instrument()
    try:
        with inst.context({"distinct_id": "user-l"}):
            finish(record.delay(1))
            finish(fail.delay())
    finally:
        integration.uninstrument()
    names = [e["event"] for e in events_of(inst, devserver)]
    assert names == [
        "celery task started",
        "task_ran",
        "celery task succeeded",
        "celery task started",
        "$exception",
        "celery task failed",
    ]
    succeeded = devserver.events(event="celery task succeeded")[0]["properties"]
    assert succeeded["celery_task_name"] == "t.record"
    assert succeeded["celery_duration_ms"] >= 0


def test_context_values_that_json_cannot_carry_travel_as_text(
    inst: phactor.Instance, devserver: Any, integration: PhactorCelery
) -> None:
    with inst.context({"distinct_id": "user-j", "obj": object(), "n": 3}):
        finish(record.delay(1))
    (event,) = events_of(inst, devserver)
    assert event["distinct_id"] == "user-j"
    assert event["properties"]["n"] == 3
    assert event["properties"]["obj"].startswith("<object object")


def test_bad_options_name_themselves() -> None:
    with pytest.raises(phactor.ConfigError, match="lifecycle_events"):
        PhactorCelery(lifecycle_events="yes")  # type: ignore[arg-type]
    with pytest.raises(phactor.ConfigError, match="instance"):
        PhactorCelery(instance=[""])
