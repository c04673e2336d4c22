"""The logging thread's side of error tracking: the lean hand-off to the LoggerHandler.

The logging handler leaves a small tuple in `Intake.pending` and wakes the actor only when it is
not already due; the actor, once woken, keeps coming back while it finds records. These tests
check that nothing is left behind by that protocol (many threads, bursts, idle gaps), that the
actor stops waking itself after a burst, and the cheaper guards: the de-duplication mark written
to the exception's own dict, and the rate limiter's lock-free bucket table.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

import pytest
from conftest import StartInstance, assert_ledger, exception_events, wait_until

import phactor
from phactor.errortracking import TokenBuckets
from phactor.errortracking.guards import already_captured
from phactor.errortracking.ratelimit import key_name
from phactor.errortracking.snapshot import record_message

log = logging.getLogger("app.hotpath")


@pytest.fixture
def inst(start_test_mode: StartInstance) -> phactor.Instance:
    # A bucket large enough that no record of these tests is rate-limited.
    return start_test_mode(exception_rate_limit_burst=100_000)


def log_failures(prefix: str, count: int) -> None:
    for i in range(count):
        try:
            raise ValueError(f"{prefix}-{i}")
        except ValueError:
            log.exception("failure %s %d", prefix, i)


def test_records_from_many_threads_in_bursts_all_become_events(inst):
    threads = [
        threading.Thread(target=log_failures, args=(f"t{n}", 300), name=f"app-{n}")
        for n in range(4)
    ]
    for t in threads:
        t.start()
    log_failures("main", 300)
    for t in threads:
        t.join()

    assert inst._error_tracking_drain(10.0)
    messages = [e["properties"]["log_message"] for e in exception_events(inst)]
    assert len(messages) == 1500
    expected = {f"failure {p} {i}" for p in ("main", "t0", "t1", "t2", "t3") for i in range(300)}
    assert set(messages) == expected
    assert inst.stats()["dropped"] == {}


def test_the_actor_stops_waking_itself_after_a_burst_and_wakes_again_for_a_new_record(inst):
    intake = inst.__dict__["_error_intake"]

    def unflushed() -> list[dict[str, Any]]:
        return exception_events(inst, flush=False)

    log_failures("burst", 200)
    # The actor drains on its own (nothing flushes): every record becomes an event, then it
    # goes idle.
    assert wait_until(lambda: len(unflushed()) == 200, timeout=10)
    assert wait_until(lambda: not intake.wake_sent, timeout=5)
    assert not intake.pending

    # Idle: a single record wakes it again, still without any flush.
    log_failures("after-idle", 1)
    assert wait_until(lambda: len(unflushed()) == 201, timeout=5)
    assert unflushed()[-1]["properties"]["log_message"] == "failure after-idle 0"


def test_the_message_is_formatted_on_the_logging_thread(inst):
    # Arguments that change after the call must not change the event.
    cart = ["book"]
    try:
        raise ValueError("checkout")
    except ValueError:
        log.exception("cart was %s", cart)
    cart.append("pen")
    assert inst._error_tracking_drain(5.0)
    [event] = exception_events(inst)
    assert event["properties"]["log_message"] == "cart was ['book']"


@pytest.mark.parametrize(
    ("msg", "args", "expected"),
    [
        ("plain %s and %d", ("text", 7), "plain text and 7"),  # formatted by the actor
        ("no args at all", (), "no args at all"),
        ("mapping %(a)s", ({"a": "b"},), "mapping b"),  # not plain: formatted at once
    ],
)
def test_log_message_is_the_records_message(inst, msg, args, expected):
    try:
        raise ValueError("x")
    except ValueError:
        log.exception(msg, *args)
    assert inst._error_tracking_drain(5.0)
    [event] = exception_events(inst)
    assert event["properties"]["log_message"] == expected


def test_record_message_of_a_records_dict():
    assert record_message({"msg": "a %s", "args": ("b",)}) == "a b"
    assert record_message({"msg": "100%", "args": ()}) == "100%"  # no args: not formatted
    assert record_message({"msg": "bad %d", "args": ("x",)}) == "bad %d"  # fails: raw message
    assert record_message({"msg": 42, "args": None}) == "42"


def test_a_message_object_is_formatted_on_the_logging_thread(inst):
    class Changing:
        text = "before"

        def __str__(self) -> str:
            return self.text

    message = Changing()
    try:
        raise ValueError("x")
    except ValueError:
        log.exception(message)
    message.text = "after"
    assert inst._error_tracking_drain(5.0)
    [event] = exception_events(inst)
    assert event["properties"]["log_message"] == "before"


class RefusesAttributes(Exception):
    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{name} is read-only")


class SlottedError(ValueError):
    __slots__ = ("code",)


@pytest.mark.parametrize("error_type", [RefusesAttributes, SlottedError])
def test_exceptions_that_refuse_attributes_are_still_sent_once(inst, error_type):
    try:
        raise error_type("odd")
    except Exception as error:
        log.exception("first")
        # Marked by the actor (in order: the record first), so capture_exception declines it.
        assert inst.capture_exception(error) is None
        assert already_captured(error, inst.name)
        log.error("again", exc_info=True)
    assert inst._error_tracking_drain(5.0)
    assert [e["properties"]["$exception_list"][0]["type"] for e in exception_events(inst)] == [
        error_type.__name__
    ]


def test_rate_limited_drops_are_logged_with_the_exception_type_name(start_test_mode, caplog):
    instance = start_test_mode(exception_rate_limit_burst=1)
    with caplog.at_level(logging.WARNING, logger="phactor"):
        log_failures("limited", 3)
        assert instance.flush(timeout=5)  # the actor takes the tokens (and logs drops)
    assert instance.stats()["dropped"]["rate_limited"] == 2
    drops = [r.getMessage() for r in caplog.records if "rate_limited" in r.getMessage()]
    assert drops, "the first drop of a reason is always logged"
    assert all("builtins.ValueError" in m for m in drops)


def test_key_name_of_types_and_call_sites():
    assert key_name(KeyError) == "builtins.KeyError"
    assert key_name(SlottedError) == f"{__name__}.SlottedError"
    assert key_name(("app.orders", "checkout")) == "('app.orders', 'checkout')"


def test_token_buckets_under_concurrent_new_keys_never_fail():
    # Keys are added without a lock while another thread may be replacing the table (max_keys
    # is small, so that happens constantly). Nothing may raise, and a fresh key always starts
    # with a full bucket.
    buckets = TokenBuckets(5, 0.0, max_keys=200)
    errors: list[BaseException] = []
    refused = [0]
    start = threading.Barrier(4)
    # Switch threads as often as possible, so that adds land in the middle of a replacement.
    switch_before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def hammer(n: int) -> None:
        try:
            start.wait()
            for i in range(20_000):
                if not buckets.allow((n, i)):
                    refused[0] += 1
        except BaseException as e:  # pragma: no cover - the failure this test looks for
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch_before)
    assert errors == []
    assert refused[0] == 0
    assert len(buckets._buckets) <= 200 + 4  # bounded (a racing add may land just past a reset)


def test_token_buckets_replacement_tolerates_an_add_in_the_middle():
    # Deterministic version of the race above: while the full table is being replaced, another
    # thread adds a bucket (the unlocked `setdefault` in `allow`). The replacement must neither
    # fail nor keep a half-read table.
    class RacingBuckets(TokenBuckets):
        adds = 0

        @property  # read once per bucket while the table is replaced
        def per_second(self) -> float:
            if self._lock.locked() and self.adds < 3:
                self.adds += 1
                self._buckets.setdefault(("racer", self.adds), [self.burst, 0.0])
            return 0.0

        @per_second.setter
        def per_second(self, value: float) -> None:
            pass

    now = [0.0]
    buckets = RacingBuckets(2, 0.0, clock=lambda: now[0], max_keys=4)
    for key in "abcd":
        assert buckets.allow(key)
    assert buckets.allow("e")  # the table is full: replaced while "racers" are added
    assert buckets.adds == 3
    assert buckets.allow("a")  # a fresh bucket after the reset


def test_a_flood_of_one_type_is_refused_on_the_logging_thread(start_test_mode):
    instance = start_test_mode(exception_rate_limit_burst=2, exception_rate_limit_per_second=0)
    intake = instance.__dict__["_error_intake"]
    log_failures("first", 3)
    assert instance.flush(timeout=5)  # the actor took both tokens and refused the third
    assert instance.stats()["dropped"] == {"rate_limited": 1}
    assert ValueError in intake.refusing

    # From now on the logging thread refuses ValueError itself: with the actor never woken
    # (a wake-up is pretended to be due), nothing is left for it, and the drop is counted
    # at once.
    intake.wake_sent = True
    log_failures("flood", 5)
    assert not intake.pending
    assert instance.stats()["dropped"] == {"rate_limited": 6}
    # capture_exception of the same type is refused the same way, without asking the actor.
    assert instance.capture_exception(ValueError("explicit")) is None
    assert instance.stats()["dropped"] == {"rate_limited": 7}
    # Another type is still handed over.
    try:
        raise KeyError("other")
    except KeyError:
        log.exception("other type")
    assert len(intake.pending) == 1
    intake.wake_sent = False
    assert instance.flush(timeout=5)
    types = [e["properties"]["$exception_list"][0]["type"] for e in exception_events(instance)]
    assert types == ["ValueError", "ValueError", "KeyError"]


def test_refusing_ends_when_the_bucket_has_a_token_again(start_test_mode):
    instance = start_test_mode(
        exception_rate_limit_burst=1,
        exception_rate_limit_per_second=20.0,  # a token every 50 ms
    )
    intake = instance.__dict__["_error_intake"]
    log_failures("pair", 2)
    assert instance.flush(timeout=5)
    until = intake.refusing[ValueError]
    assert until > 0
    assert wait_until(lambda: time.monotonic() >= until, timeout=5)
    log_failures("later", 1)
    assert instance.flush(timeout=5)
    messages = [e["properties"]["log_message"] for e in exception_events(instance)]
    assert messages == ["failure pair 0", "failure later 0"]


def test_the_backlog_bound_is_configurable_and_a_dropped_exception_is_not_offered_again(
    start_test_mode: StartInstance,
):
    instance = start_test_mode(exception_backlog=3, exception_rate_limit_burst=100)
    intake = instance.__dict__["_error_intake"]
    # The actor wakes itself once as it starts: let that wake-up end (a flush asks it for a drain,
    # answered after the wake-up) or it takes a record from under the backlog (1 drop, not 2).
    assert wait_until(lambda: intake.wake_sent is False, 5)
    assert instance.flush(timeout=5)
    intake.wake_sent = True  # pretend a wake-up is due: the actor leaves the backlog alone
    errors = []
    for i in range(5):
        try:
            raise ValueError(f"backlog {i}")
        except ValueError as error:
            log.exception("backlog %d", i)
            errors.append(error)
    assert len(intake.pending) == 3
    assert instance.stats()["dropped"] == {"exception_backlog": 2}

    intake.wake_sent = False
    # A dropped exception counts once: capture_exception does not send it later.
    assert instance.capture_exception(errors[4]) is None
    assert instance.flush(timeout=5)
    messages = [e["properties"]["log_message"] for e in exception_events(instance)]
    assert messages == ["backlog 0", "backlog 1", "backlog 2"]
    stats = assert_ledger(instance)
    assert stats["dropped"] == {"exception_backlog": 2}
