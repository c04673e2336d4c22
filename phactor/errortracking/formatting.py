"""Exception formatting for PostHog error tracking: the properties of an `$exception` event.

The pure core of error tracking, entry point: the LoggerHandler actor calls these functions off
the app's threads; they never raise, because a failure to describe an error must not become a
second error. The only I/O is reading source files, through a `SourceCache` the caller owns.
The core is split by concern, each module importing only the ones before it:

- `wire`: wire-safe text and values (surrogates, byte bounds, `wire_safe`);
- `frames`: frames and source context (`SourceCache`, `is_in_app`, `traceback_of_caller`);
- `exceptions`: the `$exception_list` of an exception (chains, groups) or of an error record;
- this module: `$exception_level`, `$exception_fingerprint` and the whole property set.
"""

from __future__ import annotations

import hashlib
import os
import types
from collections.abc import Sequence
from typing import Any

from phactor.errortracking.exceptions import (
    DEFAULT_MAX_EXCEPTIONS,
    DEFAULT_MAX_FRAMES,
    exception_list,
    message_exception_list,
)
from phactor.errortracking.frames import SourceCache
from phactor.errortracking.frames import traceback_of_caller as traceback_of_caller
from phactor.errortracking.wire import safe_str

__all__ = [
    "call_site_fingerprint",
    "exception_level",
    "exception_properties",
    "message_exception_properties",
    "traceback_of_caller",
]

# `traceback_of_caller` is re-exported: errortracking/methods.py imports it from here.

_LEVELS = {
    "fatal": "fatal",
    "critical": "fatal",
    "alert": "fatal",
    "emergency": "fatal",
    "error": "error",
    "exception": "error",
    "warning": "warning",
    "warn": "warning",
    "log": "log",
    "notice": "info",
    "info": "info",
    "debug": "debug",
    "trace": "debug",
}


def exception_level(level: object) -> str:
    """PostHog's `$exception_level` for a level name or a `logging` level number.

    Names follow the `posthog` package ("critical" -> "fatal", "warn" -> "warning"); numbers map
    by `logging` thresholds (CRITICAL and above -> "fatal"). Anything else is "error".
    """
    if isinstance(level, str):
        return _LEVELS.get(level.lower(), "error")
    if isinstance(level, int) and not isinstance(level, bool):
        if level >= 50:
            return "fatal"
        if level >= 40:
            return "error"
        if level >= 30:
            return "warning"
        if level >= 20:
            return "info"
        return "debug"
    return "error"


def exception_properties(
    exc: BaseException,
    *,
    level: str | int = "error",
    source: str | None = None,
    handled: bool = True,
    mechanism_type: str = "generic",
    fingerprint: str | None = None,
    in_app_modules: Sequence[str] = (),
    project_root: str | None = None,
    sources: SourceCache | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_exceptions: int = DEFAULT_MAX_EXCEPTIONS,
    synthetic_traceback: types.TracebackType | None = None,
) -> dict[str, Any]:
    """The error-tracking properties of an `$exception` event for `exc`. Never raises.

    `$exception_list`, `$exception_level` (see `exception_level`), `$exception_source` when a
    source is given, and `$exception_fingerprint` when a fingerprint is given (it overrides
    PostHog's grouping). These are all the `posthog` package sends: PostHog derives
    `$exception_types`, `$exception_values`, `$exception_functions`, the issue id and its own
    fingerprint from the list at ingestion, so an SDK must not send them.
    Uncaught exceptions: `level="fatal", handled=False, mechanism_type="onuncaughtexception"`.
    """
    properties: dict[str, Any] = {
        "$exception_list": exception_list(
            exc,
            handled=handled,
            mechanism_type=mechanism_type,
            in_app_modules=in_app_modules,
            project_root=project_root,
            sources=sources,
            max_frames=max_frames,
            max_exceptions=max_exceptions,
            synthetic_traceback=synthetic_traceback,
        ),
        "$exception_level": exception_level(level),
    }
    if isinstance(source, str) and source:
        properties["$exception_source"] = source
    if isinstance(fingerprint, str) and fingerprint:
        properties["$exception_fingerprint"] = fingerprint
    return properties


# -- error records without an exception ----------------------------------------------------------


def call_site_fingerprint(
    logger_name: str | None, pathname: str | None, function: str | None, level: str | int = "error"
) -> str:
    """A stable `$exception_fingerprint` for error records logged from one call site.

    Built from the logger name, the file's base name, the function and the level, not from the
    message (interpolated values would split one issue into thousands) nor the line number (an
    edit above the call would start a new issue) nor the directory (it differs between deploys).
    """
    parts = (
        "phactor.log.v1",
        safe_str(logger_name or "root"),
        os.path.basename(safe_str(pathname or "")),
        safe_str(function or ""),
        exception_level(level),
    )
    return hashlib.sha256("\0".join(parts).encode("utf-8", errors="replace")).hexdigest()


def message_exception_properties(
    message: str,
    *,
    logger_name: str | None,
    function: str | None,
    pathname: str | None,
    lineno: int | None,
    level: str | int = "error",
    source: str | None = "logging",
    module: str | None = None,
    in_app_modules: Sequence[str] = (),
    project_root: str | None = None,
    sources: SourceCache | None = None,
) -> dict[str, Any]:
    """Error-tracking properties for an error record without an exception. Never raises.

    As `exception_properties`, with `message_exception_list` as the list and
    `call_site_fingerprint` as `$exception_fingerprint`, so every record from one call site lands
    in one issue whatever its interpolated message.
    """
    properties: dict[str, Any] = {
        "$exception_list": message_exception_list(
            message,
            logger_name=logger_name,
            function=function,
            pathname=pathname,
            lineno=lineno,
            module=module,
            in_app_modules=in_app_modules,
            project_root=project_root,
            sources=sources,
        ),
        "$exception_level": exception_level(level),
        "$exception_fingerprint": call_site_fingerprint(logger_name, pathname, function, level),
    }
    if isinstance(source, str) and source:
        properties["$exception_source"] = source
    return properties
