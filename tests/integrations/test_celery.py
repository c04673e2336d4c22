"""The Celery integration with a real Celery app and an in-process worker (memory broker, real
task execution), events posted to the loopback devserver."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

celery = pytest.importorskip("celery")

from celery.contrib.testing.worker import start_worker  # noqa: E402

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


@pytest.fixture(scope="module")
def worker() -> Iterator[Any]:
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as w:
        yield w


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
        result.get(timeout=10, interval=0.01)


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
        result = fail.delay()
    with pytest.raises(ValueError):
        result.get(timeout=10, interval=0.01)
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
        result = flaky.delay()
    with pytest.raises(ValueError, match="attempt 1"):
        result.get(timeout=10, interval=0.01)
    (event,) = events_of(inst, devserver)
    assert event["event"] == "$exception"
    assert event["properties"]["celery_retry_count"] == 1
    assert event["distinct_id"] == "user-r"


def test_exceptions_a_task_declares_in_throws_are_not_tracked(
    inst: phactor.Instance, devserver: Any, integration: PhactorCelery
) -> None:
    with inst.context({"distinct_id": "user-e"}):
        result = expected.delay()
    with pytest.raises(Expected):
        result.get(timeout=10, interval=0.01)
    assert events_of(inst, devserver) == []


def test_lifecycle_events_are_off_by_default_and_on_when_asked(
    inst: phactor.Instance, devserver: Any
) -> None:
    integration = PhactorCelery(inst.name, lifecycle_events=True).instrument()
    try:
        with inst.context({"distinct_id": "user-l"}):
            record.delay(1).get(timeout=10, interval=0.01)
            with pytest.raises(ValueError):
                fail.delay().get(timeout=10, interval=0.01)
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
        record.delay(1).get(timeout=10, interval=0.01)
    (event,) = events_of(inst, devserver)
    assert event["distinct_id"] == "user-j"
    assert event["properties"]["n"] == 3
    assert event["properties"]["obj"].startswith("<object object")


def test_bad_options_name_themselves() -> None:
    with pytest.raises(phactor.ConfigError, match="lifecycle_events"):
        PhactorCelery(lifecycle_events="yes")  # type: ignore[arg-type]
    with pytest.raises(phactor.ConfigError, match="instance"):
        PhactorCelery(instance=[""])
