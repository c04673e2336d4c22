"""Routing of logged and uncaught exceptions: one root handler, one instance per exception.

Issue 16 item 3: with several instances tracking errors, every instance's root handler used to
send every logged exception (100 instances: 100 copies, in 100 projects). Now the "default"
instance (else the first started) receives them, an instance may claim loggers
(`error_tracking_loggers`), and a stop hands over to the next.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import StartInstance, assert_ledger
from hypothesis import given
from hypothesis import strategies as st

import phactor
from phactor.devserver import DevServer
from phactor.errortracking import routing
from phactor.errortracking.handler import CaptureHandler

EXC = "$exception"


def fail(n: int) -> None:
    raise ValueError(f"boom {n}")


def log_exceptions(logger_name: str, count: int) -> None:
    log = logging.getLogger(logger_name)
    for n in range(count):
        try:
            fail(n)
        except ValueError:
            log.exception("failed")


def per_key(server: DevServer, keys: list[str]) -> list[int]:
    return [server.count(EXC, api_key=key) for key in keys]


def flush_all(instances: list[phactor.Instance]) -> None:
    for inst in instances:
        assert inst.flush(timeout=10)
        assert_ledger(inst)


def start_many(
    start_instance: StartInstance, server: DevServer, n: int, **options: Any
) -> tuple[list[phactor.Instance], list[str]]:
    keys = [f"phc_route_{i}" for i in range(n)]
    instances = [start_instance(api_key=k, host=server.url, **options) for k in keys]
    return instances, keys


def routing_handlers() -> list[logging.Handler]:
    return [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, routing.RoutingHandler | CaptureHandler)
    ]


def test_a_logged_exception_reaches_one_project(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    instances, keys = start_many(start_instance, devserver, 4)
    log_exceptions("app.checkout", 3)
    flush_all(instances)
    # Before: [3, 3, 3, 3] (every instance's root handler sent every record).
    assert per_key(devserver, keys) == [3, 0, 0, 0]


def test_the_default_instance_receives_even_when_started_later(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    other = start_instance(api_key="phc_route_other", host=devserver.url)
    default = phactor.start("default", api_key="phc_route_default", host=devserver.url)
    try:
        log_exceptions("app", 2)
        flush_all([other, default])
        assert per_key(devserver, ["phc_route_other", "phc_route_default"]) == [0, 2]
    finally:
        default.stop(timeout=5)


def test_claimed_loggers_and_their_children_go_to_the_claimant(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    main = start_instance(api_key="phc_route_main", host=devserver.url)
    billing = start_instance(
        api_key="phc_route_billing", host=devserver.url, error_tracking_loggers=["billing"]
    )
    log_exceptions("billing", 2)
    log_exceptions("billing.invoices", 3)
    log_exceptions("billingx", 1)  # not a child: a name that only starts the same
    log_exceptions("app", 4)
    flush_all([main, billing])
    assert per_key(devserver, ["phc_route_main", "phc_route_billing"]) == [5, 5]


def test_a_claim_claimed_twice_warns_once_and_the_first_keeps_it(
    devserver: DevServer, start_instance: StartInstance, caplog: pytest.LogCaptureFixture
) -> None:
    main = start_instance(api_key="phc_route_main", host=devserver.url)
    with caplog.at_level(logging.WARNING, logger="phactor"):
        first = start_instance(
            api_key="phc_route_a", host=devserver.url, error_tracking_loggers=["billing"]
        )
        second = start_instance(
            api_key="phc_route_b", host=devserver.url, error_tracking_loggers=["billing"]
        )
    warnings = [r for r in caplog.records if "error_tracking_loggers_conflict" in r.getMessage()]
    assert len(warnings) == 1
    log_exceptions("billing.x", 2)
    flush_all([main, first, second])
    assert per_key(devserver, ["phc_route_main", "phc_route_a", "phc_route_b"]) == [0, 2, 0]
    # The first claimant stops: the claim passes to the second, not to the receiver.
    first.stop(timeout=5)
    log_exceptions("billing", 1)
    flush_all([main, second])
    assert per_key(devserver, ["phc_route_main", "phc_route_a", "phc_route_b"]) == [0, 2, 1]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_stopping_the_receiver_hands_over_to_the_next(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    instances, keys = start_many(start_instance, devserver, 3)
    log_exceptions("app", 1)
    instances[0].stop(timeout=5)
    log_exceptions("app", 2)
    # Uncaught in a thread: the threading hook follows the same routing.
    thread = threading.Thread(target=fail, args=(99,))
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    instances[1].stop(timeout=5)
    log_exceptions("app", 4)
    flush_all([instances[2]])
    assert per_key(devserver, keys) == [1, 3, 4]


def test_one_root_handler_and_one_pair_of_hooks_however_many_instances(
    start_instance: StartInstance,
) -> None:
    import sys

    sys_before, thread_before = sys.excepthook, threading.excepthook
    root_before = list(logging.getLogger().handlers)
    instances = [start_instance(test_mode=True) for _ in range(12)]
    # Before: 12 handlers (one CaptureHandler per instance).
    assert len(routing_handlers()) == 1
    for inst in instances:
        inst.stop(timeout=5)
    assert routing_handlers() == []
    assert logging.getLogger().handlers == root_before
    assert sys.excepthook is sys_before and threading.excepthook is thread_before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_routes_to_one_project(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    instances, keys = start_many(start_instance, devserver, 3)
    pid = os.fork()
    if pid == 0:  # the child: log, flush what it captured, leave without cleanup
        code = 1
        try:
            log_exceptions("app.child", 2)
            code = 0 if all(inst.flush(timeout=10) for inst in instances) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status) == 0
    assert per_key(devserver, keys) == [2, 0, 0]


# -- the routing table, for any claims and logger names --------------------------------------

_names = st.lists(st.sampled_from(["a", "b", "ab", "c"]), min_size=1, max_size=3).map(".".join)


def _fake(name: str, claims: tuple[str, ...]) -> Any:
    return SimpleNamespace(name=name, claims=claims, level=logging.ERROR, handler=None, hooks=None)


def _expected(intakes: list[Any], logger: str) -> Any:
    best, best_len = None, -1
    for intake in intakes:  # the first claimant of a name owns it
        for claim in intake.claims:
            if (logger == claim or logger.startswith(claim + ".")) and len(claim) > best_len:
                best, best_len = intake, len(claim)
    if best is not None:
        return best
    for intake in intakes:
        if intake.name == "default":
            return intake
    return next((i for i in intakes if not i.claims), intakes[0])


@given(
    claims=st.lists(st.lists(_names, max_size=3).map(tuple), min_size=1, max_size=4),
    has_default=st.booleans(),
    loggers=st.lists(_names, min_size=1, max_size=6),
)
def test_each_logger_routes_to_its_longest_claim_else_the_receiver(
    claims: list[tuple[str, ...]], has_default: bool, loggers: list[str]
) -> None:
    names = [f"fake-{i}" for i in range(len(claims))]
    if has_default:
        names[-1] = "default"
    intakes = [_fake(n, c) for n, c in zip(names, claims, strict=True)]
    logging.getLogger("phactor").disabled = True  # conflict warnings are not this test's subject
    try:
        for intake in intakes:
            routing.register(intake)
        for logger in loggers:
            assert routing.route(logger) is _expected(intakes, logger)
    finally:
        for intake in intakes:
            routing.unregister(intake)
        logging.getLogger("phactor").disabled = False
    assert routing.receiver() is None


@given(
    value=st.one_of(
        st.integers(),
        st.none(),
        st.just(""),
        st.lists(st.one_of(st.integers(), st.just(""), st.just("a\nb")), min_size=1),
    )
)
def test_a_bad_error_tracking_loggers_value_is_a_config_error_naming_it(value: Any) -> None:
    from phactor.config import Config
    from phactor.errors import ConfigError

    with pytest.raises(ConfigError, match="error_tracking_loggers"):
        Config.build(error_tracking_loggers=value)


@given(names=st.lists(st.text(min_size=1).filter(str.isprintable), max_size=5))
def test_good_error_tracking_loggers_values_are_kept_in_order_without_duplicates(
    names: list[str],
) -> None:
    from phactor.config import Config

    assert Config.build(error_tracking_loggers=names).error_tracking_loggers == tuple(
        dict.fromkeys(names)
    )
