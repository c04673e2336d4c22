"""The LoggerHandler actor: turns capture snapshots into `$exception` events, off the app's threads.

The capture sources (`handler.py`) hand it snapshots; it describes the exception with the pure
`formatting` core (frames, source lines from its own bounded `SourceCache`, in_app), merges the
snapshot's context, and queues the event through the instance's normal pipeline (`_capture`),
so before_send, the size limit, stats and the buffer apply as to any other event.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from phactor._log import get_logger
from phactor.config import Config
from phactor.context import EMPTY
from phactor.errortracking.formatting import (
    SourceCache,
    exception_level,
    exception_properties,
    message_exception_properties,
)
from phactor.errortracking.handler import (
    LINGER_SECONDS,
    WAKE,
    Intake,
    Snapshot,
    Wake,
    as_snapshot,
)
from phactor.events import new_uuid4
from phactor.supervisor import SupervisedActor
from phactor.timer import scheduler

__all__ = ["SELF_WAKE", "Drain", "ExceptionEventBuilder", "LoggerHandler"]

#: Source files whose lines the LoggerHandler keeps for context lines.
SOURCE_CACHE_FILES = 64

# The `_capture` signature of Instance, bound to one instance.
CaptureFn = Callable[..., str | None]


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

    def __init__(self, instance_name: str, config: Config, capture: CaptureFn) -> None:
        self.config = config
        self.capture = capture
        self.sources = SourceCache(SOURCE_CACHE_FILES)
        self.project_root = _cwd()
        self.log = get_logger("errortracking", instance=instance_name)
        self._failed_kinds: set[str] = set()

    def queue(self, snapshot: Snapshot) -> str | None:
        """Queue `snapshot`'s event; its uuid, or None when it was dropped (or failed)."""
        try:
            distinct_id, properties = self.build(snapshot)
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
        """Log a failure to handle a snapshot, once per kind (the error's type)."""
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
        props.update(self.describe(snapshot))

        distinct_id = snapshot.distinct_id
        if distinct_id is None or distinct_id == "":
            distinct_id = props.pop("distinct_id", None)
        if distinct_id is None or distinct_id == "":
            # Nobody known: a fresh id, and no person profile (as PostHog's SDKs do).
            distinct_id = new_uuid4()
            props["$process_person_profile"] = False
        props.pop("distinct_id", None)
        return str(distinct_id), props

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


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the working directory was deleted
        return None


class LoggerHandler(SupervisedActor):
    """Child "logger_handler" of an instance with error tracking on.

    Messages: `Wake` (told when the logging handler left records in `Intake.pending`, and by
    itself), a `Snapshot` (asked by except hooks and `capture_exception`, which get the event
    uuid back) and `Drain` (asked by flush and stop). Each message first drains what is pending.

    The wake-up protocol: `Intake.wake_sent` is True from the moment someone decides to wake the
    actor until the actor finds `pending` empty on a `Wake`. While it keeps finding records, it
    wakes itself again after `LINGER_SECONDS` (the shared scheduler), so during a burst the
    logging threads only append; when a `Wake` finds nothing it clears the flag and looks once
    more, so a record appended meanwhile is never left behind.
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

    def started(self) -> None:
        # One SourceCache per incarnation; project_root is the working directory at start.
        self.builder = ExceptionEventBuilder(self.instance_name, self.config, self.capture)
        intake = self.intake
        intake.actor_thread = threading.get_ident()
        # Published before the first drain: a thread that reads the old ref appended its
        # record before this, so the drain below finds it (see `Intake.hand_off`).
        intake.actor_ref = self.actor_ref
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
        intake = self.intake
        intake.uninstall()
        inst = intake.instance
        reason = "shutdown" if inst._state == "stopping" else "stopped"
        pending = intake.pending
        while pending:
            try:
                pending.popleft()
            except IndexError:
                break
            inst._drop(reason, "$exception")

    def handle(self, message: Any) -> Any:
        if isinstance(message, Wake):
            if message is SELF_WAKE:
                self._linger = None
            if self.drain_pending():
                self._wake_later()
                return None
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
            if not self.accept(message):
                return None
            return self.builder.queue(message)
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
            try:
                item = pending.popleft()
            except IndexError:
                break
            count += 1
            try:
                snapshot = as_snapshot(item)
            except Exception as error:  # never let one odd record crash the actor
                builder.failed(error, "logging")
                continue
            if self.accept(snapshot):
                builder.queue(snapshot)
        return count

    def accept(self, snapshot: Snapshot) -> bool:
        """`Intake.accept`, whose failure (an odd record or exception) only skips the snapshot."""
        try:
            return self.intake.accept(snapshot)
        except Exception as error:
            assert self.builder is not None
            self.builder.failed(error, snapshot.source)
            return False
