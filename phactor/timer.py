"""One process-wide scheduler thread for delayed calls (pykka has no `send_after`).

A heap and a Condition: one thread serves every instance's flush timer and the flag poller,
instead of a `threading.Timer` thread per shot. Callbacks must be quick (they usually `tell`
an actor); an exception in one is logged and does not stop the scheduler.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable

from phactor._log import get_logger
from phactor._sigmask import signals_blocked

__all__ = ["Scheduler", "scheduler"]

_log = get_logger("timer")


class Scheduler:
    """Runs callbacks after a delay on one daemon thread, started on first use."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._waiting: set[int] = set()  # handles still in the heap
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def call_later(self, delay: float, callback: Callable[[], None]) -> int:
        """Run `callback` after `delay` seconds; returns a handle for `cancel`."""
        self._ensure_thread()
        with self._cond:
            handle = next(self._ids)
            heap = self._heap
            heapq.heappush(heap, (time.monotonic() + delay, handle, callback))
            self._waiting.add(handle)
            if heap[0][1] == handle:  # due first: the thread must wait less (else: no wake-up)
                self._cond.notify()
            return handle

    def cancel(self, handle: int) -> None:
        """Forget a pending callback (a no-op when it already ran)."""
        with self._cond:
            if handle not in self._waiting:  # one that already ran must not be remembered
                return
            self._cancelled.add(handle)
            self._drop_cancelled_heads()

    def _drop_cancelled_heads(self) -> None:
        # Cancelled entries due first leave the heap now, not when due: a request deadline is
        # cancelled as its request ends, so the thread would otherwise wake once for each
        # request, `request_timeout` later, only to drop it. (Called holding the lock.)
        heap = self._heap
        cancelled = self._cancelled
        while heap and heap[0][1] in cancelled:
            _, first, _ = heapq.heappop(heap)
            self._waiting.discard(first)
            cancelled.discard(first)

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():
            # Forked child: the parent's thread and lock state did not come along.
            self.__init__()  # type: ignore[misc]
        if self._thread is None or not self._thread.is_alive():
            with self._cond:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="phactor-scheduler", daemon=True
                    )
                    with signals_blocked():
                        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    self._drop_cancelled_heads()
                    if not self._heap:
                        self._cond.wait()
                        continue
                    due, handle, callback = self._heap[0]
                    now = time.monotonic()
                    if due > now:
                        self._cond.wait(due - now)
                        continue
                    heapq.heappop(self._heap)
                    self._waiting.discard(handle)
                    if handle in self._cancelled:
                        self._cancelled.discard(handle)
                        continue
                    break
            try:
                callback()
            except Exception:
                _log.exception("scheduled_callback_failed")


scheduler = Scheduler()


def _after_fork_in_child() -> None:
    # The parent's thread did not come along and its Condition may have been held at fork
    # time: a fresh state (the thread starts again on the next call_later).
    scheduler.__init__()  # type: ignore[misc]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
