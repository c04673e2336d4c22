"""The structlog processor: error-level events with `exc_info` become `$exception` events."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import structlog
from conftest import StartInstance, exception_events

import phactor
from phactor.integrations.structlog import capture_exceptions, capture_exceptions_for


@pytest.fixture
def inst(start_test_mode: StartInstance) -> phactor.Instance:
    return start_test_mode()


def stdlib_logger(instance_name: str, name: str = "app.structlog") -> Any:
    """A structlog logger that ends in stdlib logging (so phactor's root handler sees it too)."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[
            structlog.stdlib.add_log_level,
            capture_exceptions_for(instance_name),
            structlog.stdlib.render_to_log_kwargs,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def refund(order: int) -> None:
    raise LookupError(f"no payment for order {order}")


def test_exception_with_bound_context_is_captured_once(inst):
    slog = stdlib_logger(inst.name).bind(order_id=12, distinct_id="shopper-1")
    try:
        refund(12)
    except LookupError:
        slog.exception("refund failed", attempt=2)

    [event] = exception_events(inst)  # not a second one from the stdlib handler
    props = event["properties"]
    assert event["distinct_id"] == "shopper-1"
    assert props["$exception_source"] == "structlog"
    assert props["$exception_level"] == "error"
    assert (props["order_id"], props["attempt"]) == (12, 2)
    assert props["log_message"] == "refund failed"
    assert props["logger_name"] == "app.structlog"
    [entry] = props["$exception_list"]
    assert entry["type"] == "LookupError"
    assert entry["stacktrace"]["frames"][-1]["function"] == "refund"


def test_exc_info_as_exception_or_tuple_and_levels(inst):
    slog = stdlib_logger(inst.name)
    try:
        refund(1)
    except LookupError as error:
        slog.error("as object", exc_info=error)
    try:
        refund(2)
    except LookupError as error:
        slog.critical("as tuple", exc_info=(type(error), error, error.__traceback__))
    try:
        refund(3)
    except LookupError:
        slog.warning("below capture_level", exc_info=True)
    slog.error("no exception at all")

    levels = [e["properties"]["$exception_level"] for e in exception_events(inst)]
    assert levels == ["error", "fatal"]


def test_processor_returns_the_event_dict_unchanged(inst):
    processor = capture_exceptions_for(inst.name)
    try:
        refund(5)
    except LookupError as error:
        event_dict = {"event": "failed", "exc_info": error, "user": "u"}
        snapshot = dict(event_dict)
        assert processor(None, "error", event_dict) is event_dict
    assert event_dict == snapshot
    assert len(exception_events(inst)) == 1


def test_default_processor_targets_the_default_instance():
    inst = phactor.start("default", test_mode=True)
    try:
        try:
            refund(6)
        except LookupError:
            capture_exceptions(None, "exception", {"event": "x", "exc_info": True})
        assert len(exception_events(inst)) == 1
    finally:
        inst.stop(timeout=5)


def test_no_instance_or_error_tracking_off_is_a_no_op(instance_name, start_test_mode):
    processor = capture_exceptions_for(instance_name)
    event_dict = {"event": "x", "exc_info": ValueError("nobody listens")}
    assert processor(None, "error", event_dict) is event_dict  # no such instance: fine

    inst = start_test_mode(enable_error_tracking=False)
    assert processor(None, "error", event_dict) is event_dict
    assert exception_events(inst) == []


def test_bad_instance_name_is_a_type_error():
    with pytest.raises(TypeError):
        capture_exceptions_for("")
