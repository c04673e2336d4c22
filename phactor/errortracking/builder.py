"""The `$exception` event of one snapshot: context, record fields and the exception's description.

`ExceptionEventBuilder` merges what a capture source saw (the snapshot's context, `extra=`, call
properties, the record's fields) with the pure core's description of the exception
(`formatting`), and queues the event through the instance's normal pipeline (`capture`), so
before_send, the size limit, stats and the buffer apply as to any other event. The LoggerHandler
runs one per incarnation; a waiting caller runs one on its own thread while the actor is down,
and `capture_exception` with error tracking off always does.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

import orjson

from phactor._log import get_logger
from phactor.config import Config
from phactor.context import EMPTY
from phactor.encoding import walk_is_linear
from phactor.errortracking.formatting import (
    exception_level,
    exception_properties,
    message_exception_properties,
)
from phactor.errortracking.frames import SourceCache
from phactor.errortracking.snapshot import Snapshot
from phactor.errortracking.wire import clean_text, wire_safe
from phactor.events import new_uuid4

__all__ = ["SOURCE_CACHE_FILES", "CaptureFn", "DropFn", "ExceptionEventBuilder"]

#: Source files whose lines the LoggerHandler keeps for context lines.
SOURCE_CACHE_FILES = 64

# The `_capture` signature of Instance, bound to one instance.
CaptureFn = Callable[..., str | None]
# `Instance._drop`: count (and log) a dropped event under a reason.
DropFn = Callable[..., None]


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
        record extras / call properties < the record's fields < the exception's description,
        but for a `$exception_source` text set before it (kept over the source's own name).
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
        # A `$exception_source` text the caller (or an earlier source) set is kept; the rest of
        # the description wins.
        keep_source = isinstance(props.get("$exception_source"), str)
        if props:
            props = _encodable(props)
        source = props.get("$exception_source") if keep_source else None
        props.update(self.describe(snapshot))
        if source:
            props["$exception_source"] = source

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


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the working directory was deleted
        return None
