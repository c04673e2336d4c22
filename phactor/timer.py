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
from typing import Any

from phactor._log import get_logger
from phactor._sigmask import signals_blocked

__all__ = ["Scheduler", "scheduler"]

_log = get_logger("timer")

#: Cancelled entries the heap may hold before it is compacted (when they are also half of it).
_COMPACT_SLACK = 64


class Scheduler:
    """Runs callbacks after a delay on one daemon thread, started on first use.

    A cancelled entry gives its callback (and whatever the callback holds) up at once. It leaves
    the heap at once when due first (the thread never wakes for a cancelled entry), else lazily:
    when cancelled entries are more than half of the heap, it is rebuilt without them. So the
    heap stays under twice the live timers (plus a small slack), however many arm/cancel cycles
    run, at amortised O(1) per cancel. Only an entry due first wakes the thread.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        # [due, handle, callback]; callback None: cancelled, still in the heap.
        self._heap: list[list[Any]] = []
        self._pending: dict[int, list[Any]] = {}  # handle -> its heap entry, until run/cancel
        self._cancelled = 0  # cancelled entries still in the heap
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def call_later(self, delay: float, callback: Callable[[], None]) -> int:
        """Run `callback` after `delay` seconds; returns a handle for `cancel`."""
        self._ensure_thread()
        with self._cond:
            handle = next(self._ids)
            entry = [time.monotonic() + delay, handle, callback]
            heap = self._heap
            heapq.heappush(heap, entry)
            self._pending[handle] = entry
            if heap[0] is entry:  # due first: the thread must wait less (else: no wake-up)
                self._cond.notify()
            return handle

    def cancel(self, handle: int) -> None:
        """Forget a pending callback (a no-op when it already ran or was cancelled)."""
        with self._cond:
            entry = self._pending.pop(handle, None)
            if entry is None:
                return
            entry[2] = None  # released now, not at its deadline
            self._cancelled += 1
            heap = self._heap
            # Cancelled entries due first leave at once, so the thread never wakes for one (a
            # request deadline is cancelled as its request ends).
            while heap and heap[0][2] is None:
                heapq.heappop(heap)
                self._cancelled -= 1
            if self._cancelled > _COMPACT_SLACK and 2 * self._cancelled > len(heap):
                self._heap = [e for e in heap if e[2] is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def pending(self) -> int:
        """How many callbacks are armed and neither ran nor were cancelled."""
        with self._cond:
            return len(self._pending)

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
                    if callback is None:  # cancelled: it leaves now, whenever it was due
                        heapq.heappop(self._heap)
                        self._cancelled -= 1
                        continue
                    now = time.monotonic()
                    if due > now:
                        self._cond.wait(due - now)
                        continue
                    heapq.heappop(self._heap)
                    del self._pending[handle]
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
