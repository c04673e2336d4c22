"""Error tracking: turning exceptions and error records into PostHog `$exception` properties.

`formatting` is the pure core (no threads; file reads only through `SourceCache`).
"""

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

__all__ = [
    "DEFAULT_MAX_EXCEPTIONS",
    "DEFAULT_MAX_FRAMES",
    "SourceCache",
    "call_site_fingerprint",
    "exception_level",
    "exception_list",
    "exception_properties",
    "is_in_app",
    "message_exception_list",
    "message_exception_properties",
    "traceback_of_caller",
]
