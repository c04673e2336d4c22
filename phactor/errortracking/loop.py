"""asyncio: capture exceptions that reach an event loop's exception handler.

An exception in a callback scheduled with `call_soon`, or in a task nobody awaited, never
reaches `sys.excepthook`: the loop hands it to its exception handler, which by default only logs
"Task exception was never retrieved". `instrument_asyncio()` chains a handler in front of the
current one for the loops the app asks for (phactor never touches a loop on its own).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from typing import Any

from phactor import registry
from phactor.errortracking import routing
from phactor.errortracking.handler import Intake
from phactor.errortracking.methods import intake_of
from phactor.errortracking.snapshot import Snapshot

__all__ = ["instrument_asyncio"]

# With error tracking off, how long the loop's thread may wait for the event (built on it).
_BUILD_HERE_SECONDS = 5.0


def instrument_asyncio(
    loop: asyncio.AbstractEventLoop | None = None, *, instance: str | None = None
) -> Callable[[], None]:
    """Capture exceptions reaching `loop`'s exception handler (default: the running loop).

    Where they go, decided for each exception: without `instance`, where the record the loop
    logs to its "asyncio" logger is routed (routing.py): the instance that claimed that logger
    (`error_tracking_loggers`), else the receiver of uncaught exceptions, as for
    `sys.excepthook`; nothing when no instance tracks errors. With `instance`, that instance
    (looked up at each exception, so a stop and a new start of the name is followed; with error
    tracking off the event is built on the loop's thread). NotStarted when `instance` names no
    running instance now.

    The previous handler (or the loop's default one) still runs afterwards. Returns a function
    that restores the previous handler. Exceptions become `$exception` events with
    `$exception_source: "asyncio"`; `CancelledError` and messages without an exception are not
    captured.
    """
    if instance is not None:
        registry.lookup(instance)  # a name that is not running is a setup slip: say so now
    if loop is None:
        loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handler(the_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        try:
            _capture(instance, context)
        finally:
            if previous is not None:
                previous(the_loop, context)
            else:
                the_loop.default_exception_handler(context)

    loop.set_exception_handler(handler)

    def restore() -> None:
        if loop.get_exception_handler() is handler:
            loop.set_exception_handler(previous)

    return restore


def _target(instance: str | None) -> Intake | None:
    """The Intake a loop's exception goes to now (None: nobody takes it)."""
    if instance is None:
        # The instance the loop's own "asyncio" log record is routed to: one instance, and the
        # same one, whichever of the two captures the exception first.
        return routing.route("asyncio")
    inst = registry.by_name.get(instance)
    return None if inst is None else intake_of(inst)


def _capture(instance: str | None, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    if not isinstance(exc, BaseException) or isinstance(exc, asyncio.CancelledError):
        return
    intake = _target(instance)
    if intake is None or intake.instance._disabled:
        return
    inst = intake.instance
    # The handler runs in the loop's own context, not in the one the failing callback or task
    # ran in (where a request set its distinct_id). Tasks and handles know theirs: public
    # `get_context()` on 3.12+, the handle's `_context` attribute on 3.11.
    state = inst._context.current()
    for holder in (context.get("task"), context.get("future"), context.get("handle")):
        get_context = getattr(holder, "get_context", None)
        ctx = get_context() if get_context is not None else getattr(holder, "_context", None)
        if isinstance(ctx, contextvars.Context):
            try:
                state = ctx.run(inst._context.current)
            except Exception:
                pass
            break
    message = context.get("message")
    snapshot = Snapshot(
        "asyncio",
        exc,
        "error",
        False,
        "onuncaughtexception",
        state,
        time.time(),
        message=str(message) if message else None,
        extras={"asyncio_message": str(message)} if message else None,
    )
    # Without error tracking the Intake has no actor: the event is built on this thread (a
    # wait is what makes it so), as this source's event, not as an explicit capture's.
    tracking = intake is inst._error_intake
    intake.submit(snapshot, wait=None if tracking else _BUILD_HERE_SECONDS)
