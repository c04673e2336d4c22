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
            due = time.monotonic() + delay
            heap = self._heap
            # The thread waits for the earliest entry: only an earlier one needs to wake it (a
            # Sender arms a request deadline per batch; waking for each took a GIL turn).
            earlier = not heap or due < heap[0][0]
            heapq.heappush(heap, (due, handle, callback))
            self._waiting.add(handle)
            if earlier:
                self._cond.notify()
            return handle

    def cancel(self, handle: int) -> None:
        """Forget a pending callback (a no-op when it already ran)."""
        with self._cond:
            if handle in self._waiting:  # one that already ran must not be remembered forever
                self._cancelled.add(handle)

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
