"""The except hooks of error tracking: uncaught exceptions of the process and of its threads.

An instance's `ExceptHooks` chains a hook in front of `sys.excepthook` and one in front of
`threading.excepthook` (and, in the same step, puts the instance's logging handler on the root
logger); each takes a snapshot of the dying thread's exception and waits briefly for its event
to be queued. Hooks of several instances chain and unchain in any order (`ChainedHook`).
The asyncio loop's exception handler lives in `loop.py`, loaded only when the app asks for it
(`instrument_asyncio`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from phactor.errortracking.guards import guarded
from phactor.errortracking.snapshot import Snapshot

__all__ = ["HOOK_WAIT_SECONDS", "ChainedHook", "ExceptHooks"]

#: How long an except hook (the thread or process is dying) waits for its event to be queued.
HOOK_WAIT_SECONDS = 2.0

# One lock for every instance: each hook is a read-modify-write of a process-wide global, and two
# instances installing at once (a start and a restart-after-fork, say) must not lose one hook.
_HOOKS_LOCK = threading.Lock()


def _new_hooks_lock_after_fork() -> None:
    global _HOOKS_LOCK
    _HOOKS_LOCK = threading.Lock()  # another thread may have held it at fork time


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_hooks_lock_after_fork)


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
    """The sys and threading except hooks of one instance, with its logging handler's place.

    `install` / `uninstall` are idempotent and safe in any order across instances.
    """

    __slots__ = ("intake", "sys_hook", "thread_hook")

    def __init__(self, intake: _Intake) -> None:
        self.intake = intake
        self.sys_hook: ChainedHook | None = None
        self.thread_hook: ChainedHook | None = None

    @property
    def installed(self) -> bool:
        """True while the handler and hooks are in place."""
        return self.sys_hook is not None

    def install(self, handler: logging.Handler) -> None:
        """Attach `handler` to the root logger and chain the except hooks (once)."""
        with _HOOKS_LOCK:
            if self.sys_hook is not None:
                return
            logging.getLogger().addHandler(handler)
            self.sys_hook = ChainedHook(self.sys_excepthook, sys.excepthook)
            sys.excepthook = self.sys_hook
            self.thread_hook = ChainedHook(self.threading_excepthook, threading.excepthook)
            threading.excepthook = self.thread_hook

    def uninstall(self, handler: logging.Handler) -> None:
        """Remove `handler` from the root logger and unchain the hooks."""
        with _HOOKS_LOCK:
            logging.getLogger().removeHandler(handler)
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
