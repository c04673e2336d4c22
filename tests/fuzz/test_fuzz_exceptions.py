"""Fuzz error tracking with hostile exception objects: `capture_exception` and logging.

Exceptions whose __str__/__repr__ raise, cyclic __cause__/__context__ chains, nested
ExceptionGroups, tracebacks up to 1,000 frames deep, hostile args, notes and `extra=` values.
Every call returns within a bound and raises only TypeError/ValueError; every exception handed
over becomes an `$exception` event or a counted drop; the LoggerHandler keeps working after each
one (a plain logged exception still arrives); the stats invariant holds.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import StartInstance, exception_events
from fuzz_support import (
    RaisingStr,
    big_ints,
    bounded,
    floats,
    fuzz_timeout,
    json_hostile_values,
    ledger,
    property_maps,
    run_script,
    safe_text,
    surrogate_text,
    valid_distinct_ids,
    wrong_types,
)
from hypothesis import given
from hypothesis import strategies as st

import phactor
import phactor.testing
from phactor.integrations.structlog import capture_exceptions_for

pytestmark = fuzz_timeout

log = logging.getLogger("app.fuzz")

# Attributes a LogRecord has: `extra=` may not use them (logging raises KeyError itself).
_RECORD_KEYS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class HostileError(Exception):
    """str() and repr() raise."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ refuses")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ refuses")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("<HostileError>")


class OddModuleError(Exception):
    pass


OddModuleError.__module__ = None  # type: ignore[assignment]
OddModuleError.__qualname__ = "Odd <module-less> error" * 20


class StrSubclassMessageError(Exception):
    def __str__(self) -> Any:
        return 42  # not a str: str(exc) raises TypeError


EXCEPTION_TYPES: list[type[BaseException]] = [
    ValueError,
    KeyError,
    OSError,
    RuntimeError,
    KeyboardInterrupt,
    SystemExit,
    HostileError,
    OddModuleError,
    StrSubclassMessageError,
]

# Values an exception may carry (args, notes): no cycle, no surrogate, no >4300-digit int.
exception_args = st.lists(
    st.one_of(safe_text, big_ints, floats, st.builds(RaisingStr), json_hostile_values), max_size=3
)


def _raise_at_depth(exc: BaseException, depth: int) -> BaseException:
    def dive(n: int) -> None:
        if n <= 0:
            raise exc
        dive(n - 1)

    try:
        dive(depth)
    except BaseException as raised:
        return raised
    raise AssertionError("unreachable")


@st.composite
def hostile_exceptions(draw: st.DrawFn) -> BaseException:
    kind = draw(st.sampled_from(EXCEPTION_TYPES))
    exc = kind(*draw(exception_args))
    if draw(st.booleans()):
        exc.__notes__ = draw(st.lists(safe_text | wrong_types, max_size=3))  # type: ignore[attr-defined]
    links = draw(st.sampled_from(["none", "cause", "context", "cycle", "self", "group", "deep"]))
    if links == "cause":
        exc.__cause__ = ValueError(*draw(exception_args))
    elif links == "context":
        exc.__context__ = draw(st.sampled_from(EXCEPTION_TYPES))(*draw(exception_args))
        exc.__suppress_context__ = draw(st.booleans())
    elif links == "cycle":
        other = RuntimeError("other")
        exc.__cause__ = other
        other.__context__ = exc
    elif links == "self":
        exc.__context__ = exc
    elif links == "group":
        inner = ExceptionGroup("inner", [ValueError("a"), TypeError("b")])
        exc = BaseExceptionGroup("outer", [exc, inner, KeyError("c")])
        exc.__cause__ = inner
    elif links == "deep":
        for n in range(draw(st.integers(2, 200))):  # a long __context__ chain
            outer = ValueError(f"level {n}")
            outer.__context__ = exc
            exc = outer
    depth = draw(st.sampled_from([None, 0, 1, 50, 1000]) | st.integers(0, 1000))
    if depth is not None:
        exc = _raise_at_depth(exc, depth)
    return exc


@pytest.fixture
def deep_recursion() -> Iterator[None]:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 3000))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


