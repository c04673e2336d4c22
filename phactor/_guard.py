"""A per-thread "inside phactor" flag: what is logged while it is set is never captured.

Error tracking must not turn phactor's own work into `$exception` events (that could loop: a
failing send logs, the log becomes an event, the event fails to send...). Code that runs user
callbacks or sends on the app's thread (`before_send`, `sync_mode`) sets it; the logging handler
reads it. It lives here, not in `errortracking`, so the hot path can use it without importing
the error-tracking core.
"""

from __future__ import annotations

import threading

__all__ = ["ThreadFlags", "flags", "inside_phactor"]


class ThreadFlags(threading.local):
    """Per-thread flags read by the logging handler on every record (class defaults: a missing
    attribute would cost an AttributeError each time).

    `inside` is None until the handler has classified the thread: then True on one of
    phactor's own threads (for good) and False on an app thread, set to True while it runs
    phactor code. One read answers "capture nothing here?" on the hot path.
    """

    inside: bool | None = None
    phactor_thread: bool | None = None


flags = ThreadFlags()


class inside_phactor:
    """Mark the current thread as running phactor code: nothing logged meanwhile is captured."""

    __slots__ = ("_before",)

    def __enter__(self) -> None:
        self._before = flags.inside
        flags.inside = True

    def __exit__(self, *exc_info: object) -> None:
        flags.inside = self._before
