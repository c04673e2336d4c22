"""The logging handler of error tracking, and the `Intake` every capture source hands off to.

Everything here runs on the app's threads, so it only takes a cheap snapshot (the exception
object, the record's fields, the thread's phactor context) and hands it to the instance's
LoggerHandler actor, which builds the `$exception` event. `CaptureHandler` is the root-logger
handler; `Intake` is one instance's way in for every source (that handler, the except hooks in
`hooks.py`, structlog, asyncio in `loop.py`, `capture_exception`): the guards (`guards.py`), the
rate limit (`ratelimit.py`), and the bound on snapshots waiting in `Intake.pending` (a snapshot
keeps its traceback's frames alive). The two share this module because the handler is the
Intake's fast path: they are written against each other's internals.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pykka

from phactor.errortracking import routing
from phactor.errortracking.guards import (
    guarded,
    inside_phactor,
    is_guarded_logger,
    mark_captured,
    on_phactor_thread,
    thread_flags,
)
from phactor.errortracking.hooks import ExceptHooks
from phactor.errortracking.ratelimit import TokenBuckets, key_name, refusal_key, type_key
from phactor.errortracking.snapshot import (
    WAKE,
    Pending,
    RecordItem,
    Snapshot,
    Waiter,
    str_or_marker,
)

if TYPE_CHECKING:
    from phactor.instance import Instance

__all__ = [
    "CAPTURE_MESSAGES_DEFAULT",
    "MAX_BACKLOG",
    "CaptureHandler",
    "Intake",
    "Snapshot",
]

# `Snapshot` is re-exported: errortracking/methods.py imports it from here.

#: Records allowed to wait for the LoggerHandler before new ones are dropped: the default of the
#: config option `exception_backlog` (each keeps its traceback's frames alive).
MAX_BACKLOG = 1000
#: Error records without an exception become `$exception` events only when the config option
#: `capture_messages` is on (this is its default).
CAPTURE_MESSAGES_DEFAULT = False


def _intakes_after_fork_in_child() -> None:
    for intake in list(_INTAKES):
        intake._after_fork_in_child()


# Every Intake, so that a forked child can forget the records its parent handed off.
_INTAKES: weakref.WeakSet[Intake] = weakref.WeakSet()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_intakes_after_fork_in_child)


_local = thread_flags  # the per-thread flags, shared with phactor._guard


class Intake:
    """One instance's way in to error tracking: guards, rate limit, hand-off to its actor.

    Owns the instance's logging handler and except hooks (`install` / `uninstall`, both
    idempotent). Snapshots go to the LoggerHandler actor by `tell` (logging: never wait) or by
    `ask` (except hooks and `capture_exception`: the caller waits until the event is queued).
    When the actor is not running, a waiting caller builds the event on its own thread.
    """

    def __init__(self, instance: Instance) -> None:
        config = instance.config
        self.instance = instance
        self.name = instance.name
        self.level = config.capture_level
        self.capture_messages = config.capture_messages
        self.claims = config.error_tracking_loggers  # loggers routed here (routing.py)
        self.limiter = TokenBuckets(
            config.exception_rate_limit_burst,
            config.exception_rate_limit_per_second,
        )
        self.max_backlog = config.exception_backlog
        # Rate-limit keys being refused, and until when (monotonic): written by the actor,
        # read by the app's threads (see `accept`).
        self.refusing: dict[Any, float] = {}
        # Snapshots told (not asked) wait here for the actor; deque appends are thread-safe.
        self.pending: deque[Pending] = deque()
        self.wake_sent = False
        self.handler = CaptureHandler(self)
        self.hooks = ExceptHooks(self)
        self.actor_thread: int | None = None  # ident of the LoggerHandler's thread
        # The running LoggerHandler incarnation, set by itself at start (before it drains).
        self.actor_ref: pykka.ActorRef[Any] | None = None
        self.actor: Any = None  # that incarnation's LoggerHandler object (its watchdog's state)
        self.fallback: Callable[[Snapshot], str | None] | None = None
        # The LoggerHandler is an on-demand child: True once one was started for this tree
        # (or asked for), so that a waiting caller waits for it instead of building the event
        # out of order on its own thread while it starts.
        self.wanted = False
        # Set when stop() gave up waiting for a stuck LoggerHandler: what it held was counted,
        # and a drain must not report success any more.
        self.abandoned = False
        _INTAKES.add(self)

    def _after_fork_in_child(self) -> None:
        # Runs inside os.fork(), before any thread of the child can hand off: the records in
        # `pending` belong to the parent, which still sends them (the child would send them
        # twice); the actor that was due to drain them, and its ref, stayed in the parent.
        self.pending.clear()
        self.wake_sent = False
        self.actor_ref = None
        self.actor = None
        self.actor_thread = None
        self.wanted = False
        self.limiter._lock = threading.Lock()  # another thread may have held it at fork time

    # -- install ------------------------------------------------------------------------------

    @property
    def installed(self) -> bool:
        """True while this instance takes part in the process's routing (routing.py)."""
        return routing.registered(self)

    def install(self) -> None:
        """Join the routing of logged and uncaught exceptions (once; see routing.py)."""
        routing.register(self)

    def uninstall(self) -> None:
        """Leave the routing: what this instance received passes to the next one."""
        routing.unregister(self)

    # -- sources (the logging handler and the except hooks have their own classes) -------------

    def capture_log_event(
        self,
        *,
        source: str,
        exc: BaseException | None,
        level: int,
        level_name: str | None,
        logger_name: str | None,
        message: str | None,
        extras: Mapping[str, Any] | None,
    ) -> None:
        """Capture a log event from another logging library (structlog); never raises."""
        if level < self.level or guarded(logger_name):
            return
        if exc is None:
            return
        snapshot = Snapshot(
            source,
            exc,
            level,
            True,
            "generic",
            self.instance._context.current(),
            time.time(),
            logger_name=logger_name,
            level_name=level_name,
            message=message,
            thread_name=threading.current_thread().name,
            extras=extras,
        )
        self.submit(snapshot, wait=None)

    # -- hand-off -----------------------------------------------------------------------------

    def accept(self, snapshot: Snapshot) -> bool:
        """Whether `snapshot` becomes an event: the de-duplication mark, then a rate-limit token.

        Run by the LoggerHandler (or, when it is not running, by the thread that builds the
        event), not by a logging thread: the actor sees every source's snapshots in the order
        they were handed over (asks drain what was told before them), so the first capture of
        an exception object wins. When the bucket is empty, the key is noted in `refusing`
        until its next token, so that the app's threads refuse the rest of a flood themselves
        (`refused_early`) instead of handing every record over.
        """
        exc = snapshot.exc
        if exc is not None:
            if not mark_captured(exc, self.name, anywhere=snapshot.source != "capture_exception"):
                return False
        else:
            snapshot.expand_record()
        quick_key = refusal_key(exc, snapshot.logger_name, snapshot.function)
        key = type_key(quick_key) if exc is not None else quick_key
        limiter = self.limiter
        if limiter.allow(key):
            return True
        refusing = self.refusing
        if len(refusing) >= limiter.max_keys:
            refusing.clear()  # bounded; a forgotten key is only refused a little later
        try:
            # On the limiter's clock (injectable), as `refused_early` reads it.
            refusing[quick_key] = limiter.clock() + limiter.next_token_in(key)
        except TypeError:
            pass  # a class whose metaclass makes it unhashable: refused by the actor only
        self._count_refusal(key)
        return False

    def refused_early(self, exc: BaseException | None, quick_key: Any) -> bool:
        """On the app's thread: True when `quick_key` (an exception class, or a call site) is
        being refused right now; the record is then marked and counted here, not handed over.
        """
        try:
            until = self.refusing.get(quick_key)
        except TypeError:  # an unhashable class (its metaclass defines __eq__ only)
            return False
        if until is None or until <= self.limiter.clock():
            return False
        if exc is not None and not mark_captured(exc, self.name):
            return True  # already captured: nothing to count
        self._count_refusal(quick_key)  # named only if the drop is logged
        return True

    def _count_refusal(self, key: Any) -> None:
        inst = self.instance
        inst._buffer.drop_at_capture("rate_limited")
        if inst._drop_log_due("rate_limited"):
            inst._log_drop("rate_limited", "$exception", key=key_name(key))

    def submit(self, snapshot: Snapshot, *, wait: float | None) -> str | None:
        """Hand `snapshot` to the actor; with `wait`, wait for it and return the event uuid.

        Without `wait` the snapshot joins `pending` (see `hand_off`). With `wait` it is asked:
        None when it was not captured (already captured, rate-limited, dropped) or the wait ran
        out. When the actor is not running, the event is built on this thread.
        """
        exc = snapshot.exc
        if self.refused_early(exc, refusal_key(exc, snapshot.logger_name, snapshot.function)):
            return None
        if wait is None:
            self.hand_off(snapshot)
            return None
        self._running_instance()
        if self._actor_coming() and threading.get_ident() != self.actor_thread:
            waiter = Waiter(snapshot)
            self.enqueue(waiter)
            if waiter.done.wait(wait):
                return waiter.result
            return None  # not cancelled: the actor (or its successor) still queues it, later
        return self._build_here(snapshot)

    def drain(self, timeout: float) -> bool:
        """Wait until everything handed over so far is an event (or counted); False on timeout.

        A barrier joins `pending`: a LoggerHandler that replaces a stuck one answers it too.
        """
        if self.abandoned:
            return False
        if threading.get_ident() == self.actor_thread:
            return False  # the actor cannot wait for itself
        if not self.pending and not self._actor_running():
            return True
        # Answered by the running actor, or by the next incarnation (it drains as it starts).
        barrier = Waiter(None)
        self.enqueue(barrier)
        return barrier.done.wait(max(timeout, 0.0))

    def _actor_coming(self) -> bool:
        """True when a LoggerHandler runs, or will (starting on demand, restarting): it drains
        `pending` as it starts. Asks for the on-demand one if it is not running yet."""
        if self._actor_running():
            return True
        self.demand_actor()
        return self.wanted and self.instance._state == "running"

    def demand_actor(self) -> None:
        """Have the instance's on-demand LoggerHandler started (a no-op when it runs)."""
        if self.instance._registry.demand("logger_handler"):
            self.wanted = True

    def _actor_running(self) -> bool:
        # The registry's ref covers a LoggerHandler started but not yet through `started`
        # (pykka runs on_start on the actor's thread): it drains `pending` as it starts.
        ref = self.actor_ref or self.instance._registry.get("logger_handler")
        return ref is not None and ref.is_alive()

    def enqueue(self, item: Pending) -> None:
        """Append `item` to `pending` (no backlog bound: its caller waits) and wake the actor.

        Woken even when a wake-up is already due: a lingering actor comes back only after
        `LINGER_SECONDS`, and this caller waits for it (a loop of `capture_exception` calls paid
        those 5 ms on every call). An extra Wake only drains early.
        """
        self.pending.append(item)
        self._wake(now=True)

    def hand_off(self, item: Snapshot | RecordItem) -> None:
        """Leave `item` in `pending` for the actor, waking it only when it is not already due.

        The actor, once woken, keeps coming back every `LINGER_SECONDS` while it finds work, so
        a burst of records costs the logging threads no message (and no thread switch) at all.
        """
        inst = self._running_instance()
        pending = self.pending
        if len(pending) >= self.max_backlog:
            # Marked, as if taken: a hook or capture_exception does not offer it again (an
            # exception is counted once).
            exc = item.exc if isinstance(item, Snapshot) else item[0]
            if exc is not None and not mark_captured(exc, self.name, anywhere=True):
                return
            inst._drop("exception_backlog", "$exception")
            return
        # Append before reading the flag: the actor clears the flag, then looks at `pending`.
        pending.append(item)
        if not self.wake_sent:  # tested here too: no call on the logging thread's fast path
            self._wake()

    def _wake(self, now: bool = False) -> None:
        if now or not self.wake_sent:
            self.wake_sent = True
            # The incarnation's own ref, not the registry's: a restarted actor drains (and
            # lowers the flag) before the Supervisor registers it, and a wake-up sent to "not
            # registered" in between would be lost with the record.
            ref = self.actor_ref
            try:
                if ref is None:
                    raise pykka.ActorDeadError("not started")
                ref.tell(WAKE)
            except pykka.ActorDeadError:
                self.wake_sent = False  # not running: the next incarnation drains at start
                self.demand_actor()  # not started yet (an on-demand child): this starts it

    def _running_instance(self) -> Instance:
        """The instance, its tree rebuilt first when this is a forked child's first capture."""
        inst = self.instance
        if inst._forked:
            with inside_phactor():  # restarting logs; none of it is the app's error
                inst._restart_after_fork()
        return inst

    def _build_here(self, snapshot: Snapshot) -> str | None:
        fallback = self.fallback
        if fallback is None:
            self.instance._drop("error_tracking_unavailable", "$exception")
            return None
        with inside_phactor():
            if not self.accept(snapshot):
                return None
            return fallback(snapshot)


