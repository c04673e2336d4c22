"""The capture sources of error tracking: a `logging.Handler`, the except hooks, and their guards.

Everything here runs on the app's threads, so it only takes a cheap snapshot (the exception
object, the record's fields, the thread's phactor context) and hands it to the instance's
LoggerHandler actor, which builds the `$exception` event. The guards live here too, because they
must act before any work is done:

- recursion: records from `phactor*` loggers, and every record emitted on one of phactor's own
  threads (its actors, which are pykka threads, and the `phactor-*` threads such as the scheduler)
  are never captured — that covers pykka, requests and urllib3 logging while phactor sends, and
  user callbacks (`on_error`, `before_send`) running inside phactor. A thread-local flag also
  marks code running inside phactor on an app thread;
- de-duplication: an exception object captured once by an instance is marked, so the same object
  reaching the logging handler and then an except hook (or structlog, then stdlib logging) is
  sent once;
- floods: a token bucket per exception type, and a bound on snapshots waiting in the actor's
  mailbox (a snapshot keeps its traceback's frames alive).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pykka

from phactor._guard import flags as _guard_flags
from phactor._guard import inside_phactor
from phactor.context import ContextState
from phactor.supervisor import SupervisedActor, Supervisor

if TYPE_CHECKING:
    from phactor.instance import Instance

__all__ = [
    "CAPTURE_MESSAGES_DEFAULT",
    "HOOK_WAIT_SECONDS",
    "LINGER_SECONDS",
    "MAX_BACKLOG",
    "RATE_LIMIT_BURST",
    "RATE_LIMIT_PER_SECOND",
    "CaptureHandler",
    "ChainedHook",
    "Intake",
    "Pending",
    "Snapshot",
    "TokenBuckets",
    "Waiter",
    "Wake",
    "already_captured",
    "as_snapshot",
    "inside_phactor",
    "is_guarded_logger",
    "key_name",
    "mark_captured",
    "on_phactor_thread",
    "record_message",
]

#: Captures of one exception type allowed at once (the bucket size); the default of the config
#: option `exception_rate_limit_burst`.
RATE_LIMIT_BURST = 50
#: Tokens refilled per second for each exception type (PostHog's Python SDK refills 10 per 10 s).
#: The default of the config option `exception_rate_limit_per_second`.
RATE_LIMIT_PER_SECOND = 1.0
#: Records allowed to wait for the LoggerHandler before new ones are dropped: the default of the
#: config option `exception_backlog` (each keeps its traceback's frames alive).
MAX_BACKLOG = 1000
#: Error records without an exception become `$exception` events only when the config option
#: `capture_messages` is on (this is its default).
CAPTURE_MESSAGES_DEFAULT = False
#: How long an except hook (the thread or process is dying) waits for its event to be queued.
HOOK_WAIT_SECONDS = 2.0
#: Once woken, the LoggerHandler looks at `Intake.pending` again after this long, for as long as
#: it finds records there: during a burst the logging threads never have to wake it.
LINGER_SECONDS = 0.005

_MARK = "__phactor_captured__"

# One lock for every instance: each hook is a read-modify-write of a process-wide global, and two
# instances installing at once (a start and a restart-after-fork, say) must not lose one hook.
_HOOKS_LOCK = threading.Lock()


def _new_hooks_lock_after_fork() -> None:
    global _HOOKS_LOCK
    _HOOKS_LOCK = threading.Lock()  # another thread may have held it at fork time
    for intake in list(_INTAKES):
        intake._after_fork_in_child()


# Every Intake, so that a forked child can forget the records its parent handed off.
_INTAKES: weakref.WeakSet[Intake] = weakref.WeakSet()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_hooks_lock_after_fork)


_local = _guard_flags  # the per-thread flags, shared with phactor._guard

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_FIELDS = frozenset(
    logging.LogRecord("x", logging.ERROR, "x", 1, "x", None, None, "x").__dict__
) | {"message", "asctime", "taskName"}


# -- guards -------------------------------------------------------------------------------------


def _is_phactor_thread(thread: threading.Thread) -> bool:
    name = thread.name
    if isinstance(name, str) and name.startswith("phactor-"):
        return True
    # pykka runs each actor's loop as the thread's target: the bound method names its actor.
    owner = getattr(getattr(thread, "_target", None), "__self__", None)
    return isinstance(owner, SupervisedActor | Supervisor)


def on_phactor_thread() -> bool:
    """True on one of phactor's own threads (an actor of any instance, the scheduler, ...)."""
    value = _local.phactor_thread
    if value is None:
        value = _local.phactor_thread = _is_phactor_thread(threading.current_thread())
    return value


