"""The LoggerHandler actor and its watchdog: snapshots become `$exception` events, off the app.

The capture sources (`handler.py`, `hooks.py`, `loop.py`) leave snapshots in `Intake.pending` and
wake it; it takes them in order, applies the de-duplication mark and the rate limit
(`Intake.accept`), and has its `ExceptionEventBuilder` (`builder.py`) describe each exception
with the pure core and queue the event. Its watchdog gives up on an incarnation stuck on one item.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import pykka

from phactor._log import get_logger
from phactor.config import Config
from phactor.errortracking.builder import CaptureFn, ExceptionEventBuilder
from phactor.errortracking.handler import Intake
from phactor.errortracking.ratelimit import key_name
from phactor.errortracking.snapshot import WAKE, Pending, Snapshot, Waiter, Wake, as_snapshot
from phactor.supervisor import SupervisedActor
from phactor.timer import scheduler

__all__ = [
    "BUILD_TIMEOUT_SECONDS",
    "LINGER_SECONDS",
    "SELF_WAKE",
    "Drain",
    "ExceptionEventBuilder",
    "LoggerHandler",
    "count_left_behind",
]

# `ExceptionEventBuilder` is re-exported: errortracking/methods.py imports it from here.

#: Once woken, the LoggerHandler looks at `Intake.pending` again after this long, for as long as
#: it finds records there: during a burst the logging threads never have to wake it.
LINGER_SECONDS = 0.005

#: How long the LoggerHandler may spend on one snapshot before its watchdog gives up on it: the
#: event is counted as dropped (`exception_build_timeout`) and a fresh incarnation takes over.
#: A normal build takes well under a millisecond; only a value whose `__str__` blocks (or a
#: `before_send` that does) gets near this. Read by each incarnation as it starts.
BUILD_TIMEOUT_SECONDS = 10.0


#: The Wake the LoggerHandler sends itself after `LINGER_SECONDS` (told apart by identity, so
#: that one chain of self-wakes runs at a time).
SELF_WAKE = Wake()


@dataclass(frozen=True)
class Drain:
    """Ask: answered once every snapshot told before it has been queued as an event."""


def count_left_behind(intake: Intake, reason: str) -> None:
    """Count every item left in `intake.pending` as dropped under `reason` (no actor will come)."""
    inst = intake.instance
    pending = intake.pending
    while pending:
        try:
            item = pending.popleft()
        except IndexError:
            break
        if isinstance(item, Waiter):
            item.resolve(None)
            if item.snapshot is None:
                continue  # a barrier: not an event
        inst._drop(reason, "$exception")


def _describe_item(item: Pending | None) -> dict[str, Any]:
    """What the logs may say about a pending item without calling any of its code."""
    if isinstance(item, Waiter):
        item = item.snapshot
    if isinstance(item, Snapshot):
        exc, source = item.exc, item.source
    elif isinstance(item, tuple) and item:
        exc, source = item[0], "logging"
    else:
        return {}
    return {"source": source, "exception_type": key_name(type(exc)) if exc is not None else None}


class LoggerHandler(SupervisedActor):
    """Child "logger_handler" of an instance with error tracking on.

    Messages: `Wake` (told when something was left in `Intake.pending`, and by itself). Except
    hooks, `capture_exception` and flush do not ask the actor: they leave a `Waiter` in
    `pending` and wait on it, so a replacement incarnation answers them too. (A `Snapshot` or
    `Drain` asked directly is still answered, after what is pending.)

    The wake-up protocol: `Intake.wake_sent` is True from the moment someone decides to wake the
    actor until the actor finds `pending` empty on a `Wake`. While it keeps finding records, it
    wakes itself again after `LINGER_SECONDS` (the shared scheduler), so during a burst the
    logging threads only append; when a `Wake` finds nothing it clears the flag and looks once
    more, so a record appended meanwhile is never left behind.

    The watchdog: while the actor works on a pending item, a check on the shared scheduler
    (armed once per burst, not per item) looks at how long it has been on that one item. Past
    `BUILD_TIMEOUT_SECONDS` it gives up on this incarnation without its help (Python cannot
    stop a thread): the item is counted as dropped (`exception_build_timeout`), the incarnation
    is fenced (whatever it produces later is discarded; it takes nothing more from `pending`)
    and reported to the Supervisor as exited, which starts a fresh one on the backlog.
    """

    def __init__(
        self,
        child_name: str,
        generation: int,
        supervisor: Any,
        *,
        intake: Intake,
        instance_name: str,
        config: Config,
        capture: CaptureFn,
    ) -> None:
        super().__init__(child_name, generation, supervisor)
        self.intake = intake
        self.instance_name = instance_name
        self.config = config
        self.capture = capture
        self.builder: ExceptionEventBuilder | None = None
        self._linger: int | None = None  # the scheduler handle of the next self-wake
        # The watchdog (see the class docstring). `_current`: (the item being worked on, when
        # it was taken), None between items. Taking an item and giving up on the incarnation
        # are decided under `_item_lock` (held only for that), so an item is either taken
        # before the fence, and then counted by whoever gives up, or left in `pending`.
        self.build_timeout = BUILD_TIMEOUT_SECONDS
        self._current: tuple[Pending, float] | None = None
        self._item_lock = threading.Lock()
        self._watch: int | None = None  # the scheduler handle of the next check
        self._watch_lock = threading.Lock()
        self.superseded = False  # given up on by the watchdog (or by stop)

    def started(self) -> None:
        # One SourceCache per incarnation; project_root is the working directory at start.
        self.builder = ExceptionEventBuilder(
            self.instance_name, self.config, self.capture, self.intake.instance._drop
        )
        intake = self.intake
        intake.actor_thread = threading.get_ident()
        # Published before the first drain: a thread that reads the old ref appended its
        # record before this, so the drain below finds it (see `Intake.hand_off`).
        intake.actor_ref = self.actor_ref
        intake.actor = self
        # A predecessor may have died with snapshots pending and its wake-up lost.
        intake.wake_sent = True
        self.actor_ref.tell(WAKE)

    def stopped(self) -> None:
        # A normal stop comes only from the Supervisor stopping the whole tree: at `stop()`
        # (which already uninstalled and drained) or when the tree gives up. In the latter case
        # nothing will ever drain again, so the handler and hooks go now, and the snapshots left
        # behind are counted instead of pinning their tracebacks forever. (A crash does not get
        # here: pykka calls on_failure, and the restarted actor drains what is pending.)
        if self._linger is not None:
            scheduler.cancel(self._linger)
        if self._watch is not None:
            scheduler.cancel(self._watch)
        if self.superseded:
            return  # a successor owns the handler, the hooks and `pending` now
        intake = self.intake
        intake.uninstall()
        inst = intake.instance
        count_left_behind(intake, "shutdown" if inst._state == "stopping" else "stopped")

    def handle(self, message: Any) -> Any:
        if self.superseded:
            # Given up on while stuck: the messages that queued up meanwhile belong to the
            # successor (the items themselves are in `pending`); this incarnation goes.
            self.actor_ref.stop(block=False)
            return None
        if isinstance(message, Wake):
            if message is SELF_WAKE:
                self._linger = None
            if self.drain_pending():
                if not self.superseded:
                    self._wake_later()
                return None
            if self.superseded:
                return None  # the flag belongs to the successor
            intake = self.intake
            intake.wake_sent = False
            # A record appended just before the flag went down saw it up and did not wake us.
            if intake.pending:
                intake.wake_sent = True
                self.drain_pending()
                self._wake_later()
            return None
        # Asks come after what was told before them: drain first, keep the order.
        self.drain_pending()
        if isinstance(message, Snapshot):
            assert self.builder is not None
            if not self._begin(message):
                return None
            try:
                if not self.accept(message):
                    return None
                return self.builder.queue(message)
            finally:
                self._end()
        if isinstance(message, Drain):
            return True
        return None

    def _wake_later(self) -> None:
        if self._linger is not None:
            return  # already due (a Wake from a logging thread came in between)
        ref = self.actor_ref

        def wake() -> None:
            try:
                ref.tell(SELF_WAKE)
            except pykka.ActorDeadError:
                pass  # this incarnation is gone; its successor wakes itself at start

        self._linger = scheduler.call_later(LINGER_SECONDS, wake)

    def drain_pending(self) -> int:
        """Queue every pending record's event; how many there were."""
        builder = self.builder
        assert builder is not None
        intake = self.intake
        pending = intake.pending
        count = 0
        while pending:
            item = self._next(pending)
            if item is None:
                break
            count += 1
            try:
                self._take(item, builder)
            finally:
                self._end()
        return count

    def _take(self, item: Pending, builder: ExceptionEventBuilder) -> None:
        if isinstance(item, Waiter):
            if item.snapshot is None:  # a barrier: everything before it is done
                item.resolve(None)
                return
            result = None
            try:
                if self.accept(item.snapshot):
                    result = builder.queue(item.snapshot)
            finally:
                item.resolve(result)
            return
        try:
            snapshot = as_snapshot(item)
        except Exception as error:  # never let one odd record crash the actor
            builder.failed(error, "logging")
            return
        if self.accept(snapshot):
            builder.queue(snapshot)

    # -- the watchdog -----------------------------------------------------------------------------

    def _next(self, pending: Any) -> Pending | None:
        """Take the next pending item (None: nothing left, or this incarnation was given up)."""
        with self._item_lock:
            if self.superseded:
                return None
            try:
                item = pending.popleft()
            except IndexError:
                return None
            self._current = (item, time.monotonic())
        self._watch_current()
        return item

    def _begin(self, item: Pending) -> bool:
        """Work on `item` (an asked Snapshot); False when this incarnation was given up."""
        with self._item_lock:
            if self.superseded:
                return False
            self._current = (item, time.monotonic())
        self._watch_current()
        return True

    def _end(self) -> None:
        with self._item_lock:
            self._current = None

    def _watch_current(self) -> None:
        # `_current` is written before `_watch` is read; `_check` clears `_watch` before it
        # reads `_current`: whichever runs second sees the other's write, so an item is never
        # left unwatched.
        if self._watch is None:
            self._arm(self.build_timeout)

    def _arm(self, delay: float) -> None:
        with self._watch_lock:
            if self._watch is None and not self.superseded:
                self._watch = scheduler.call_later(delay, self._check)

    def _check(self) -> None:
        """On the scheduler's thread: give up on this incarnation if one item took too long."""
        with self._watch_lock:
            self._watch = None
        current = self._current
        if current is None or self.superseded:
            return  # idle: the next item arms a check again
        elapsed = time.monotonic() - current[1]
        if elapsed < self.build_timeout or not self.give_up(current):
            self._arm(max(self.build_timeout - elapsed, 0.001))

    def give_up(self, expected: tuple[Pending, float] | None = None) -> bool:
        """Fence this incarnation off, count what it holds, and have a fresh one replace it.

        Runs on another thread than the (stuck) actor's, which may never come back. With
        `expected` (the watchdog) only if the actor is still on that item: the item is counted
        as `exception_build_timeout` and the Supervisor restarts the child. Without it (stop()
        gave up waiting) the item and the rest of `pending` are counted as `shutdown`. False
        when there was nothing to give up on.
        """
        with self._item_lock:
            current = self._current
            if self.superseded or (expected is not None and current is not expected):
                return False
            self.superseded = True
            if self.builder is not None:
                self.builder.fenced = True
        item = current[0] if current is not None else None
        elapsed = time.monotonic() - current[1] if current is not None else 0.0
        intake = self.intake
        inst = intake.instance
        if intake.actor_ref is self.actor_ref:
            # Nobody wakes or waits for this incarnation any more; the next one publishes its
            # own ref as it starts (until then, a waiting caller builds on its own thread).
            intake.actor_ref = None
            intake.actor = None
            intake.actor_thread = None
            intake.wake_sent = False
        reason = "exception_build_timeout" if expected is not None else "shutdown"
        if isinstance(item, Waiter):
            item.resolve(None)
            if item.snapshot is None:
                item = None  # a barrier: not an event
        if item is not None:
            inst._drop(reason, "$exception")
        self.builder_log().error(
            "logger_handler_given_up",
            reason=reason,
            seconds=round(elapsed, 3),
            bound=self.build_timeout,
            generation=self.generation,
            **_describe_item(item),
        )
        if expected is None or inst._state != "running":
            count_left_behind(intake, "shutdown" if inst._state == "stopping" else "stopped")
        else:
            self._report(f"stuck on one exception event for {elapsed:.1f}s (replaced)")
        return True

    def builder_log(self) -> Any:
        return self.builder.log if self.builder is not None else get_logger("errortracking")

    def accept(self, snapshot: Snapshot) -> bool:
        """`Intake.accept`, whose failure (an odd record or exception) only skips the snapshot."""
        try:
            return self.intake.accept(snapshot)
        except Exception as error:
            assert self.builder is not None
            self.builder.failed(error, snapshot.source)
            return False