# -- the logging handler ------------------------------------------------------------------------


class CaptureHandler(logging.Handler):
    """One instance's logging handler: snapshots error records that carry an exception.

    Not on the root logger itself: the one `routing.RoutingHandler` passes it the records routed
    to its instance. Its level is the instance's `capture_level`. It takes no lock (the snapshot touches no shared
    state) and never raises or prints: a failure is counted by the logging system's silence.
    """

    def __init__(self, intake: Intake) -> None:
        super().__init__(intake.level)
        self.intake = intake

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        if self.filters and not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        # This is all error tracking costs the logging thread: a few attribute reads, the
        # message when it must be formatted now, one dict copy and a deque append. The
        # de-duplication mark, the rate limit and everything else happen in the actor.
        exc_info = record.exc_info
        exc = exc_info[1] if exc_info else None
        intake = self.intake
        if exc is None and not intake.capture_messages:
            return
        flags = _local
        skip = flags.inside
        if skip is None:  # first record on this thread: is it one of ours?
            skip = flags.inside = on_phactor_thread()
        if skip or is_guarded_logger(record.name):
            return
        try:
            if intake.refusing and intake.refused_early(
                exc, refusal_key(exc, record.name, record.funcName)
            ):
                return  # a flood of one type or call site: refused here, without the actor
            msg, args = record.msg, record.args
            if (
                type(msg) is str
                and (not args or (type(args) is tuple and _plain(args)))
                and type(record).getMessage is _GET_MESSAGE
            ):
                # Formatting later gives the same text (immutable parts): the actor does it.
                message = None
            else:
                # The arguments may change once the call returns: format them now (and a
                # __str__ that logs must not come back here).
                flags.inside = True
                try:
                    message = record.getMessage()
                except Exception:
                    message = str_or_marker(msg)
                finally:
                    flags.inside = False
            # The rest of the record (its fields, `extra=`) is sorted out by the actor.
            intake.hand_off(
                (exc, message, record.__dict__.copy(), intake.instance._context.current())
            )
        except Exception:
            pass  # logging must never fail because of us


_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})
# `record_message` is this method's text: a record class with its own (brace style, say) is
# formatted on the logging thread.
_GET_MESSAGE = logging.LogRecord.getMessage


def _plain(args: tuple[Any, ...]) -> bool:
    """True when every argument is an immutable scalar (its `%` text can never change)."""
    for arg in args:  # noqa: SIM110 - a plain loop: all() with a generator costs 2x here
        if type(arg) not in _PLAIN_TYPES:
            return False
    return True
