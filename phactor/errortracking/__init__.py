"""Error tracking: turning exceptions and error records into PostHog `$exception` properties.

`formatting` is the pure core (no threads; file reads only through `SourceCache`); `handler`
holds the capture sources (logging handler, except hooks) and their guards; `actor` the
LoggerHandler that builds events off the app's threads; `methods` the Instance methods and the
module-level `capture_exception`. See docs/error-tracking.md.
"""

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