@pytest.fixture
def inst(start_test_mode: StartInstance, deep_recursion: None) -> phactor.Instance:
    # A burst that never limits: every fuzzed exception must become an event.
    return start_test_mode(exception_rate_limit_burst=1_000_000)


def assert_still_tracking(inst: phactor.Instance) -> None:
    """The LoggerHandler is alive and not wedged: a plain logged exception arrives."""
    before = len(exception_events(inst))
    try:
        raise ValueError("liveness probe")
    except ValueError:
        log.exception("probe")
    assert len(exception_events(inst)) == before + 1, "the LoggerHandler stopped producing events"


def settled(inst: phactor.Instance) -> dict[str, Any]:
    assert inst._error_tracking_drain(5.0)
    assert inst.flush(5.0)
    return ledger(inst)


def test_capture_exception_with_generated_exceptions(inst: phactor.Instance) -> None:
    @given(
        exc=hostile_exceptions(),
        distinct_id=st.none() | valid_distinct_ids,
        props=st.none() | property_maps,
        module=st.booleans(),
    )
    def run(exc: BaseException, distinct_id: Any, props: Any, module: bool) -> None:
        phactor.testing.clear(inst.name)
        before = settled(inst)
        if module:
            value, error = bounded(
                phactor.capture_exception, exc, distinct_id, props, instance=inst.name
            )
        else:
            value, error = bounded(inst.capture_exception, exc, distinct_id, props)
        assert error is None, error
        after = settled(inst)
        events = exception_events(inst)
        if value is None:
            assert sum(after["dropped"].values()) > sum(before["dropped"].values()), after
        else:
            assert [e["uuid"] for e in events] == [value]
            (event,) = events
            assert event["properties"]["$exception_list"]
        # Sent once per object: a second capture of the same object is None, nothing counted.
        again, _ = bounded(inst.capture_exception, exc)
        assert again is None
        assert settled(inst)["captured"] == after["captured"]

    run()
    assert_still_tracking(inst)


def test_capture_exception_with_wrong_arguments_raises_type_error(inst: phactor.Instance) -> None:
    @given(
        exc=wrong_types.filter(lambda v: v is not None and not isinstance(v, BaseException)),
        props=st.none() | wrong_types.filter(lambda v: not isinstance(v, dict)),
    )
    def run(exc: Any, props: Any) -> None:
        before = ledger(inst)
        _, error = bounded(inst.capture_exception, exc, "u", props)
        assert isinstance(error, TypeError)
        assert ledger(inst)["captured"] == before["captured"]

    run()


def test_logged_hostile_exceptions_become_events(inst: phactor.Instance) -> None:
    @given(
        exc=hostile_exceptions(),
        extra=st.dictionaries(
            safe_text.filter(lambda k: k not in _RECORD_KEYS), json_hostile_values, max_size=4
        ),
        how=st.sampled_from(["exception", "error", "critical"]),
        # Args logging itself can format (one whose str() raises is stdlib's "Logging error").
        message_args=st.lists(safe_text | big_ints | floats | wrong_types, max_size=2),
    )
    def run(exc: BaseException, extra: dict[str, Any], how: str, message_args: list[Any]) -> None:
        phactor.testing.clear(inst.name)
        before = settled(inst)
        message = "fuzzed" + " %s" * len(message_args)

        def log_it() -> None:
            if how == "exception":
                try:
                    raise exc
                except BaseException:
                    log.exception(message, *message_args, extra=extra)
            else:
                getattr(log, how)(message, *message_args, exc_info=exc, extra=extra)

        _, error = bounded(log_it)
        assert error is None, error
        after = settled(inst)
        # Exactly one exception event built, and it was sent (test mode) or counted dropped.
        assert after["captured"] == before["captured"] + 1, (before, after)
        assert len(exception_events(inst)) + sum(after["dropped"].values()) - sum(
            before["dropped"].values()
        ) == 1

    run()
    assert_still_tracking(inst)