def is_guarded_logger(name: object) -> bool:
    """True for phactor's own loggers, whose records are never captured."""
    return isinstance(name, str) and (name == "phactor" or name.startswith("phactor."))


def _guarded(logger_name: object) -> bool:
    return is_guarded_logger(logger_name) or _local.inside or on_phactor_thread()


# The mark lives in the exception's instance dict, reached through BaseException's own
# descriptor: no attribute lookup through the exception's class (each new class would miss the
# type cache, on the logging thread), and no custom __getattr__/__setattr__ runs.
_exception_dict = BaseException.__dict__["__dict__"].__get__


def already_captured(exc: BaseException, instance_name: str) -> bool:
    """Whether instance `instance_name` already captured this exception object."""
    try:
        return instance_name in _exception_dict(exc).get(_MARK, ())
    except Exception:
        return False


def mark_captured(exc: BaseException, instance_name: str) -> bool:
    """Mark `exc` as captured by `instance_name`; False when it already was (skip it then)."""
    try:
        attrs = _exception_dict(exc)
        marks: tuple[str, ...] = attrs.get(_MARK, ())
        if instance_name in marks:
            return False
        # A new tuple each time: two threads marking at once never corrupt a shared object. A
        # tuple, not a set: there are a handful of instances, and this runs on the logging thread.
        attrs[_MARK] = (*marks, instance_name)
    except Exception:
        pass  # not an exception object after all: captured, just not de-duplicated
    return True


# -- rate limit ---------------------------------------------------------------------------------


