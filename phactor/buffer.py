"""`EventBuffer`: the queue and in-flight ledger of one instance, plus its delivery counters.

It is the state that must survive a restart (OTP keeps such state outside the child it
protects): the Supervisor creates it once and hands it to every incarnation of the Batcher
and the Senders. Callers append serialised events to it directly, without a lock: an append
to the inbox deque (atomic in CPython), far cheaper than an actor message, and app threads
capturing at once never queue behind each other, the Batcher or a Sender (no lock convoy).
The taker does the accounting: the next locked call (the Batcher's `take`, `stats()`,
`flush()`'s high-water mark) gives each inbox event its sequence number and moves it into the
queue, and counts the drop reasons callers appended. The Batcher is woken when a batch is ready.

Every counter changes under one lock together with the queue, so every locked observation sees
`captured == sent + sum(dropped) + queued + in_flight` (`stats()` accounts the inbox first).
The queue is kept in sequence order (requeued batches are merged back at the front), so the
oldest pending event is always at `queue[0]` or in a batch in flight.

The `CircuitBreaker` lives here for the same reason: an outage is a fact about the endpoint,
not about one Sender incarnation, so a restarted Sender must still see it.

Signal handlers: Python runs one on the main thread between two bytecodes, possibly while that
thread holds the buffer's (non-reentrant) lock or a Batcher's mailbox lock (a wake). A capture
from the handler must not wait for either: it would wait for ever. So the calls that lock mark
the thread busy (a thread-local flag, set before the lock is taken and cleared after it is
released), and a call that finds its own thread busy never locks: a capture only appends to
the inbox (it wakes nobody; the next call does), `stats()` reads without the lock.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["ENVELOPE_BYTES", "Batch", "CircuitBreaker", "EventBuffer", "Item", "busy", "reentered"]

ENVELOPE_BYTES = 512
"""Bytes reserved in every batch for the body around the events (api key, sent_at, ...)."""


# Refusals counted without the lock are folded into the counters once this many wait.
_MERGE_DROPS_AT = 1024

class _ThreadState(threading.local):
    """Per thread: inside an app-facing buffer call (class default: no AttributeError)."""

    busy = False


_thread = _ThreadState()


class busy:
    """`with busy(), lock:` -- the thread is busy in phactor while it may hold a lock (the buffer's,
    or an actor mailbox's): a signal handler run meanwhile sees `reentered()`."""

    __slots__ = ("_before",)

    def __enter__(self) -> None:
        self._before = _thread.busy
        _thread.busy = True

    def __exit__(self, *exc_info: object) -> None:
        _thread.busy = self._before


def reentered() -> bool:
    """True when this thread is inside an app-facing buffer call: a signal handler run in the
    middle of it. Such a caller must not take the buffer lock (nor wait for the Batcher)."""
    return _thread.busy


Item = tuple[int, bytes]
"""One queued event: (sequence number, serialised JSON)."""


class Batch:
    """Events handed to one Sender; `holder` names it so a crash can give them back."""

    __slots__ = ("holder", "items", "nbytes")

    def __init__(self, holder: str, items: list[Item], nbytes: int):
        self.holder = holder
        self.items = items
        self.nbytes = nbytes

    def __len__(self) -> int:
        return len(self.items)

    @property
    def first_seq(self) -> int:
        return self.items[0][0] if self.items else 0


class CircuitBreaker:
    """Instance-wide outage gate shared by every Sender (and the sync_mode path).

    Closed (no failure since the last answer): every Sender sends at once. A retryable failure
    opens it: from then on one request at a time (the probe) may go, and not before the back-off
    the last failure asked for (`failed(holder, delay)`, which includes any Retry-After). Any
    answer from the server (`succeeded`) closes it and wakes every waiting Sender: full speed.
    """

    # A waiter also wakes this often to notice an abort Event it cannot be notified through.
    _ABORT_POLL = 0.25

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._cond = threading.Condition()
        self._clock = clock
        self.failures = 0
        self._probe: str | None = None
        self._not_before = 0.0
        self._shut = False

    @property
    def is_open(self) -> bool:
        """True while the endpoint is considered failing (one probe at a time)."""
        return self.failures > 0

    def acquire(self, holder: str, abort: threading.Event | None = None) -> bool:
        """Block until `holder` may send a request; False when shut or `abort` is set."""
        with self._cond:
            while True:
                if self._shut or (abort is not None and abort.is_set()):
                    return False
                if self.failures == 0:
                    return True
                wait = self._ABORT_POLL
                if self._probe is None or self._probe == holder:
                    remaining = self._not_before - self._clock()
                    if remaining <= 0:
                        self._probe = holder
                        return True
                    wait = min(wait, remaining)
                self._cond.wait(wait)

    def try_acquire(self, holder: str, threshold: int = 1) -> bool:
        """Never blocks: True when `holder` may send now (closed, fewer than `threshold`
        failures in a row, or the cool-down is over and it takes the probe slot), else False:
        fail fast (the `/flags` path, where a caller must not wait for the endpoint)."""
        with self._cond:
            if self._shut:
                return False
            if self.failures < threshold:
                return True
            if self._probe is None and self._not_before <= self._clock():
                self._probe = holder
                return True
            return False

    def succeeded(self, holder: str) -> None:
        """The server gave `holder` a non-retryable answer (2xx, or 4xx but 408/429): close."""
        with self._cond:
            if self._probe == holder:
                self._probe = None
            if self.failures:
                self.failures = 0
                self._not_before = 0.0
            self._cond.notify_all()

    def failed(self, holder: str, delay: float) -> None:
        """`holder`'s request failed retryably: open (or keep open) for at least `delay` s."""
        with self._cond:
            if self._probe == holder:
                self._probe = None
            self.failures += 1
            self._not_before = max(self._not_before, self._clock() + delay)
            self._cond.notify_all()

    def release(self, holder: str) -> None:
        """Give up the probe slot without an answer (the request was never made or crashed)."""
        with self._cond:
            if self._probe == holder:
                self._probe = None
                self._cond.notify_all()

    def shut(self) -> None:
        """Shutdown: every waiter (now and later) gets False at once."""
        with self._cond:
            self._shut = True
            self._cond.notify_all()

    def state(self) -> str:
        """ "open" or "closed" (for stats and logs)."""
        return "open" if self.failures else "closed"


class EventBuffer:
    """Bounded FIFO of serialised events with an exact ledger of where each one is."""

    def __init__(self, max_queue_size: int, flush_at: int, wake: Callable[[], None] | None = None):
        self.max_queue_size = max_queue_size
        self.flush_at = flush_at
        self.wake = wake
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._queue: deque[Item] = deque()
        # The inbox: events (bytes) appended by callers without the lock, and the reasons
        # (str) of events refused at capture; both accounted (sequence numbers, counters) under
        # the lock by the next locked call (`_merge_locked`), usually the Batcher's `take`.
        self._handoff: deque[bytes] = deque()
        self._drops: deque[str] = deque()
        self._queued_bytes = 0
        self._in_flight: dict[str, Batch] = {}
        self._seq = 0
        self._wake_pending = False
        # The Batcher has a flush timer armed (or a wake on its way to arm one): while False,
        # the next offer wakes it. An idle instance thus arms no timer at all.
        self._armed = False
        # Set by the instance when `on_drop` is configured: a drop on an idle instance wakes the
        # Batcher too (else it would wait for the next event to be reported).
        self.wake_on_drop = False
        self._closed = False
        self._close_reason = "stopped"
        # Set by the Batcher, read by the Senders, which take their next batch themselves when
        # one is ready (`Sender`): "send partial batches too" (a flush or the flush interval
        # is draining the queue).
        self.draining = False
        # Idle Senders, by name: a callable that asks that Sender to take the ready batch
        # (False when it is gone). A batch that becomes ready goes straight to one of them;
        # the Batcher is woken only when none is parked (or to arm its timer).
        self._parked: dict[str, Callable[[], bool]] = {}
        # flush() waiters: [target seq, "a batch <= target ran out of retries"]
        self._waiters: list[list[Any]] = []
        self.breaker = CircuitBreaker()
        self.sent = 0
        self.dropped: Counter[str] = Counter()
        self.retries = 0
        self.restarts = 0
        self.requeued = 0

    # --- callers ---------------------------------------------------------------------------

    def offer(self, data: bytes) -> bool:
        """Queue one event; False (counted `queue_full` or `stopped`) when it cannot be.

        No lock: the event is appended to the inbox (`collections.deque.append` is atomic), and
        the next locked call (the Batcher's `take`, `stats()`, ...) gives it its sequence number
        and moves it into the queue. So app threads never wait for each other, for the Batcher
        or for a Sender settling. The bound is checked before the append: threads racing past
        the check at the same instant can overshoot `max_queue_size` by at most one event each
        (at most the number of capturing threads minus one).
        """
        inbox = self._handoff
        n = len(self._queue) + len(inbox)
        if n >= self.max_queue_size or self._closed:
            self._refuse("stopped" if self._closed else "queue_full")
            return False
        inbox.append(data)
        if self._armed and (self._wake_pending or n + 1 < self.flush_at):
            return True  # the common case: nothing to wake
        state = _thread
        if state.busy:
            # Re-entered (a signal handler inside a wake): waking takes the Batcher's mailbox
            # lock, which the interrupted frame may hold. The next call wakes it.
            return True
        arm = ready = False
        if not self._armed:  # the first event since the Batcher went idle: it arms its timer
            self._armed = arm = True
        if n + 1 >= self.flush_at and not self._wake_pending:  # a batch is ready: once
            self._wake_pending = ready = True
        if arm or ready:
            state.busy = True
            try:
                # A ready batch goes to an idle Sender directly; the Batcher (which also
                # dispatches) when none is parked or its timer must be armed.
                if (arm or not self._pull_parked()) and self.wake is not None:
                    self.wake()
            finally:
                state.busy = False
        return True

    def park(self, name: str, pull: Callable[[], bool]) -> None:
        """Sender `name` is idle: `pull()` asks it to take the next ready batch."""
        self._parked[name] = pull

    def unpark(self, name: str) -> None:
        self._parked.pop(name, None)

    def _pull_parked(self) -> bool:
        """Ask one parked Sender to take the ready batch; False when none could be asked."""
        parked = self._parked
        while parked:
            try:
                _, pull = parked.popitem()  # atomic: two callers never get the same Sender
            except KeyError:
                return False
            if pull():
                return True
        return False

    def drop_at_capture(self, reason: str) -> None:
        """Count an event that was refused before it was queued."""
        self._refuse(reason)

    def _refuse(self, reason: str) -> None:
        # Counted without the lock too: the reason waits in `_drops` for the next locked call.
        drops = self._drops
        drops.append(reason)
        if len(drops) >= _MERGE_DROPS_AT and self._lock.acquire(blocking=False):
            # A long outage refuses ~every capture while nothing else takes the lock: fold the
            # reasons into the counters now, or the list grows by one entry per refusal.
            try:
                with busy():
                    self._merge_locked()
            finally:
                self._lock.release()
        # `on_drop` is set and the Batcher is idle: wake it, so that it reports the drop.
        if self.wake_on_drop and not self._armed and not _thread.busy:
            self._armed = True
            if self.wake is not None:
                with busy():
                    self.wake()

    def _merge_locked(self) -> None:
        """Account for what callers appended without the lock: drop reasons, then events (in
        the order they were appended), each with the next sequence number."""
        drops = self._drops
        if drops:
            n = len(drops)  # only these: later appends wait for the next merge
            take_reason = drops.popleft
            self.dropped.update([take_reason() for _ in range(n)])
            self._seq += n
        inbox = self._handoff
        if not inbox:
            return
        n = len(inbox)
        popleft = inbox.popleft
        events = [popleft() for _ in range(n)]
        first = self._seq + 1
        self._seq += n
        if self._closed:
            self.dropped["stopped"] += n
            return
        self._queue.extend(zip(range(first, first + n), events, strict=True))
        self._queued_bytes += sum(map(len, events))

    # --- the Batcher -----------------------------------------------------------------------

    def take(self, holder: str, max_events: int, max_bytes: int) -> Batch | None:
        """Move up to `max_events` queued events (within `max_bytes`) in flight under `holder`."""
        with busy(), self._lock:
            if self._handoff or self._drops:
                self._merge_locked()
            queue = self._queue
            if not queue or holder in self._in_flight:
                return None
            if self._queued_bytes + len(queue) <= max_bytes:
                # Everything queued fits the byte budget: no per-event size check.
                popleft = queue.popleft
                items = [popleft() for _ in range(min(max_events, len(queue)))]
                nbytes = sum(len(d) for _, d in items) + len(items)
            else:
                items = []
                nbytes = 0
                while queue and len(items) < max_events:
                    size = len(queue[0][1]) + 1
                    if items and nbytes + size > max_bytes:
                        break
                    item = queue.popleft()
                    items.append(item)
                    nbytes += size
            self._queued_bytes -= nbytes - len(items)
            if len(queue) + len(self._handoff) < self.flush_at:
                self._wake_pending = False
            batch = Batch(holder, items, nbytes)
            self._in_flight[holder] = batch
            if self._parked:
                self._parked.pop(holder.partition("#")[0], None)  # busy now: not idle
            return batch

    def queue_length(self) -> int:
        return len(self._queue) + len(self._handoff)

    def mark_armed(self) -> None:
        """The Batcher armed its timer while idle (drops to report): no offer needs to wake it."""
        with busy(), self._lock:
            self._armed = True

    def idle(self) -> bool:
        """True when nothing is queued or in flight: the Batcher then disarms its flush timer
        (the next `offer` wakes it to arm one). False, with the timer noted armed, otherwise.
        """
        with busy(), self._lock:
            # Disarmed first, then checked: an offer appends first, then reads `_armed`, so an
            # event appended after this check finds it disarmed and wakes the Batcher.
            self._armed = False
            idle = not (self._queue or self._handoff or self._drops or self._in_flight)
            self._armed = not idle
            return idle

    # --- the Senders and the Supervisor ----------------------------------------------------

    def settle(
        self,
        holder: str,
        *,
        sent: int = 0,
        dropped: dict[str, int] | None = None,
        requeue: Iterable[Item] = (),
    ) -> None:
        """Close `holder`'s batch: `sent` delivered, `dropped` by reason, `requeue` put back.

        The three must account for the whole batch; a shortfall is counted `internal_error`.
        `requeue` is what ran out of retries: it goes back to the front of the queue (or is
        counted `queue_full` / the close reason) and ends the wait of flushes that cover it.
        An unknown holder (abandoned at the shutdown deadline) is ignored: never counted twice.
        """
        with busy(), self._lock:
            batch = self._in_flight.pop(holder, None)
            if batch is None:
                return
            back = list(requeue)
            unaccounted = len(batch.items) - sent - sum((dropped or {}).values()) - len(back)
            if unaccounted > 0:
                # A Sender bug must still show up in the ledger, never vanish.
                self.dropped["internal_error"] += unaccounted
            self.sent += sent
            if dropped:
                self.dropped.update(dropped)
            self._settled_locked(batch.items, back)
            if back:
                oldest = min(seq for seq, _ in back)
                for waiter in self._waiters:
                    if oldest <= waiter[0]:
                        waiter[1] = True
            self._requeue_locked(back)
            self._done.notify_all()

    def _settled_locked(self, items: list[Item], back: list[Item]) -> None:
        """A batch settled (`back` goes back to the queue): a spool removes the rest."""

    def give_back(self, holder: str) -> int:
        """Put `holder`'s batch back at the front of the queue; returns how many."""
        with self._lock:
            batch = self._in_flight.pop(holder, None)
            if batch is None:
                return 0
            self._requeue_locked(batch.items)
            self._done.notify_all()
            return len(batch.items)

    def reclaim(self, senders: Iterable[str], live_holders: set[str]) -> int:
        """Give back every batch held by an incarnation of `senders` that is not live (it died).

        Holders that are not Sender incarnations (`sync_mode` callers) are never touched.
        """
        names = frozenset(senders)
        with self._lock:
            stale = [
                h for h in self._in_flight if h not in live_holders and h.partition("#")[0] in names
            ]
            n = 0
            for holder in stale:
                items = self._in_flight.pop(holder).items
                n += len(items)
                self._requeue_locked(items)
            if n:
                self._done.notify_all()
            return n

    def _requeue_locked(self, items: list[Item]) -> None:
        if not items:
            return
        if self._handoff or self._drops:
            self._merge_locked()  # the room left counts what callers appended meanwhile
        if self._closed:
            # Came back after close() (a Sender woken by the shutdown): nobody will send it.
            self.dropped[self._close_reason] += len(items)
            return
        items = sorted(items)
        room = self.max_queue_size - len(self._queue)
        if room < len(items):
            # Keep the oldest; the newest that do not fit are counted, never lost silently.
            overflow = len(items) - max(room, 0)
            self.dropped["queue_full"] += overflow
            items = items[: max(room, 0)]
            if not items:
                return
        queue = self._queue
        # Keep the queue in sequence order: merge with the (few) queued events older than the
        # newest requeued one — other batches requeued before this one.
        newest = items[-1][0]
        older: list[Item] = []
        while queue and queue[0][0] < newest:
            older.append(queue.popleft())
        merged = list(heapq.merge(items, older)) if older else items
        self.requeued += len(items)
        queue.extendleft(reversed(merged))
        self._queued_bytes += sum(len(d) for _, d in items)

    def count_retry(self) -> None:
        with busy(), self._lock:
            self.retries += 1

    def count_restart(self) -> None:
        with self._lock:
            self.restarts += 1

    def close(self, reason: str) -> int:
        """Refuse further events and drop what is still queued under `reason`; returns count."""
        with busy(), self._lock:
            if self._handoff or self._drops:
                self._merge_locked()
            self._closed = True
            self._close_reason = reason
            n = len(self._queue)
            if n:
                self.dropped[reason] += n
                self._queue.clear()
                self._queued_bytes = 0
            self._done.notify_all()
        self.breaker.shut()
        return n

    def abandon_in_flight(self, reason: str) -> int:
        """Count every batch still in flight as dropped (shutdown deadline passed)."""
        with busy(), self._lock:
            n = sum(len(b.items) for b in self._in_flight.values())
            if n:
                self.dropped[reason] += n
            self._in_flight.clear()
            self._done.notify_all()
            return n

    # --- storage (a durable spool, see phactor.spooled; nothing to do in memory) -----------

    def open_storage(self) -> None:
        """Start keeping events on disk (a spooled buffer); in memory: nothing."""

    def close_storage(self) -> None:
        """After close(): finish writing and release the disk (a spooled buffer)."""

    def forget_after_fork(self) -> None:
        """In a forked child: let go of the parent's disk state (a spooled buffer)."""

    # --- flush and stats -------------------------------------------------------------------

    def high_water(self) -> int:
        """The sequence number of the newest event accepted so far."""
        if _thread.busy:
            return self._seq + len(self._handoff) + len(self._drops)
        with busy(), self._lock:
            if self._handoff or self._drops:
                self._merge_locked()
            return self._seq

    def wait_through(self, seq: int, timeout: float | None) -> bool:
        """Block until no event with sequence <= `seq` is queued or in flight: True.

        False when `timeout` passes first, or as soon as a batch holding an event <= `seq` ran
        out of retries during this wait and went back to the queue (the endpoint is failing:
        waiting on would only wait for the outage to end). False also once the buffer is
        closed with such events still pending.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter: list[Any] = [seq, False]
        with busy(), self._lock:
            self._waiters.append(waiter)
            try:
                while self._oldest_pending_locked() <= seq:
                    if waiter[1] or (self._closed and not self._in_flight):
                        return False
                    if deadline is None:
                        self._done.wait(1.0)
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._done.wait(min(remaining, 1.0))
                return True
            finally:
                self._waiters.remove(waiter)

    def _oldest_pending_locked(self) -> int:
        oldest = self._queue[0][0] if self._queue else 1 << 62
        for batch in self._in_flight.values():
            if batch.items:
                oldest = min(oldest, batch.first_seq)
        return oldest

    def notify(self) -> None:
        """Wake flush() waiters (after a state change they should re-check)."""
        with busy(), self._lock:
            self._done.notify_all()

    def stats(self) -> dict[str, Any]:
        """A consistent snapshot of the counters.

        Re-entered (a signal handler that interrupted this thread in a buffer call): read
        without the lock, so it may be one event off while the interrupted call is half-done.
        """
        if _thread.busy:
            return self._snapshot([*self._handoff, *self._drops])
        with busy(), self._lock:
            if self._handoff or self._drops:
                self._merge_locked()
            return self._snapshot([])

    def _snapshot(self, handoff: list[bytes | str]) -> dict[str, Any]:
        # `handoff`: not merged yet (a re-entered read), counted as captured and queued.
        events = [item for item in handoff if isinstance(item, bytes)]
        dropped = self.dropped.copy()
        dropped.update(item for item in handoff if isinstance(item, str))
        return {
            "captured": self._seq + len(handoff),
            "sent": self.sent,
            "dropped": dict(dropped),
            "queued": len(self._queue) + len(events),
            "queued_bytes": self._queued_bytes + sum(len(item) for item in events),
            "in_flight": sum(len(b.items) for b in list(self._in_flight.values())),
            "retries": self.retries,
            "requeued": self.requeued,
            "restarts": self.restarts,
            "circuit": self.breaker.state(),
        }