def test_structlog_processor_with_generated_event_dicts(inst: phactor.Instance) -> None:
    """The structlog processor returns the event dict untouched, never raises, and an
    error-level event with an exception becomes exactly one event."""
    processor = capture_exceptions_for(inst.name)

    @given(
        message=st.none() | safe_text | json_hostile_values | st.builds(RaisingStr),
        extra=st.dictionaries(
            safe_text.filter(lambda k: k not in ("event", "exc_info", "exception")),
            json_hostile_values,
            max_size=3,
        ),
        method=st.sampled_from(["error", "exception", "critical", "warning", "info"]),
        form=st.sampled_from(["exception", "true", "tuple"]),
        exc=hostile_exceptions(),
    )
    def run(
        message: Any, extra: dict[str, Any], method: str, form: str, exc: BaseException
    ) -> None:
        before = settled(inst)
        event_dict: dict[str, Any] = {**extra, "event": message}

        def log_it() -> Any:
            try:
                raise exc
            except BaseException as raised:
                exc_info: Any = {
                    "exception": raised,
                    "true": True,
                    "tuple": (type(raised), raised, raised.__traceback__),
                }[form]
                event_dict["exc_info"] = exc_info
                return processor(None, method, event_dict)

        returned, error = bounded(log_it)
        assert error is None and returned is event_dict
        after = settled(inst)
        expected = 1 if method in ("error", "exception", "critical") else 0
        assert after["captured"] == before["captured"] + expected, (before, after)

    run()


# --- known defects, fuzzed ----------------------------------------------------------------------


def test_surrogates_in_exceptions_are_replaced_and_sent(inst: phactor.Instance) -> None:
    @given(text=surrogate_text, where=st.sampled_from(["message", "extra", "property", "note"]))
    def run(text: str, where: str) -> None:
        phactor.testing.clear(inst.name)
        exc = ValueError(text if where == "message" else "x")
        if where == "note":
            exc.add_note(text)
        try:
            raise exc
        except ValueError:
            if where == "property":
                sent = inst.capture_exception(exc, "u", {"p": text})
                assert sent is not None
            else:
                log.exception("fuzzed", extra={"x_fuzz": text} if where == "extra" else None)
        settled(inst)
        assert len(exception_events(inst)) == 1

    run()


def test_an_exception_event_that_cannot_be_built_is_counted(inst: phactor.Instance) -> None:
    @given(digits=st.integers(4400, 10_000), via_log=st.booleans())
    def run(digits: int, via_log: bool) -> None:
        before = settled(inst)
        try:
            raise ValueError("big")
        except ValueError as exc:
            if via_log:
                log.exception("fuzzed", extra={"x_big": 10**digits})
            else:
                inst.capture_exception(exc, "u", {"big": 10**digits})
        after = settled(inst)
        assert after["captured"] == before["captured"] + 1, (before, after)

    run()


CYCLIC_EXTRAS_IN_A_CHILD = """
import logging, faulthandler
import phactor
from conftest import exception_events
from fuzz_support import cyclic_graph
from hypothesis import given, strategies as st
import conftest  # the suite's hypothesis profiles
from fuzz_support import CHILD_BOUND

faulthandler.dump_traceback_later(CHILD_BOUND, exit=True)  # a wedged handler ends the child
inst = phactor.start("fuzz", test_mode=True, exception_rate_limit_burst=10**6)
log = logging.getLogger("app.fuzz")
spec = st.lists(
    st.tuples(st.booleans(), st.lists(st.integers(0, 50), min_size=1, max_size=3)),
    min_size=1, max_size=6,
)

@given(spec=spec, via_log=st.booleans())
def run(spec, via_log):
    phactor.testing.clear("fuzz")
    graph = cyclic_graph(spec)
    try:
        raise ValueError("cyclic")
    except ValueError as exc:
        if via_log:
            log.exception("fuzzed", extra={"x_graph": graph})
        else:
            assert inst.capture_exception(exc, "u", {"graph": graph}) is not None
    assert len(exception_events(inst)) == 1

run()
inst.stop(5)
"""


def test_cyclic_values_in_exception_events_are_cut_and_sent() -> None:
    run_script(CYCLIC_EXTRAS_IN_A_CHILD)
