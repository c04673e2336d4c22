"""The LoggerHandler actor: turns capture snapshots into `$exception` events, off the app's threads.

The capture sources (`handler.py`) hand it snapshots; it describes the exception with the pure
`formatting` core (frames, source lines from its own bounded `SourceCache`, in_app), merges the
snapshot's context, and queues the event through the instance's normal pipeline (`_capture`),
so before_send, the size limit, stats and the buffer apply as to any other event.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import orjson
import pykka

from phactor._log import get_logger
from phactor.config import Config
from phactor.context import EMPTY
from phactor.errortracking.formatting import (
    SourceCache,
    clean_text,
    exception_level,
    exception_properties,
    message_exception_properties,
    wire_safe,
)
from phactor.errortracking.handler import (
    LINGER_SECONDS,
    WAKE,
    Intake,
    Pending,
    Snapshot,
    Waiter,
    Wake,
    as_snapshot,
    key_name,
)
from phactor.events import new_uuid4, walk_is_linear
from phactor.supervisor import SupervisedActor
from phactor.timer import scheduler

__all__ = ["BUILD_TIMEOUT_SECONDS", "SELF_WAKE", "Drain", "ExceptionEventBuilder", "LoggerHandler"]

#: Source files whose lines the LoggerHandler keeps for context lines.
SOURCE_CACHE_FILES = 64

#: How long the LoggerHandler may spend on one snapshot before its watchdog gives up on it: the
#: event is counted as dropped (`exception_build_timeout`) and a fresh incarnation takes over.
#: A normal build takes well under a millisecond; only a value whose `__str__` blocks (or a
#: `before_send` that does) gets near this. Read by each incarnation as it starts.
BUILD_TIMEOUT_SECONDS = 10.0

# The `_capture` signature of Instance, bound to one instance.
CaptureFn = Callable[..., str | None]
# `Instance._drop`: count (and log) a dropped event under a reason.
DropFn = Callable[..., None]


#: The Wake the LoggerHandler sends itself after `LINGER_SECONDS` (told apart by identity, so
#: that one chain of self-wakes runs at a time).
SELF_WAKE = Wake()


@dataclass(frozen=True)
class Drain:
    """Ask: answered once every snapshot told before it has been queued as an event."""


class ExceptionEventBuilder:
    """Builds and queues the `$exception` event of one snapshot. Never raises.

    A failure is logged once per kind (the error's type), then only counted by silence: a
    failure to describe an error must not become a flood of errors.
    """

    def __init__(
        self,
        instance_name: str,
        config: Config,
        capture: CaptureFn,
        drop: DropFn | None = None,
    ) -> None:
        self.config = config
        self.capture = capture
        self.drop = drop
        self.sources = SourceCache(SOURCE_CACHE_FILES)
        self.project_root = _cwd()
        self.log = get_logger("errortracking", instance=instance_name)
        self._failed_kinds: set[str] = set()
        # Set by the watchdog when this builder's incarnation was given up on: whatever it is
        # still building was counted already, and must not be queued as well.
        self.fenced = False

    def queue(self, snapshot: Snapshot) -> str | None:
        """Queue `snapshot`'s event; its uuid, or None when it was dropped (or failed)."""
        try:
            distinct_id, properties = self.build(snapshot)
            if self.fenced:
                return None
            return self.capture(
                "$exception",
                distinct_id,
                properties,
                EMPTY,
                dt.datetime.fromtimestamp(snapshot.created, dt.UTC),
                None,
                None,
                False,
                None,
            )
        except Exception as error:
            self.failed(error, snapshot.source)
            return None

    def failed(self, error: Exception, source: str | None) -> None:
        """Count a snapshot that could not become an event; log it once per kind (error type)."""
        if self.drop is not None and not self.fenced:
            try:
                self.drop("exception_build_failed", "$exception")
            except Exception:
                pass
        kind = type(error).__name__
        if kind not in self._failed_kinds:
            self._failed_kinds.add(kind)
            self.log.error(
                "exception_event_failed", kind=kind, error=repr(error)[:500], source=source
            )

    def build(self, snapshot: Snapshot) -> tuple[str, dict[str, Any]]:
        """(distinct_id, properties) of the `$exception` event for `snapshot`.

        Precedence, later wins: instance context < event-scoped context for `$exception` <
        record extras / call properties < the record's fields < the exception's description.
        """
        snapshot.expand_record()
        props: dict[str, Any] = {}
        state = snapshot.state
        if state is not EMPTY:
            if state.flags is not None:
                props.update(state.flags.event_properties())
            props.update(state.properties)
            scoped = state.event_properties.get("$exception")
            if scoped:
                props.update(scoped)
        if snapshot.extras:
            props.update(snapshot.extras)
        if snapshot.properties:
            props.update(snapshot.properties)
        if snapshot.logger_name is not None:
            props["logger_name"] = snapshot.logger_name
        if snapshot.level_name is not None:
            props["log_level"] = snapshot.level_name
        if snapshot.message is not None:
            props["log_message"] = snapshot.message
        if snapshot.thread_name is not None:
            props["thread_name"] = snapshot.thread_name
        if props:
            props = _encodable(props)
        props.update(self.describe(snapshot))

        distinct_id = snapshot.distinct_id
        if distinct_id is None or distinct_id == "":
            distinct_id = props.pop("distinct_id", None)
        if distinct_id is None or distinct_id == "":
            # Nobody known: a fresh id, and no person profile (as PostHog's SDKs do).
            distinct_id = new_uuid4()
            props["$process_person_profile"] = False
        props.pop("distinct_id", None)
        return clean_text(str(distinct_id)), props

    def describe(self, snapshot: Snapshot) -> dict[str, Any]:
        """The `$exception_*` properties of the snapshot."""
        snapshot.expand_record()
        config = self.config
        if snapshot.exc is None:
            return message_exception_properties(
                snapshot.message or "",
                logger_name=snapshot.logger_name,
                function=snapshot.function,
                pathname=snapshot.pathname,
                lineno=snapshot.lineno,
                level=snapshot.level,
                source=snapshot.source,
                in_app_modules=config.in_app_modules,
                project_root=self.project_root,
                sources=self.sources,
            )
        return exception_properties(
            snapshot.exc,
            level=exception_level(snapshot.level),
            source=snapshot.source,
            handled=snapshot.handled,
            mechanism_type=snapshot.mechanism_type,
            in_app_modules=config.in_app_modules,
            project_root=self.project_root,
            sources=self.sources,
            synthetic_traceback=snapshot.synthetic_traceback,
        )


def _encodable(props: dict[str, Any]) -> dict[str, Any]:
    """`props` itself when the event encoder's fast path takes it, else a `wire_safe` copy.

    What the app supplied (context, `extra=`, call properties, the message) may hold a cycle or a
    lone surrogate, which the encoder's fast path refuses and its slow path must not be trusted
    with here (a cycle is exponential for a depth-capped walk). The check is one orjson call on
    the app's part of the event; the linear-time copy runs only when it fails. A value whose
    containers are shared (no cycle, yet 2**40 values written out) goes straight to the copy:
    orjson would write it all out first.
    """
    if not walk_is_linear(props):
        copied = wire_safe(props)
        return copied if isinstance(copied, dict) else {}
    try:
        orjson.dumps(props, default=_strict_default)
    except Exception:
        copied = wire_safe(props)
        return copied if isinstance(copied, dict) else {}
    return props


def _strict_default(value: Any) -> Any:
    # A subset of what the event encoder converts itself: passing this check means its fast
    # path passes too. Anything else (containers included) goes through `wire_safe`.
    if isinstance(value, decimal.Decimal) and value.is_finite():
        return float(value)
    if isinstance(value, PurePath):
        return clean_text(str(value))
    raise TypeError(type(value).__name__)


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


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the working directory was deleted
        return None


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
