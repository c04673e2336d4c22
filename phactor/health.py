"""`DeliveryHealth`: what an operator can see of delivery — drops reported, stalls noticed.

Instance-wide state, kept (like the `EventBuffer`) outside the actors so it survives their
restarts. Three parts:

- **Last success / last error** (`stats()["last_success_at"]`, `stats()["last_error"]`): the
  Senders note every answer; the error text is short and has every key masked.
- **The delivery watchdog**: at each flush tick the Batcher calls `tick`. When events have been
  waiting (queued, in flight, or failing to send) for `watchdog_interval` with no batch
  delivered, one ERROR is logged; the next delivered batch logs an INFO. It adds no timer of its
  own: an idle instance costs it nothing.
- **on_drop**: `report_drops` compares the buffer's drop counters with what was reported so far
  and calls `on_drop(reason, count)` once per reason that grew. It runs on a phactor thread (the
  Batcher's, at each tick; the Supervisor's when the tree gives up; the final one in `stop()`),
  never where the drop was counted, so a drop costs `capture()` nothing more. An exception in the
  callback is logged (rate-limited) and ignored.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from phactor._log import mask_secrets, scrub

__all__ = ["MAX_ERROR_CHARS", "DeliveryHealth", "error_text"]

MAX_ERROR_CHARS = 200
"""The longest `stats()["last_error"]`."""


def error_text(status: int | None, message: str, secrets: tuple[str | None, ...] = ()) -> str:
    """A short, key-free description of a failed request: `"HTTP 503: <message>"`.

    Every form of each of `secrets` (and of every key phactor registered) is masked before the
    text is cut, so a cut key can never stay readable; newlines become spaces.
    """
    message = scrub(mask_secrets(message, secrets))
    text = f"HTTP {status}: {message}" if status is not None else message
    text = " ".join(text.split())
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3] + "..."
    return text


class DeliveryHealth:
    """Last success and error, the watchdog, and `on_drop` reporting for one instance."""

    def __init__(
        self,
        *,
        watchdog_interval: float,
        on_drop: Callable[[str, int], Any] | None,
        log: Any,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.watchdog_interval = watchdog_interval
        self.on_drop = on_drop
        self._log = log
        self._clock = clock
        self._lock = threading.Lock()
        self.last_success_at: float | None = None  # wall clock, seconds since the epoch
        self.last_error: str | None = None
        # Monotonic time since when events have waited without a delivery (None: not waiting).
        self._waiting_since: float | None = None
        self._stalled = False  # the ERROR was logged for the current stall
        self._failed_since_tick = False
        self._reported: Counter[str] = Counter()
        self._report_lock = threading.Lock()
        self._callback_failures = 0

    # --- the Senders -----------------------------------------------------------------------

    def succeeded(self) -> None:
        """A batch (or part of one) was delivered."""
        with self._lock:
            self.last_success_at = time.time()
            since, stalled = self._waiting_since, self._stalled
            self._waiting_since = None
            self._stalled = False
            # A failure before this success is over: only what still waits at the next tick
            # (queued or in flight) starts a new wait.
            self._failed_since_tick = False
        if stalled:
            waited = self._clock() - since if since is not None else 0.0
            self._log.info("delivery_resumed", stalled_for_s=round(waited, 3))

    def failed(self, text: str) -> None:
        """A request failed (network error, retryable status, or a batch dropped by the server)."""
        with self._lock:
            self.last_error = text
            self._failed_since_tick = True
            if self._waiting_since is None:
                self._waiting_since = self._clock()

    # --- the Batcher's tick ----------------------------------------------------------------

    def tick(self, stats: Mapping[str, Any]) -> None:
        """At each flush tick: the watchdog check, then the drops to report (`stats()` now)."""
        self._watch(stats)
        self.report_drops(stats["dropped"])

    def _watch(self, stats: Mapping[str, Any]) -> None:
        now = self._clock()
        ended = False
        with self._lock:
            # Waiting: events queued or in flight, or a request failed since the last tick.
            if stats["queued"] + stats["in_flight"] > 0 or self._failed_since_tick:
                if self._waiting_since is None:
                    self._waiting_since = now
            else:
                # Nothing waits any more and nothing failed (it was dropped): not a stall.
                ended = self._stalled
                self._waiting_since = None
                self._stalled = False
            self._failed_since_tick = False
            since = self._waiting_since
            due = (
                since is not None
                and not self._stalled
                and now - since >= self.watchdog_interval
            )
            if due:
                self._stalled = True
            last_error, last_success = self.last_error, self.last_success_at
        if ended:
            self._log.info("delivery_stall_ended", events_waiting=0, delivered=False)
        if due:
            assert since is not None
            self._log.error(
                "delivery_stalled",
                waiting_s=round(now - since, 3),
                watchdog_interval=self.watchdog_interval,
                queued=stats["queued"],
                in_flight=stats["in_flight"],
                circuit=stats["circuit"],
                last_success_at=last_success,
                last_error=last_error,
            )

    def wants_tick(self, dropped: Mapping[str, int]) -> bool:
        """Whether an idle Batcher must keep its flush timer for this part: drops not yet
        reported to `on_drop`, or a stall the watchdog still follows."""
        with self._lock:
            if self._waiting_since is not None or self._stalled:
                return True
        if self.on_drop is None:
            return False
        with self._report_lock:
            return any(n > self._reported[reason] for reason, n in dropped.items())

    # --- on_drop ---------------------------------------------------------------------------

    def report_drops(self, dropped: Mapping[str, int]) -> None:
        """Call `on_drop(reason, count)` for each reason counted since the last report."""
        callback = self.on_drop
        if callback is None:
            return
        with self._report_lock:  # each drop is claimed by exactly one report
            new = {
                reason: n - self._reported[reason]
                for reason, n in dropped.items()
                if n > self._reported[reason]
            }
            self._reported.update(new)
        for reason, count in new.items():
            try:
                callback(reason, count)
            except Exception as error:  # a user callback must never stop the reporting thread
                self._callback_failed(reason, error)

    def _callback_failed(self, reason: str, error: Exception) -> None:
        # The 1st, 2nd, 4th, 8th, ... failure: visible, never a flood.
        with self._report_lock:
            self._callback_failures += 1
            n = self._callback_failures
        if n & (n - 1) == 0:
            self._log.error(
                "on_drop_callback_failed", reason=reason, error=repr(error)[:300], failures=n
            )

    def stats(self) -> dict[str, Any]:
        """The fields this part adds to `stats()`."""
        return {"last_success_at": self.last_success_at, "last_error": self.last_error}
