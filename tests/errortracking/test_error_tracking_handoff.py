"""Review of the lean logging-thread hand-off (Intake.pending + the LoggerHandler's self-wakes).

Each test pins a way a record could be left in `pending` with nobody due to drain it, be sent
twice, or slip past a guard. The windows are widened with real parts (a lock the restart path
takes, a before_send that holds the actor), never by sleeping.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pykka
import pytest
from conftest import StartInstance, assert_ledger, exception_events, wait_until

import phactor
from phactor.errortracking import actor as actor_module
from phactor.errortracking import routing as routing_module
from phactor.errortracking.actor import LoggerHandler

log = logging.getLogger("app.review_hot_path")


@pytest.fixture
def inst(start_test_mode: StartInstance) -> phactor.Instance:
    return start_test_mode(exception_rate_limit_burst=100_000)


def incarnation(intake: Any, generation: int) -> Any:
    """The LoggerHandler actor of `intake` with this generation (registered or not), or None."""
    for ref in pykka.ActorRegistry.get_by_class(LoggerHandler):
        actor = ref._actor_weakref()
        if actor is not None and actor.intake is intake and actor.generation == generation:
            return actor
    return None


def log_failure(text: str) -> None:
    try:
        raise ValueError(text)
    except ValueError:
        log.exception("failure %s", text)


def test_a_record_logged_while_the_restarted_actor_is_not_yet_registered_is_drained(inst):
    # A restarted LoggerHandler drains (and clears `wake_sent`) in `started`, before the
    # Supervisor puts it in the registry. A record logged in between must still be drained
    # without help (no flush, no later record): its wake-up must not be lost.
    intake = inst.__dict__["_error_intake"]
    # The restart path installs the handler (a no-op, but under this lock) between starting the
    # new incarnation and registering it: holding the lock holds the restart in that window.
    with routing_module._lock:
        inst._crash_child("logger_handler")
        # The new incarnation ran `started` and its first Wake (which found nothing).
        assert wait_until(lambda: incarnation(intake, 2) is not None)
        assert wait_until(lambda: incarnation(intake, 2).builder is not None)
        assert wait_until(lambda: not intake.wake_sent)
        assert inst._registry.get("logger_handler") is None
        log_failure("during-restart")
        # Not asserted: that the record still waits in `pending` here. The new incarnation has
        # published its ref already, so the hand-off may wake it and it may drain at once (~1 run
        # in 3 under load); what this test holds is that the record is never left behind.
    assert wait_until(lambda: inst._registry.get("logger_handler") is not None)
    assert wait_until(lambda: inst.stats()["captured"] == 1, timeout=3), (
        f"stuck in pending: {len(intake.pending)}, wake_sent={intake.wake_sent}"
    )
    assert_ledger(inst)


FORK_PENDING_SCRIPT = textwrap.dedent(
    """
    import json, logging, os, sys, threading
    sys.path.insert(0, sys.argv[1])
    from conftest import wait_until
    import phactor, phactor.testing

    parent_pid = os.getpid()
    entered, release = threading.Event(), threading.Event()

    def before_send(event):
        # Holds the parent's LoggerHandler inside its first event, so that the next record
        # waits in Intake.pending (the actor is due: nobody wakes it) when the process forks.
        if os.getpid() == parent_pid and event["event"] == "$exception":
            entered.set()
            release.wait(10)
        return event

    inst = phactor.start(test_mode=True, before_send=before_send)
    intake = inst.__dict__["_error_intake"]
    log = logging.getLogger("app.fork")

    def fail(text):
        try:
            raise ValueError(text)
        except ValueError:
            log.exception(text)

    fail("one")
    assert entered.wait(10)
    fail("two")
    assert len(intake.pending) == 1
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            fail("child")
            phactor.flush(timeout=10)
            report = sorted(
                e["properties"]["log_message"]
                for e in phactor.testing.events() if e["event"] == "$exception"
            )
            phactor.stop(timeout=5)
        except BaseException as error:
            report = repr(error)
        os.write(w, json.dumps(report).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    release.set()
    phactor.flush(timeout=10)
    parent = sorted(
        e["properties"]["log_message"]
        for e in phactor.testing.events() if e["event"] == "$exception"
    )
    phactor.stop(timeout=5)
    print(json.dumps({"parent": parent, "child": child}))
    """
)


def test_records_pending_at_fork_are_sent_by_the_parent_only():
    # The parent still owns what its logging threads handed off before the fork; a forked
    # child's fresh tree must not send those records a second time.
    tests_dir = os.path.dirname(os.path.dirname(__file__))  # conftest's folder
    result = subprocess.run(
        [sys.executable, "-c", FORK_PENDING_SCRIPT, tests_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["parent"] == ["one", "two"]
    assert report["child"] == ["child"]


FORK_LIMITER_SCRIPT = textwrap.dedent(
    """
    import logging, os, signal, sys, threading
    import phactor

    inst = phactor.start(test_mode=True)
    intake = inst.__dict__["_error_intake"]
    intake.limiter.max_keys = 1  # every new exception type replaces the table (under the lock)
    log = logging.getLogger("app.fork")
    held, done = threading.Event(), threading.Event()

    def replacing_the_table():
        # A logging thread inside TokenBuckets._forget_full when another thread forks.
        with intake.limiter._lock:
            held.set()
            done.wait(10)

    threading.Thread(target=replacing_the_table, daemon=True).start()
    assert held.wait(10)
    pid = os.fork()
    if pid == 0:
        signal.alarm(10)  # a deadlocked child dies of SIGALRM
        for error_type in (KeyError, IndexError):
            try:
                raise error_type("in the child")
            except error_type:
                log.exception("new type")
        phactor.stop(timeout=5)
        os._exit(0)
    done.set()
    _, status = os.waitpid(pid, 0)
    phactor.stop(timeout=5)
    print(os.waitstatus_to_exitcode(status))
    """
)


def test_a_forked_child_can_rate_limit_after_its_parent_held_the_limiter_lock():
    result = subprocess.run(
        [sys.executable, "-c", FORK_LIMITER_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0"  # not killed by its alarm


def test_flush_covers_records_logged_while_the_restarted_actor_is_not_yet_registered(
    start_test_mode,
):
    entered, release = threading.Event(), threading.Event()

    def hold_first(event: dict[str, Any]) -> dict[str, Any]:
        if event["properties"].get("log_message") == "failure one":
            entered.set()
            release.wait(10)
        return event

    inst = start_test_mode(before_send=hold_first)
    intake = inst.__dict__["_error_intake"]
    try:
        with routing_module._lock:  # holds the restart before registration (see above)
            inst._crash_child("logger_handler")
            assert wait_until(lambda: incarnation(intake, 2) is not None)
            actor = incarnation(intake, 2)
            assert wait_until(lambda: actor.builder is not None and not intake.wake_sent)
            log_failure("one")  # the actor is held in before_send with it
            assert entered.wait(5)
            log_failure("two")  # waits in pending
            # Let the actor go once flush's barrier is behind "two" in pending.
            helper = threading.Thread(
                target=lambda: (
                    wait_until(lambda: len(intake.pending) >= 2),
                    release.set(),
                )
            )
            helper.start()
            flushed = inst.flush(timeout=5)
            captured = inst.stats()["captured"]
            release.set()
            helper.join()
        assert flushed
        assert captured == 2, "flush returned before the records logged before it were queued"
    finally:
        release.set()  # before the instance stops: the actor may still be held in before_send


def test_an_exception_type_defined_per_call_is_still_rate_limited(start_test_mode):
    # A class statement inside a function makes a new class object per call (retry helpers,
    # decorators, error factories): it is the same exception type, and a flood of it must hit
    # the same bucket. Keyed by class object, every record would get a fresh bucket (and the
    # limiter would hold up to 1,000 dead classes alive).
    inst = start_test_mode(exception_rate_limit_burst=5, exception_rate_limit_per_second=0)

    def fail_once(attempt: int) -> None:
        class RetryLater(Exception):
            pass

        try:
            raise RetryLater(attempt)
        except RetryLater:
            log.exception("attempt %d", attempt)

    for attempt in range(20):
        fail_once(attempt)
    assert inst.flush(timeout=5)  # the actor takes the tokens: count after it drained
    stats = inst.stats()
    assert stats["dropped"].get("rate_limited", 0) == 15, stats
    assert len(exception_events(inst, flush=False)) == 5  # flushed above: read as it stands
    assert_ledger(inst)


def test_capture_exception_does_not_wait_for_a_lingering_actor(inst, monkeypatch):
    # After a logged record the actor lingers (it comes back after LINGER_SECONDS to look for
    # more, and no logging thread wakes it meanwhile). A capture_exception waits for its uuid:
    # it must wake the actor itself, not wait for the linger (a loop of such calls paid the
    # linger on every call). A linger far past the call's wait makes the difference certain.
    monkeypatch.setattr(actor_module, "LINGER_SECONDS", 60.0)
    intake = inst.__dict__["_error_intake"]
    log_failure("first")
    assert wait_until(lambda: inst.stats()["captured"] == 1)
    assert intake.wake_sent  # lingering: a wake-up is "due"
    assert inst.capture_exception(KeyError("asked"), "u1") is not None
    assert_ledger(inst)
