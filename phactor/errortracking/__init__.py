"""Error tracking: turning exceptions and error records into PostHog `$exception` properties.

The pure core (no threads; file reads only through `SourceCache`): `wire` (wire-safe text and
values), `frames` (frames and source context), `exceptions` (the `$exception_list`: chains,
groups), `formatting` (the event's `$exception_*` properties). On the app's threads: `guards`,
`ratelimit`, `snapshot` (what is handed over), `handler` (the logging handler and the `Intake`
every source hands off to), `hooks` (sys/threading except hooks), `loop` (asyncio). Off them:
`builder` (one snapshot's event) and `actor` (the LoggerHandler and its watchdog). `methods`
holds the Instance methods and the module-level `capture_exception`. See docs/error-tracking.md.

Names are imported on first access (PEP 562), so `import phactor` does not load the formatting
core, the handler or the actor; an instance with error tracking on loads them at `start()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phactor._lazy import lazy_exports

if TYPE_CHECKING:
    from phactor.errortracking.actor import LoggerHandler
    from phactor.errortracking.exceptions import (
        DEFAULT_MAX_EXCEPTIONS,
        DEFAULT_MAX_FRAMES,
        exception_list,
        message_exception_list,
    )
    from phactor.errortracking.formatting import (
        call_site_fingerprint,
        exception_level,
        exception_properties,
        message_exception_properties,
    )
    from phactor.errortracking.frames import SourceCache, is_in_app, traceback_of_caller
    from phactor.errortracking.guards import already_captured, inside_phactor, mark_captured
    from phactor.errortracking.handler import CaptureHandler
    from phactor.errortracking.loop import instrument_asyncio
    from phactor.errortracking.methods import capture_exception
    from phactor.errortracking.ratelimit import TokenBuckets

_EXPORTS = {
    "LoggerHandler": "actor",
    "DEFAULT_MAX_EXCEPTIONS": "exceptions",
    "DEFAULT_MAX_FRAMES": "exceptions",
    "exception_list": "exceptions",
    "message_exception_list": "exceptions",
    "call_site_fingerprint": "formatting",
    "exception_level": "formatting",
    "exception_properties": "formatting",
    "message_exception_properties": "formatting",
    "SourceCache": "frames",
    "is_in_app": "frames",
    "traceback_of_caller": "frames",
    "already_captured": "guards",
    "inside_phactor": "guards",
    "mark_captured": "guards",
    "CaptureHandler": "handler",
    "instrument_asyncio": "loop",
    "capture_exception": "methods",
    "TokenBuckets": "ratelimit",
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
