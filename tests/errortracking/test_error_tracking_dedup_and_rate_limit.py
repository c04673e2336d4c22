"""Review of 1c8df46: de-duplication and rate limit taken by the LoggerHandler (`Intake.accept`).

The logging thread now hands every record over and the actor marks it and takes a token; app
threads refuse a flood themselves (`Intake.refused_early`) once the actor noted the key in
`Intake.refusing`. These tests hold the actor to the promises of docs/error-tracking.md: one
event per exception object whichever sources see it, a balanced ledger under refusals racing
with the actor, the same `log_message` as `record.getMessage()` at log time, and no failure
raised into the app or killing the actor.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from conftest import StartInstance, assert_ledger, exception_events, wait_until

import phactor

log = logging.getLogger("app.review.gate")


@pytest.fixture
def inst(start_test_mode: StartInstance) -> phactor.Instance:
    return start_test_mode(exception_rate_limit_burst=100_000)


def intake_of(instance: phactor.Instance) -> Any:
    return instance.__dict__["_error_intake"]


def raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:
        return caught


# -- de-duplication across sources ----------------------------------------------------------------


def test_logged_then_passed_to_sys_excepthook_is_one_logging_event(inst):
    error = raised(RuntimeError("fatal"))
    try:
        raise error
    except RuntimeError:
        log.exception("about to die")
    # The hook chain ends with the interpreter's default hook, which prints: call ours only.
    intake_of(inst).hooks.sys_excepthook(type(error), error, error.__traceback__)
    events = exception_events(inst)
    assert [e["properties"]["$exception_source"] for e in events] == ["logging"]


def test_the_same_exception_logged_on_two_threads_is_one_event(inst):
    error = raised(KeyError("shared"))
    barrier = threading.Barrier(4)

    def log_it() -> None:
        barrier.wait()
        log.error("shared failure", exc_info=error)

    threads = [threading.Thread(target=log_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(exception_events(inst)) == 1
    assert_ledger(inst)


def test_a_logged_exception_is_captured_once_and_explicit_calls_once_per_instance(start_test_mode):
    first = start_test_mode()
    second = start_test_mode()
    error = raised(ValueError("twice"))
    log.error("one", exc_info=error)
    log.error("two", exc_info=error)
    assert first.capture_exception(error) is None
    # Logged: the first source wins, routed to one instance (first). An explicit call for
    # another instance is the app's own choice of project (integrations given several).
    assert second.capture_exception(error) is not None
    assert second.capture_exception(error) is None
    assert [e["properties"]["log_message"] for e in exception_events(first)] == ["one"]
    sources = [e["properties"]["$exception_source"] for e in exception_events(second)]
    assert sources == ["capture_exception"]
    for instance in (first, second):
        assert_ledger(instance)


def test_capture_exception_with_error_tracking_off_captures_once(start_test_mode):
    instance = start_test_mode(enable_error_tracking=False)
    error = raised(ValueError("off"))
    assert instance.capture_exception(error) is not None
    assert instance.capture_exception(error) is None
    assert len(exception_events(instance)) == 1


# -- rate-limit accounting ------------------------------------------------------------------------


def test_refusals_on_app_threads_racing_with_the_actor_keep_the_ledger(start_test_mode):
    # A bucket that empties and refills while four threads flood one type: records are refused
    # both by the actor and early on the app threads; each is an event or one rate_limited drop.
    instance = start_test_mode(exception_rate_limit_burst=3, exception_rate_limit_per_second=500.0)
    per_thread = 400

    def flood(n: int) -> None:
        for i in range(per_thread):
            try:
                raise ValueError(f"{n}-{i}")
            except ValueError:
                log.exception("flood")
                if i % 7 == 0:  # and the same object again through capture_exception
                    instance.capture_exception()

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = exception_events(instance)
    stats = assert_ledger(instance)
    assert len(events) + stats["dropped"].get("rate_limited", 0) == 4 * per_thread, stats
    assert set(stats["dropped"]) <= {"rate_limited"}, stats


def test_one_exception_refused_early_then_by_a_hook_is_counted_once(start_test_mode):
    instance = start_test_mode(exception_rate_limit_burst=1, exception_rate_limit_per_second=0)
    intake = intake_of(instance)
    log.error("takes the token", exc_info=raised(ValueError("a")))
    log.error("refused by the actor", exc_info=raised(ValueError("b")))
    assert instance.flush(timeout=5)
    assert ValueError in intake.refusing
    error = raised(ValueError("c"))
    log.error("refused early", exc_info=error)
    intake.hooks.sys_excepthook(type(error), error, error.__traceback__)
    assert instance.capture_exception(error) is None
    assert instance.stats()["dropped"] == {"rate_limited": 2}
    assert len(exception_events(instance)) == 1
    assert_ledger(instance)


def test_refusing_follows_the_limiters_clock(start_test_mode):
    # TokenBuckets' clock is injectable (tests, a paused clock): the refusal window must be on
    # the same clock, or a refilled bucket keeps being refused on the app's threads.
    now = [1000.0]
    instance = start_test_mode(
        exception_rate_limit_burst=1,
        exception_rate_limit_per_second=0.001,  # a token every 1000 s of the clock
    )
    intake = intake_of(instance)
    intake.limiter.clock = lambda: now[0]
    log.error("first", exc_info=raised(ValueError("1")))
    log.error("refused", exc_info=raised(ValueError("2")))
    assert instance.flush(timeout=5)
    now[0] += 2000.0  # two tokens' worth later
    log.error("after the refill", exc_info=raised(ValueError("3")))
    messages = [e["properties"]["log_message"] for e in exception_events(instance)]
    assert messages == ["first", "after the refill"]


# -- the message formatted by the actor -----------------------------------------------------------


class BraceRecord(logging.LogRecord):
    """A record class formatting `{}` style (the logging cookbook's custom LogRecord)."""

    def getMessage(self) -> str:
        return str(self.msg).format(*self.args)


def test_log_message_is_the_records_own_get_message(inst):
    error = raised(ValueError("x"))
    record = BraceRecord(log.name, logging.ERROR, __file__, 1, "order {} failed", (7,), None)
    record.exc_info = (type(error), error, error.__traceback__)
    expected = record.getMessage()
    log.handle(record)
    [event] = exception_events(inst)
    assert event["properties"]["log_message"] == expected == "order 7 failed"


# -- never raise into the app, never kill the actor -----------------------------------------------


class _EqualByNameMeta(type):
    # Defining __eq__ without __hash__ makes the classes unhashable.
    def __eq__(cls, other: object) -> bool:
        return isinstance(other, type) and cls.__name__ == other.__name__


class UnhashableTypeError(Exception, metaclass=_EqualByNameMeta):
    pass


def test_an_exception_class_that_is_not_hashable_is_limited_without_harm(start_test_mode):
    with pytest.raises(TypeError):
        hash(UnhashableTypeError)
    instance = start_test_mode(exception_rate_limit_burst=1, exception_rate_limit_per_second=0)
    intake = intake_of(instance)
    ref = wait_until(lambda: intake.actor_ref)  # published by the actor as it starts
    assert ref is not None
    for i in range(3):
        log.error("odd %d", i, exc_info=raised(UnhashableTypeError(i)))
    assert instance.flush(timeout=5)
    assert intake.actor_ref is ref, "the LoggerHandler was restarted"
    # Another type is being refused: the app's threads look their types up in `refusing`.
    log.error("v", exc_info=raised(ValueError("v")))
    log.error("v", exc_info=raised(ValueError("w")))
    assert instance.flush(timeout=5)
    assert intake.refusing
    assert instance.capture_exception(UnhashableTypeError("explicit")) is None
    assert len(exception_events(instance)) == 2
    assert instance.stats()["dropped"] == {"rate_limited": 4}
    assert_ledger(instance)


def test_a_message_record_with_a_non_str_extra_key_does_not_kill_the_actor(start_test_mode):
    instance = start_test_mode(capture_messages=True)
    intake = intake_of(instance)
    ref = wait_until(lambda: intake.actor_ref)  # published by the actor as it starts
    assert ref is not None
    log.error("odd extra", extra={1: "one", "ok": 2})
    assert instance.flush(timeout=5)
    assert intake.actor_ref is ref, "the LoggerHandler was restarted"
    [event] = exception_events(instance)
    assert event["properties"]["ok"] == 2


def test_a_hook_while_the_actor_restarts_still_sends_one_event(inst):
    intake = intake_of(inst)
    generation = inst._registry.entry("logger_handler")[1]
    inst._crash_child("logger_handler")
    # Asked of the dead incarnation or of its successor, or built here: never lost or doubled.
    error = raised(OSError("down"))
    intake.hooks.sys_excepthook(type(error), error, error.__traceback__)
    intake.hooks.sys_excepthook(type(error), error, error.__traceback__)
    assert wait_until(
        lambda: (
            (entry := inst._registry.entry("logger_handler")) is not None and entry[1] > generation
        )
    )
    events = exception_events(inst)
    assert [e["properties"]["$exception_source"] for e in events] == ["sys.excepthook"]
    assert_ledger(inst)


def test_hooks_on_one_of_phactors_threads_are_ignored(inst):
    intake = intake_of(inst)
    error = raised(ValueError("inside"))
    ran = threading.Event()

    class Args:
        exc_value = error
        thread = None

    def on_phactor_thread() -> None:
        intake.hooks.threading_excepthook(Args())
        intake.hooks.sys_excepthook(type(error), error, error.__traceback__)
        ran.set()

    t = threading.Thread(target=on_phactor_thread, name="phactor-review")
    t.start()
    t.join()
    assert ran.is_set()
    assert exception_events(inst) == []
    assert inst.capture_exception(error) is not None  # not marked by the ignored hooks


def test_a_non_str_extra_key_does_not_lose_the_exception_event(inst):
    log.error("odd extra", exc_info=raised(ValueError("x")), extra={2: "two", "ok": 1})
    [event] = exception_events(inst)
    assert event["properties"]["ok"] == 1
    assert 2 not in event["properties"] and "2" not in event["properties"]
