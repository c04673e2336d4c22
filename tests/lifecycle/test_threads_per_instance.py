"""What an instance costs in threads, and the isolation kept while instances share threads.

Every instance's Supervisor runs on one process-wide thread (the SupervisorHost); the first
Sender and the Batcher start with the tree; the spare Senders and the LoggerHandler start on
demand (docs/architecture.md, "Threads and processes"). Each instance keeps its own queue,
counters, restart intensity and deliveries.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from conftest import StartInstance, assert_ledger, exception_events, wait_until
from hypothesis import given
from hypothesis import strategies as st

import phactor
from phactor.batcher import FlushNow
from phactor.devserver import DevServer
from phactor.supervisor import Retire

# Nothing leaves on its own: only flush() (or a full batch) sends.
HOLD = {"flush_at": 10_000, "flush_interval": 3600.0}

THREADS_SCRIPT = """
import json, sys, threading
import phactor

url = sys.argv[1]

def start(i):
    # Defaults (error tracking on, 2 senders), except a short flush_interval: a spare Sender
    # retires after two of them (at least 1 s) without a batch.
    return phactor.start(f"i{i}", api_key="phc_threads", host=url, flush_interval=0.1)

def actor_threads(refs):
    actors = {ref._actor_weakref() for ref in refs} - {None}
    return [t for t in threading.enumerate()
            if getattr(getattr(t, "_target", None), "__self__", None) in actors]

from phactor.timer import scheduler
scheduler.call_later(0, lambda: None)  # process-wide (the timers of every instance): not theirs
base = threading.active_count()
insts = [start(0)]
one = threading.active_count()
insts += [start(i) for i in range(1, 10)]
ten_idle = threading.active_count()
for inst in insts:
    for n in range(1000):
        inst.capture("burst", f"u{n}", {"n": n})
flushed = all(inst.flush(timeout=30) for inst in insts)
spares = [r for r in (inst._registry.get("sender-1") for inst in insts) if r is not None]
retired = all(ref.actor_stopped.wait(10) for ref in spares)
for thread in actor_threads(spares):
    thread.join(5)
settled = threading.active_count()
sent = sum(inst.stats()["sent"] for inst in insts)
print(json.dumps({"base": base, "one": one, "ten_idle": ten_idle, "settled": settled,
                  "spares": len(spares), "retired": retired, "flushed": flushed, "sent": sent}))
