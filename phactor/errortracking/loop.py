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
from phactor.errortracking.handler import Intake
from phactor.errortracking.snapshot import Snapshot

__all__ = ["instrument_asyncio"]


def instrument_asyncio(
    loop: asyncio.AbstractEventLoop | None = None, *, instance: str = "default"
) -> Callable[[], None]:
    """Capture exceptions reaching `loop`'s exception handler (default: the running loop).

    The previous handler (or the loop's default one) still runs afterwards. Returns a function
    that restores the previous handler. Exceptions become `$exception` events with
    `$exception_source: "asyncio"`; `CancelledError` and messages without an exception are not
    captured.
    """
    inst = registry.lookup(instance)
    if loop is None:
        loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handler(the_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        try:
            _capture(inst, context)
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


def _capture(inst: Any, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    if not isinstance(exc, BaseException) or isinstance(exc, asyncio.CancelledError):
        return
    if inst._disabled:
        return
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
    intake: Intake | None = inst.__dict__.get("_error_intake")
    if intake is None:
        # Error tracking is off on this instance: fall back to an explicit capture (a stack
        # made up for an exception that was never raised still ends in this function).
        inst.capture_exception(exc, None, {"$exception_source": "asyncio"})
        return
    intake.submit(snapshot, wait=None)
