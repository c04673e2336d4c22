"""Error tracking: turning exceptions and error records into PostHog `$exception` properties.

`formatting` is the pure core (no threads; file reads only through `SourceCache`); `handler`
holds the capture sources (logging handler, except hooks) and their guards; `actor` the
LoggerHandler that builds events off the app's threads; `methods` the Instance methods and the
module-level `capture_exception`. See docs/error-tracking.md.

Names are imported on first access (PEP 562), so `import phactor` does not load the formatting
core, the handler or the actor; an instance with error tracking on loads them at `start()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phactor._lazy import lazy_exports

if TYPE_CHECKING:
    from phactor.errortracking.actor import LoggerHandler
    from phactor.errortracking.formatting import (
        DEFAULT_MAX_EXCEPTIONS,
        DEFAULT_MAX_FRAMES,
        SourceCache,
        call_site_fingerprint,
        exception_level,
        exception_list,
        exception_properties,
        is_in_app,
        message_exception_list,
        message_exception_properties,
        traceback_of_caller,
    )
    from phactor.errortracking.handler import (
        CaptureHandler,
        TokenBuckets,
        already_captured,
        inside_phactor,
        mark_captured,
    )
    from phactor.errortracking.loop import instrument_asyncio
    from phactor.errortracking.methods import capture_exception

_EXPORTS = {
    "LoggerHandler": "actor",
    "DEFAULT_MAX_EXCEPTIONS": "formatting",
    "DEFAULT_MAX_FRAMES": "formatting",
    "SourceCache": "formatting",
    "call_site_fingerprint": "formatting",
    "exception_level": "formatting",
    "exception_list": "formatting",
    "exception_properties": "formatting",
    "is_in_app": "formatting",
    "message_exception_list": "formatting",
    "message_exception_properties": "formatting",
    "traceback_of_caller": "formatting",
    "CaptureHandler": "handler",
    "TokenBuckets": "handler",
    "already_captured": "handler",
    "inside_phactor": "handler",
    "mark_captured": "handler",
    "instrument_asyncio": "loop",
    "capture_exception": "methods",
}

__all__ = [
    "DEFAULT_MAX_EXCEPTIONS",
    "DEFAULT_MAX_FRAMES",
    "CaptureHandler",
    "LoggerHandler",
    "SourceCache",
    "TokenBuckets",
    "already_captured",
    "call_site_fingerprint",
    "capture_exception",
    "exception_level",
    "exception_list",
    "exception_properties",
    "inside_phactor",
    "instrument_asyncio",
    "is_in_app",
    "mark_captured",
    "message_exception_list",
    "message_exception_properties",
    "traceback_of_caller",
]


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