"""


def test_each_additional_instance_costs_at_most_two_threads(devserver: DevServer) -> None:
    # A fresh interpreter: its threads are the instances' and nothing else's.
    devserver.delay(0.02)  # Sender-0 stays busy a little: the burst starts the spare Senders
    result = subprocess.run(
        [sys.executable, "-c", THREADS_SCRIPT, devserver.url],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["flushed"] and figures["sent"] == 10_000, figures
    assert figures["spares"] >= 1, figures  # the burst did use spare Senders
    assert figures["retired"], figures
    # Idle: the Batcher and the first Sender (the Supervisor runs on the shared host thread,
    # the LoggerHandler of an instance that receives no exception never starts).
    assert figures["ten_idle"] - figures["one"] <= 2 * 9, figures
    # After a burst of 1,000 events each, once the spare Senders retired: the same.
    assert figures["settled"] - figures["one"] <= 2 * 9, figures


def test_a_spare_sender_starts_on_demand_and_retires_when_idle(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    inst = start_instance(
        api_key="phc_spare", host=devserver.url, senders=2, flush_at=10, flush_interval=0.1,
        enable_error_tracking=False,
    )  # fmt: skip
    assert set(inst.children()) == {"sender-0", "batcher"}
    devserver.delay(0.3)
    uuids = {inst.capture("e", f"u{i}") for i in range(40)}
    # sender-0 holds the first batch: the next one waits, so the spare is started for it.
    assert wait_until(lambda: inst.children().get("sender-1") is True)
    first = inst._registry.entry("sender-1")
    assert first is not None
    devserver.delay(0)
    assert inst.flush(timeout=10)
    # No batch for two flush intervals (at least 1 s): it retires, and is listed no more.
    assert first[0].actor_stopped.wait(5)
    assert wait_until(lambda: "sender-1" not in inst.children())
    assert inst.children() == {"sender-0": True, "batcher": True}
    # Demand again: a new incarnation. Retiring is not a restart.
    devserver.delay(0.3)
    uuids |= {inst.capture("e", f"v{i}") for i in range(40)}
    assert wait_until(lambda: inst.children().get("sender-1") is True)
    again = inst._registry.entry("sender-1")
    assert again is not None and again[1] == first[1] + 1
    devserver.delay(0)
    assert inst.flush(timeout=10)
    counts = devserver.uuid_counts()
    assert set(counts) == uuids and set(counts.values()) == {1}
    stats = assert_ledger(inst)
    assert stats["sent"] == 80 and stats["restarts"] == 0


def test_a_batch_sent_to_a_sender_as_it_retires_is_reclaimed_and_sent_once(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    inst = start_instance(
        api_key="phc_race", host=devserver.url, senders=2, flush_at=5, flush_interval=3600.0,
        enable_error_tracking=False,
    )  # fmt: skip
    devserver.delay(0.3)
    uuids = {inst.capture("first", f"u{i}") for i in range(10)}
    assert wait_until(lambda: inst.children().get("sender-1") is True)  # the spare is up
    devserver.delay(0)
    assert inst.flush(timeout=10)
    # sender-1 decides to retire (its stop is queued) and is held before it handles the stop.
    reached, hold = threading.Event(), threading.Event()
    inst._registry.tell("sender-1", Retire(reached, hold))
    assert reached.wait(5)
    devserver.delay(0.3)  # sender-0 holds the first new batch: the second goes to sender-1
    uuids |= {inst.capture("second", f"u{i}") for i in range(10)}
    # A retiring Sender is no longer parked: the Batcher's dispatch (a flush, a tick) is what
    # can still pick it, as it is registered until its stop has run.
    inst._registry.tell("batcher", FlushNow())
    # Both batches are taken: sender-1's Send sits in its inbox behind its stop.
    assert wait_until(lambda: inst.stats()["in_flight"] == 10)
    requeued_before = inst.stats()["requeued"]
    hold.set()  # pykka drops that Send as the actor stops; the Batcher reclaims the batch
    devserver.delay(0)
    assert inst.flush(timeout=10)
    counts = devserver.uuid_counts()
    assert set(counts) == uuids and set(counts.values()) == {1}, counts
    stats = assert_ledger(inst)
    assert stats["requeued"] - requeued_before == 5
    assert stats["sent"] == 20 and stats["restarts"] == 0


_steps = st.lists(
    st.one_of(st.integers(1, 40), st.just("retire"), st.just("flush")), min_size=1, max_size=8
)


@pytest.fixture(scope="module")
def shared_server() -> Any:
    server = DevServer().start()
    yield server
    server.stop()


@given(steps=_steps)
def test_batches_around_retiring_senders_are_sent_exactly_once(
    shared_server: DevServer, steps: list[Any]
) -> None:
    # Spares retire (the hook does what the idle timer does) at any point of a stream of
    # captures and flushes: whatever was taken for them is sent, once.
    server = shared_server
    server.delay(0.005)
    inst = phactor.start(
        f"retire-{time.monotonic_ns()}",
        api_key="phc_retire",
        host=server.url,
        senders=3,
        flush_at=5,
        flush_interval=0.05,
        enable_error_tracking=False,
    )
    try:
        uuids: set[str | None] = set()
        for step in steps:
            if step == "retire":
                inst._registry.tell("sender-1", Retire())
                inst._registry.tell("sender-2", Retire())
            elif step == "flush":
                assert inst.flush(timeout=10)
            else:
                uuids |= {inst.capture("e", f"u{i}") for i in range(step)}
        assert inst.flush(timeout=10)
        counts = server.uuid_counts()
        assert None not in uuids
        assert all(counts[u] == 1 for u in uuids), counts  # type: ignore[index]
        stats = assert_ledger(inst)
        assert stats["sent"] == len(uuids) and stats["restarts"] == 0
    finally:
        inst.stop(timeout=5)


def test_a_crash_in_one_instance_restarts_only_its_own_child(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    a = start_instance(api_key="phc_a", host=devserver.url, **HOLD)
    b = start_instance(api_key="phc_b", host=devserver.url, **HOLD)
    for i in range(5):
        a.capture("from_a", f"u{i}")
        b.capture("from_b", f"u{i}")
    b_generations = {name: b._registry.entry(name)[1] for name in b.children()}  # type: ignore[index]
    b_stats = b.stats()
    a._crash_child("batcher")
    a._crash_child("sender-0")
    assert wait_until(lambda: a.stats()["restarts"] == 2 and all(a.children().values()))
    # b: same incarnations, same queue, same counters.
    assert {name: b._registry.entry(name)[1] for name in b.children()} == b_generations  # type: ignore[index]
    assert b.stats() == b_stats
    assert a.queue_length() == 5 and b.queue_length() == 5
    assert a.flush(timeout=5) and b.flush(timeout=5)
    assert devserver.wait_for(10)
    assert devserver.count(api_key="phc_a") == 5 and devserver.count(api_key="phc_b") == 5
    assert_ledger(a)
    assert_ledger(b)


def test_a_failure_inside_one_supervisor_leaves_the_others_supervised(
    devserver: DevServer, start_instance: StartInstance, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="phactor")
    a = start_instance(api_key="phc_a", host=devserver.url, **HOLD)
    b = start_instance(api_key="phc_b", host=devserver.url, **HOLD)
    assert a._supervisor is not None

    def broken(name: str) -> None:
        raise SystemExit(f"a bug while restarting {name}")  # pykka would stop every actor

    a._supervisor.on_restart = broken
    a._crash_child("batcher")
    assert wait_until(
        lambda: any("supervisor_message_failed" in r.getMessage() for r in caplog.records)
    )
    # The shared thread goes on: b's crash is still restarted, and b still delivers.
    b._crash_child("batcher")
    assert wait_until(lambda: b.stats()["restarts"] == 1 and all(b.children().values()))
    b.capture("still_works", "u1")
    assert b.flush(timeout=5)
    assert devserver.wait_for(1) and devserver.count(api_key="phc_b") == 1


def test_a_stalled_endpoint_delays_no_other_instance(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    stalled = DevServer().start()
    try:
        stalled.delay(4.0)
        a = start_instance(api_key="phc_a", host=stalled.url, flush_at=1, request_timeout=3.0)
        b = start_instance(api_key="phc_b", host=devserver.url, flush_at=1)
        for i in range(5):
            a.capture("to_a", f"u{i}")
        assert stalled.wait_for_arrivals(1, timeout=5)  # a's Sender is inside a request
        started = time.monotonic()
        for i in range(5):
            b.capture("to_b", f"u{i}")
        assert b.flush(timeout=5)
        assert time.monotonic() - started < 2.0  # not behind a's 4 s request
        # a's stop waits for its Sender mid-request, on the stopping thread: meanwhile the
        # shared supervising thread still restarts b's children at once.
        stopper = threading.Thread(target=a.stop, args=(3.0,))
        stopper.start()
        b._crash_child("batcher")
        assert wait_until(lambda: b.stats()["restarts"] == 1 and all(b.children().values()))
        assert stopper.is_alive()  # a is still stopping (its Sender holds a 4 s request)
        stopper.join(10)
        assert not stopper.is_alive()
        assert devserver.count(api_key="phc_b") == 5
        assert_ledger(a)
        assert_ledger(b)
    finally:
        stalled.stop()


def test_fifty_instances_start_and_stop_cleanly_and_quickly(
    devserver: DevServer, instance_name: str
) -> None:
    from phactor.supervisor import host
    from phactor.timer import scheduler

    scheduler.call_later(0, lambda: None)  # the process-wide threads, started once
    host()
    before = set(threading.enumerate())
    started = time.monotonic()
    insts = [
        phactor.start(f"{instance_name}-{i}", api_key="phc_fifty", host=devserver.url)
        for i in range(50)
    ]
    start_seconds = time.monotonic() - started
    for inst in insts:
        inst.capture("hello", "u1")
    started = time.monotonic()
    assert all(inst.stop(timeout=5) for inst in insts)
    stop_seconds = time.monotonic() - started
    assert devserver.count(api_key="phc_fifty") == 50
    assert start_seconds < 5.0 and stop_seconds < 10.0, (start_seconds, stop_seconds)
    assert wait_until(lambda: not [t for t in threading.enumerate() if t not in before])
    for inst in insts:
        assert inst.children() == {}
        assert_ledger(inst)


def test_an_instance_that_receives_no_exception_runs_no_logger_handler(
    start_test_mode: StartInstance,
) -> None:
    receiver = start_test_mode()  # first started: receives the process's exceptions
    other = start_test_mode()
    assert receiver.children().get("logger_handler") is True
    assert "logger_handler" not in other.children()
    try:
        raise ValueError("routed to the receiver")
    except ValueError:
        logging.getLogger("app.threads").exception("failed")
    assert len(exception_events(receiver)) == 1
    assert "logger_handler" not in other.children()
    # Its first capture_exception starts it; the call still returns the queued event's uuid.
    try:
        raise KeyError("explicit")
    except KeyError as error:
        uuid = other.capture_exception(error)
    assert uuid is not None
    assert other.children().get("logger_handler") is True
    [event] = exception_events(other)
    assert event["uuid"] == uuid
    assert_ledger(receiver)
    assert_ledger(other)


def test_a_dormant_logger_handler_starts_with_the_first_record_routed_to_it(
    start_test_mode: StartInstance,
) -> None:
    first = start_test_mode()
    second = start_test_mode()
    assert "logger_handler" not in second.children()
    first.stop(timeout=5)  # receiving passes to `second`, whose LoggerHandler is not running
    try:
        raise ValueError("now routed to the second")
    except ValueError as error:
        logging.getLogger("app.threads").exception("failed")
        # The same object again, while the LoggerHandler may still be starting: the record
        # came first, so it wins (in order, not built ahead of it on this thread).
        assert second.capture_exception(error) is None
    [event] = exception_events(second)
    assert event["properties"]["$exception_source"] == "logging"
    assert second.children().get("logger_handler") is True
    assert_ledger(second)