class TokenBuckets:
    """A token bucket per key: `burst` captures at once, then `per_second` on average.

    Thread-safe; `clock` (seconds, monotonic) is injectable for tests. At most `max_keys`
    buckets are kept: past that, full buckets (which carry no information) are forgotten.
    """

    def __init__(
        self,
        burst: int = RATE_LIMIT_BURST,
        per_second: float = RATE_LIMIT_PER_SECOND,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1000,
    ) -> None:
        self.burst = float(max(0, burst))
        self.per_second = max(0.0, float(per_second))
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[Any, list[float]] = {}  # key -> [tokens, last refill time]
        self._lock = threading.Lock()

    def allow(self, key: Any) -> bool:
        """Take a token for `key`; False when its bucket is empty."""
        now = self.clock()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.max_keys:
                with self._lock:
                    self._forget_full(now)
                buckets = self._buckets
            bucket = buckets.setdefault(key, [self.burst, now])
        # No lock: a race between two threads (on one bucket, or a bucket added while the
        # buckets are replaced) can only let one extra capture through, which a rate limit can
        # afford; a lock on every record costs more.
        tokens = bucket[0]
        elapsed = now - bucket[1]
        if elapsed > 0.0:
            tokens += elapsed * self.per_second
            if tokens > self.burst:
                tokens = self.burst
            bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        return False

    def next_token_in(self, key: Any) -> float:
        """Seconds until `key`'s bucket has a token again (0 when it has one; inf: never)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = bucket[0] + max(0.0, self.clock() - bucket[1]) * self.per_second
        if tokens >= 1.0:
            return 0.0
        if self.per_second <= 0.0:
            return float("inf")
        return (1.0 - tokens) / self.per_second

    def _forget_full(self, now: float) -> None:
        # Under the lock. Replaced, not mutated: `allow` reads and adds without the lock (so
        # the items are copied in one C-level step before they are looked at).
        if len(self._buckets) < self.max_keys:
            return  # another thread just did it
        kept = {
            k: v
            for k, v in list(self._buckets.items())
            if v[0] + (now - v[1]) * self.per_second < self.burst
        }
        self._buckets = kept if len(kept) < self.max_keys else {}


@dataclass(frozen=True)
class Wake:
    """Tell: snapshots are waiting in `Intake.pending`."""


WAKE = Wake()


# -- snapshots ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Snapshot:
    """What a capture source saw, taken cheaply on the app's thread for the LoggerHandler.

    `exc` is None for an error record without an exception (`capture_messages`). `level` is a
    `logging` level number or a PostHog level name.
    """

    source: str
    exc: BaseException | None
    level: int | str
    handled: bool
    mechanism_type: str
    state: ContextState
    created: float
    logger_name: str | None = None
    level_name: str | None = None
    message: str | None = None
    function: str | None = None
    pathname: str | None = None
    lineno: int | None = None
    thread_name: str | None = None
    extras: Mapping[str, Any] | None = None
    distinct_id: Any = None
    properties: Mapping[str, Any] | None = None
    synthetic_traceback: TracebackType | None = None
    record: dict[str, Any] | None = None

    def expand_record(self) -> None:
        """Fill the record's fields and `extras` from `record` (a copy of a LogRecord's dict).

        The logging handler only copies the record's dict on the app's thread (one C-level
        copy); the actor sorts it out here. Idempotent.
        """
        record = self.record
        if record is None:
            return
        self.record = None
        get = record.get
        self.logger_name = get("name")
        self.level_name = get("levelname")
        self.function = get("funcName")
        self.pathname = get("pathname")
        self.lineno = get("lineno")
        self.thread_name = get("threadName")
        # `extra=` may carry keys that are not strings: they cannot be property names.
        extras = {
            k: v
            for k, v in record.items()
            if type(k) is str and k not in _RECORD_FIELDS and k[:1] != "_"
        }
        self.extras = extras or None


class Waiter:
    """A pending item someone waits for: an asked snapshot (its event uuid), or, with no
    snapshot, a barrier (`Intake.drain`: everything handed over before it is done).

    Asks go through `Intake.pending` like everything else, not through the actor's mailbox: a
    replacement LoggerHandler finds them there when its predecessor got stuck.
    """

    __slots__ = ("done", "result", "snapshot")

    def __init__(self, snapshot: Snapshot | None) -> None:
        self.snapshot = snapshot
        self.result: str | None = None
        self.done = threading.Event()

    def resolve(self, result: str | None) -> None:
        self.result = result
        self.done.set()


#: What the logging handler leaves in `Intake.pending`: (exception, message, a copy of the
#: record's dict, the thread's context); message None when the actor may format it itself
#: (a str message with immutable scalar arguments). The actor makes it a Snapshot
#: (`as_snapshot`); other sources leave Snapshots, or Waiters when they wait.
RecordItem = tuple[BaseException | None, str | None, dict[str, Any], ContextState]
Pending = Snapshot | RecordItem | Waiter


def as_snapshot(item: Snapshot | RecordItem) -> Snapshot:
    """The Snapshot of a pending item (a logging record's tuple is expanded here, off the app)."""
    if isinstance(item, Snapshot):
        return item
    exc, message, record, state = item
    if message is None:
        message = record_message(record)
    created = record.get("created")
    return Snapshot(
        "logging",
        exc,
        record.get("levelno", logging.ERROR),
        True,
        "generic",
        state,
        created if isinstance(created, float | int) else time.time(),
        message=message,
        record=record,
    )


def _type_key(cls: type) -> str:
    # By name, not by class object: a class statement run per call (a retry helper, an error
    # factory) makes a new class each time, and a flood of it must share one bucket (the
    # limiter would also keep those classes alive). Both reads go through `type`'s own
    # descriptors, so a new class costs no lookup through its MRO.
    return f"{cls.__module__}.{cls.__qualname__}"


def key_name(key: Any) -> str:
    """A rate-limit key for logs: `module.Qualname` for an exception type, else `str(key)`."""
    return _type_key(key) if isinstance(key, type) else str(key)


def _quick_key(exc: BaseException | None, logger_name: Any, function: Any) -> Any:
    # The key of `Intake.refusing`: the exception's class (no string to build on the app's
    # thread), or the call site of a record without an exception.
    return type(exc) if exc is not None else (logger_name, function)


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
        self.sys_hook: ChainedHook | None = None
        self.thread_hook: ChainedHook | None = None
        self.actor_thread: int | None = None  # ident of the LoggerHandler's thread
        # The running LoggerHandler incarnation, set by itself at start (before it drains).
        self.actor_ref: pykka.ActorRef[Any] | None = None
        self.actor: Any = None  # that incarnation's LoggerHandler object (its watchdog's state)
        self.fallback: Callable[[Snapshot], str | None] | None = None
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
        self.limiter._lock = threading.Lock()  # another thread may have held it at fork time

    # -- install ------------------------------------------------------------------------------

    @property
    def installed(self) -> bool:
        """True while the handler and hooks are in place."""
        return self.sys_hook is not None

    def install(self) -> None:
        """Attach the handler to the root logger and chain the except hooks (once)."""
        with _HOOKS_LOCK:
            if self.sys_hook is not None:
                return
            logging.getLogger().addHandler(self.handler)
            self.sys_hook = ChainedHook(self._sys_excepthook, sys.excepthook)
            sys.excepthook = self.sys_hook
            self.thread_hook = ChainedHook(self._threading_excepthook, threading.excepthook)
            threading.excepthook = self.thread_hook

    def uninstall(self) -> None:
        """Remove the handler and unchain the hooks; safe in any order across instances."""
        with _HOOKS_LOCK:
            logging.getLogger().removeHandler(self.handler)
            sys_hook, thread_hook = self.sys_hook, self.thread_hook
            self.sys_hook = self.thread_hook = None
            if sys_hook is not None:
                sys_hook.closed = True
                if sys.excepthook is sys_hook:
                    sys.excepthook = sys_hook.resolve_previous()
            if thread_hook is not None:
                thread_hook.closed = True
                if threading.excepthook is thread_hook:
                    threading.excepthook = thread_hook.resolve_previous()

    # -- sources ------------------------------------------------------------------------------

    def _sys_excepthook(
        self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        if exc is None or isinstance(exc, KeyboardInterrupt) or _guarded(None):
            return
        snapshot = Snapshot(
            "sys.excepthook",
            exc,
            "fatal",
            False,
            "onuncaughtexception",
            self.instance._context.current(),
            time.time(),
        )
        self.submit(snapshot, wait=HOOK_WAIT_SECONDS)

    def _threading_excepthook(self, args: Any) -> None:
        exc = args.exc_value
        if exc is None or isinstance(exc, SystemExit) or _guarded(None):
            return
        thread = args.thread
        snapshot = Snapshot(
            "threading.excepthook",
            exc,
            "error",
            False,
            "onuncaughtexception",
            # The hook runs on the dying thread: its context is the one that failed.
            self.instance._context.current(),
            time.time(),
            thread_name=getattr(thread, "name", None),
        )
        self.submit(snapshot, wait=HOOK_WAIT_SECONDS)

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
        if level < self.level or _guarded(logger_name):
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
            if not mark_captured(exc, self.name):
                return False
        else:
            snapshot.expand_record()
        quick_key = _quick_key(exc, snapshot.logger_name, snapshot.function)
        key = _type_key(quick_key) if exc is not None else quick_key
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
        if self.refused_early(exc, _quick_key(exc, snapshot.logger_name, snapshot.function)):
            return None
        if wait is None:
            self.hand_off(snapshot)
            return None
        self._running_instance()
        if self._actor_running() and threading.get_ident() != self.actor_thread:
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

    def _actor_running(self) -> bool:
        # The registry's ref covers a LoggerHandler started but not yet through `started`
        # (pykka runs on_start on the actor's thread): it drains `pending` as it starts.
        ref = self.actor_ref or self.instance._registry.get("logger_handler")
        return ref is not None and ref.is_alive()

    def enqueue(self, item: Pending) -> None:
        """Append `item` to `pending` (no backlog bound: its caller waits) and wake the actor."""
        self.pending.append(item)
        self._wake()

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
            if exc is not None and not mark_captured(exc, self.name):
                return
            inst._drop("exception_backlog", "$exception")
            return
        # Append before reading the flag: the actor clears the flag, then looks at `pending`.
        pending.append(item)
        if not self.wake_sent:  # tested here too: no call on the logging thread's fast path
            self._wake()

    def _wake(self) -> None:
        if not self.wake_sent:
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
    """Root-logger handler of one instance: snapshots error records that carry an exception.

    Its level is the instance's `capture_level`. It takes no lock (the snapshot touches no shared
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
                exc, _quick_key(exc, record.name, record.funcName)
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
                    message = _safe_str(msg)
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


def record_message(record: Mapping[str, Any]) -> str:
    """`LogRecord.getMessage()` of a record's dict (copy); never raises."""
    msg = record.get("msg")
    try:
        text = str(msg)
        args = record.get("args")
        return text % args if args else text
    except Exception:
        return _safe_str(msg)


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


# -- except hooks -------------------------------------------------------------------------------


class ChainedHook:
    """An except hook (sys or threading) that captures, then calls the hook it replaced.

    A closed hook only forwards. When several instances chain hooks and stop in any order, each
    one restores the hook below it, skipping closed ones, so the last one out leaves the
    original hook in place.
    """

    __slots__ = ("capture", "closed", "previous")

    def __init__(self, capture: Callable[..., None], previous: Callable[..., Any]) -> None:
        self.capture = capture
        self.previous = previous
        self.closed = False

    def resolve_previous(self) -> Callable[..., Any]:
        """The first hook below this one that is still open (or not one of ours)."""
        hook = self.previous
        while isinstance(hook, ChainedHook) and hook.closed:
            hook = hook.previous
        return hook

    def __call__(self, *args: Any) -> Any:
        if not self.closed:
            try:
                self.capture(*args)
            except Exception:
                pass  # reporting a crash must never hide it
        return self.resolve_previous()(*args)
