"""Start phactor's threads with the process-directed signals blocked.

Python runs signal handlers on the main thread only, but the kernel may deliver a signal sent
to the process to any thread that does not block it. A signal landing on one of phactor's
threads only sets a flag: the main thread, blocked in a C call (a multiprocessing lock, say),
is never woken, and the handler (SIGTERM's drain, the app's own) never runs. Threads inherit
the creator's mask, so phactor blocks these while it starts its threads.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

__all__ = ["signals_blocked"]

_SIGNALS = frozenset(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM")
    if hasattr(signal, name)
)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Threads started inside the block never receive the process-directed signals."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:  # pragma: no cover - not POSIX
        yield
        return
    before = mask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, before)
