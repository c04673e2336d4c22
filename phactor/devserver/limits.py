"""The devserver's limits: what it keeps and accepts, so a buggy or hostile client cannot sink it.

Each ``DEFAULT_*`` is a :class:`~phactor.devserver.DevServer` option (and a CLI flag); the private
bounds below are fixed. docs/devserver.md explains each one.
"""

from __future__ import annotations

import math

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
"""PostHog's ingestion cap: the largest body accepted, on the wire and after decompression."""

DEFAULT_MAX_EVENTS = 100_000
"""The most events kept by default; the oldest are evicted first."""

DEFAULT_MAX_STORED_BYTES = 256 * 1024 * 1024
"""The most bytes of event JSON kept by default; the oldest events are evicted first."""

DEFAULT_MAX_REQUESTS = 10_000
"""The most requests kept in the request log by default; counts cover every request."""

DEFAULT_MAX_CONNECTIONS = 256
"""The most connections served at once by default; more get 503 at once."""

DEFAULT_READ_TIMEOUT = 30.0
"""Seconds a request may take to arrive in full once its first byte came (408 beyond)."""

DEFAULT_IDLE_TIMEOUT = 75.0
"""Seconds a kept-alive connection may wait for its next request before it is closed."""

MAX_CHUNK_LINE = 1024  # a chunk-size line: hex digits and extensions
MAX_TRAILER_LINES = 100
MAX_FORM_FIELDS = 64  # posthog-js sends data= and a few more
MAX_SQL_INT = 2**63 - 1
MAX_UNUSED_BODY_BYTES = 64 * 1024  # bodies of GET/DELETE/404 requests are read and dropped
LARGE_BODY_BYTES = 1024 * 1024  # bodies from this size on (or chunked) are processed ...
LARGE_BODIES_AT_ONCE = 2  # ... at most this many at a time
# Event JSON averages well over this per "," or ":" (a bare event ~13, with properties more);
# bodies of that density under max_body_bytes / 4 are never even scanned.
MIN_BYTES_PER_VALUE = 8


def positive_seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
