"""Review of error tracking's capture paths: the record snapshot, structlog with and without
stdlib logging, and a crashing subprocess whose endpoint is slow.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest
import structlog
from conftest import StartInstance, exception_events

import phactor
from phactor.integrations.structlog import capture_exceptions_for

log = logging.getLogger("app.review.paths")


@pytest.fixture
def inst(start_test_mode: StartInstance) -> phactor.Instance:
    return start_test_mode()


class Tagger(logging.Handler):
    """A handler after ours that adds an attribute to the record (as some formatters do)."""

    def emit(self, record: logging.LogRecord) -> None:
        record.added_later = "by another handler"
        record.order_id = "overwritten later"


def test_record_fields_and_extras_are_those_of_the_logging_call(inst):
    root = logging.getLogger()
    tagger = Tagger()
    root.addHandler(tagger)  # after phactor's handler, on the same record
    try:
        try:
            raise ValueError("declined")
        except ValueError:
            log.exception("order %s failed", 7, extra={"order_id": 7, "_private": 1})
    finally:
        root.removeHandler(tagger)
    [event] = exception_events(inst)
    props = event["properties"]
    assert props["order_id"] == 7 and "added_later" not in props and "_private" not in props
    assert props["logger_name"] == "app.review.paths"
    assert props["log_level"] == "ERROR"
    assert props["log_message"] == "order 7 failed"
    assert props["thread_name"] == "MainThread"
    for field in ("msg", "args", "exc_info", "levelno", "pathname", "funcName", "created"):
        assert field not in props


def test_structlog_without_stdlib_captures_once_with_bound_context(inst):
    slog = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[capture_exceptions_for(inst.name), structlog.processors.KeyValueRenderer()],
    ).bind(distinct_id="kv-user", cart=3)
    try:
        raise KeyError("cart")
    except KeyError:
        slog.exception("cart failed")
    [event] = exception_events(inst)
    assert event["distinct_id"] == "kv-user"
    assert event["properties"]["cart"] == 3
    assert event["properties"]["$exception_source"] == "structlog"


def test_stdlib_records_through_a_structlog_formatter_are_captured_once(inst):
    # structlog's ProcessorFormatter runs the processor on stdlib records too ("foreign" ones):
    # our root handler and the processor both see the exception, and it is sent once.
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, capture_exceptions_for(inst.name)],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.KeyValueRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers.insert(0, handler)  # before phactor's handler
    try:
        try:
            raise OSError("disk")
        except OSError:
            log.exception("write failed")
    finally:
        root.removeHandler(handler)
        handler.stream.close()
    assert len(exception_events(inst)) == 1


def test_uncaught_exception_in_a_subprocess_is_delivered_past_a_slow_endpoint(devserver, tmp_path):
    devserver.delay(1.0)
    script = tmp_path / "crash_slow.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import phactor
            phactor.start(host={devserver.url!r}, api_key="phc_slow", flush_interval=60)
            raise RuntimeError("fatal behind a slow endpoint")
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert proc.returncode == 1
    # The process exited only after the slow request: the event is already there.
    [event] = devserver.events(event="$exception")
    assert event["properties"]["$exception_source"] == "sys.excepthook"
    assert event["properties"]["$exception_list"][0]["value"] == "fatal behind a slow endpoint"
