"""What crosses from the app's threads to the LoggerHandler: snapshots, waiters, wake-ups.

A capture source takes a cheap `Snapshot` on the app's thread (the logging handler leaves an even
cheaper `RecordItem` tuple, expanded by the actor with `as_snapshot`); a caller that waits for its
event leaves a `Waiter`; `Wake` tells the actor that `Intake.pending` has work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from phactor.context import ContextState

__all__ = [
    "WAKE",
    "Pending",
    "RecordItem",
    "Snapshot",
    "Waiter",
    "Wake",
    "as_snapshot",
    "record_message",
    "str_or_marker",
]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_FIELDS = frozenset(
    logging.LogRecord("x", logging.ERROR, "x", 1, "x", None, None, "x").__dict__
) | {"message", "asctime", "taskName"}


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


def record_message(record: Mapping[str, Any]) -> str:
    """`LogRecord.getMessage()` of a record's dict (copy); never raises."""
    msg = record.get("msg")
    try:
        text = str(msg)
        args = record.get("args")
        return text % args if args else text
    except Exception:
        return str_or_marker(msg)


def str_or_marker(value: object) -> str:
    """`str(value)`, or a marker naming its type when that raises."""
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"
