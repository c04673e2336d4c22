"""structlog processor: error-level log events carrying an exception become `$exception` events.

Add it to structlog's processor chain, before the renderer and before anything that turns
`exc_info` into text (`format_exc_info`, `dict_tracebacks`)::

    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars,
        phactor.integrations.structlog.capture_exceptions,   # the "default" instance
        structlog.processors.JSONRenderer(),
    ])

The event's bound context (everything in the event dict but the message and `exc_info`) becomes
properties of the `$exception` event, the message becomes `log_message`. The exception object is
marked as captured, so when structlog's output also goes through stdlib logging to phactor's
logging handler, it is not captured a second time. The processor returns the event dict
unchanged and never raises.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

from phactor import registry
from phactor._log import get_logger

__all__ = ["capture_exceptions", "capture_exceptions_for"]

Processor = Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]

_LEVELS = {
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "exception": logging.ERROR,
    "error": logging.ERROR,
    "err": logging.ERROR,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "msg": logging.INFO,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}
# Keys of the event dict that are not bound context.
_NOT_CONTEXT = frozenset({"event", "exc_info", "exception", "stack_info"})


def _exception_of(exc_info: Any) -> BaseException | None:
    if exc_info is True:
        return sys.exc_info()[1]
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        value = exc_info[1]
        return value if isinstance(value, BaseException) else None
    return None


def _level_of(method_name: str, event_dict: MutableMapping[str, Any]) -> int:
    level = _LEVELS.get(method_name)
    if level is None:
        named = event_dict.get("level")
        level = _LEVELS.get(named.lower(), 0) if isinstance(named, str) else 0
    return level


def _logger_name(logger: Any, event_dict: MutableMapping[str, Any]) -> str | None:
    name = event_dict.get("logger") or event_dict.get("logger_name")
    if not isinstance(name, str):
        name = getattr(logger, "name", None)
    return name if isinstance(name, str) and name else None


def _capture(
    instance_name: str, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> None:
    exc_info = event_dict.get("exc_info")
    if not exc_info:
        return
    inst = registry.find(instance_name)
    if inst is None:
        return
    intake = inst.__dict__.get("_error_intake")
    if intake is None or not intake.installed:
        return  # error tracking is off for this instance
    level = _level_of(method_name, event_dict)
    if level < intake.level:
        return
    exc = _exception_of(exc_info)
    if exc is None:
        return
    message = event_dict.get("event")
    intake.capture_log_event(
        source="structlog",
        exc=exc,
        level=level,
        level_name=logging.getLevelName(level),
        logger_name=_logger_name(logger, event_dict),
        message=_text(message),
        extras={k: v for k, v in event_dict.items() if k not in _NOT_CONTEXT},
    )


def _text(message: Any) -> str | None:
    """The event's message as text; one whose str() raises still names its type (the exception
    is what matters: it must not be lost for its message)."""
    if message is None:
        return None
    try:
        return str(message)
    except Exception:
        return f"<unprintable {type(message).__qualname__} object>"


def _failed(instance_name: str, error: Exception) -> None:
    # Logging must never fail because of error tracking, but a lost exception must show.
    try:
        get_logger("errortracking", instance=instance_name).error(
            "structlog_capture_failed", kind=type(error).__name__
        )
    except Exception:  # pragma: no cover - the last resort of a last resort
        pass


def capture_exceptions_for(instance_name: str) -> Processor:
    """A `capture_exceptions` processor sending to the phactor instance named `instance_name`."""
    if not isinstance(instance_name, str) or not instance_name:
        raise TypeError(f"instance_name must be a non-empty str, got {instance_name!r}")

    def capture_exceptions(
        logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        try:
            _capture(instance_name, logger, method_name, event_dict)
        except Exception as error:
            _failed(instance_name, error)
        return event_dict

    capture_exceptions.__qualname__ = f"capture_exceptions_for({instance_name!r})"
    return capture_exceptions


def capture_exceptions(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor capturing error-level events with `exc_info` (the "default" instance).

    `exc_info` may be True (the exception being handled), an exception, or an exc_info tuple.
    Returns `event_dict` unchanged.
    """
    try:
        _capture("default", logger, method_name, event_dict)
    except Exception as error:
        _failed("default", error)
    return event_dict
