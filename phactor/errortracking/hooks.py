"""The except hooks of error tracking: uncaught exceptions of the process and of its threads.

An instance's `ExceptHooks` holds the capture half of the process's `sys.excepthook` and
`threading.excepthook`: each takes a snapshot of the dying thread's exception and waits briefly
for its event to be queued. The hooks themselves are chained once per process by `routing.py`,
which passes each uncaught exception to one instance's (`ChainedHook` unchains in any order).
The asyncio loop's exception handler lives in `loop.py`, loaded only when the app asks for it
(`instrument_asyncio`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from phactor.errortracking.guards import guarded
from phactor.errortracking.snapshot import Snapshot

__all__ = ["HOOK_WAIT_SECONDS", "ChainedHook", "ExceptHooks"]

#: How long an except hook (the thread or process is dying) waits for its event to be queued.
HOOK_WAIT_SECONDS = 2.0


class _Intake(Protocol):
    """What the hooks use of their instance's `Intake` (handler.py; it owns them)."""

    instance: Any

    def submit(self, snapshot: Snapshot, *, wait: float | None) -> str | None: ...


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


class ExceptHooks:
    """The capture half of the sys and threading except hooks, for one instance."""

    __slots__ = ("intake",)

    def __init__(self, intake: _Intake) -> None:
        self.intake = intake

    def sys_excepthook(
        self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        """The capture half of the chained `sys.excepthook`."""
        if exc is None or isinstance(exc, KeyboardInterrupt) or guarded(None):
            return
        intake = self.intake
        snapshot = Snapshot(
            "sys.excepthook",
            exc,
            "fatal",
            False,
            "onuncaughtexception",
            intake.instance._context.current(),
            time.time(),
        )
        intake.submit(snapshot, wait=HOOK_WAIT_SECONDS)

    def threading_excepthook(self, args: Any) -> None:
        """The capture half of the chained `threading.excepthook`."""
        exc = args.exc_value
        if exc is None or isinstance(exc, SystemExit) or guarded(None):
            return
        thread = args.thread
        intake = self.intake
        snapshot = Snapshot(
            "threading.excepthook",
            exc,
            "error",
            False,
            "onuncaughtexception",
            # The hook runs on the dying thread: its context is the one that failed.
            intake.instance._context.current(),
            time.time(),
            thread_name=getattr(thread, "name", None),
        )
        intake.submit(snapshot, wait=HOOK_WAIT_SECONDS)
