"""The error-tracking part of an `Instance`, kept beside the error-tracking code.

The instance's error-tracking state is its `Intake` (`inst._error_intake`, errortracking/
handler.py), made when its tree starts; the functions here wire it in. With
`enable_error_tracking` (the default) an instance joins the process's routing of logged and
uncaught exceptions as its tree starts (`children`, routing.py) and adds a LoggerHandler child
to its tree: started with the tree in the instance that receives the process's exceptions (or
claims loggers), in any other on demand, by the first exception routed to it (or its first
`capture_exception`), so an instance that never receives one runs no thread for it. `stop()`
removes them (`stopped`) and drains the actor so its last events are flushed with the rest.

`capture_exception` here is the module-level one (`instance=`): it is the public
`phactor.errortracking.capture_exception` (and `phactor.capture_exception`), so it lives in this
package; it only looks the instance up in the registry and delegates.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pykka

from phactor import registry
from phactor.events import distinct_id_text
from phactor.supervisor import ChildSpec

if TYPE_CHECKING:
    from phactor.errortracking.handler import Intake
    from phactor.instance import Instance

# The actor, handler and formatting modules are imported inside the functions below, when an
# instance first needs them: `import phactor` stays cheap (this module is imported with Instance).

__all__ = ["capture_exception", "children", "drain", "gave_up", "stopped"]

_CALL_WAIT_SECONDS = 5.0


def children(inst: Instance) -> list[ChildSpec]:
    """Child specs error tracking adds to the instance's tree (the LoggerHandler)."""
    config = inst.config
    if not config.enable_error_tracking or config.disabled:
        return []
    # lazy: start-up time (the error-tracking core loads when an instance first needs it)
    from phactor.errortracking import routing
    from phactor.errortracking.actor import ExceptionEventBuilder, LoggerHandler  # lazy: start-up
    from phactor.errortracking.handler import Intake  # lazy: start-up time

    intake = inst._error_intake
    if intake is None:
        intake = Intake(inst)
        builder = ExceptionEventBuilder(inst.name, config, inst._capture, inst._drop)
        # Used only when the actor is down (restarting) and a caller can wait.
        intake.fallback = builder.queue
        inst._error_intake = intake

    def start(generation: int) -> pykka.ActorRef[Any]:
        assert inst._supervisor is not None
        ref = LoggerHandler.start(
            "logger_handler",
            generation,
            inst._supervisor,
            intake=intake,
            instance_name=inst.name,
            config=config,
            capture=inst._capture,
        )
        intake.install()  # a no-op: installed as the tree started (below)
        intake.wanted = True
        return ref

    # Routed records reach the Intake from now on. The instance that receives the process's
    # unclaimed exceptions, or claims loggers, starts its LoggerHandler with the tree; any
    # other starts it with the first exception routed to it or its first capture_exception
    # (`Intake.demand_actor`): most instances of a many-instance process never receive one.
    intake.install()
    receives = bool(intake.claims) or routing.receiver() is intake
    return [ChildSpec("logger_handler", start, on_demand=not receives)]


def gave_up(inst: Instance) -> None:
    """Called when the tree gave up: without a LoggerHandler that ever started (its `stopped`
    does the same), the handler and hooks go, and what waits in `pending` is counted."""
    intake = inst._error_intake
    if intake is None:
        return
    intake.uninstall()
    from phactor.errortracking.actor import count_left_behind  # lazy: start-up time

    count_left_behind(intake, "stopped")


def stopped(inst: Instance) -> None:
    """Called once when the instance stops: remove handler and hooks, drain the actor."""
    intake = inst._error_intake
    if intake is None:
        return
    intake.uninstall()
    if drain(inst, min(inst.config.shutdown_timeout, 5.0)):
        return
    # Stuck (or too slow for the deadline): nothing will turn what is left into events in
    # time. Count it now, fence the actor off, and let flush() (so stop()) report False.
    intake.abandoned = True
    actor = intake.actor
    if actor is not None:
        actor.give_up()
    from phactor.errortracking.actor import count_left_behind  # lazy: start-up time

    count_left_behind(intake, "shutdown")


def drain(inst: Instance, timeout: float | None = 5.0) -> bool:
    """Block until every snapshot handed to the LoggerHandler so far is a queued event.

    True when drained (or nothing to drain); False on timeout, when called from the
    LoggerHandler's own thread (it cannot wait for itself), or once stop() gave up on a
    stuck LoggerHandler. `flush()` calls this first.
    """
    intake = inst._error_intake
    if intake is None:
        return True
    return intake.drain(5.0 if timeout is None else timeout)


def capture_exception(
    exc: BaseException | None = None,
    distinct_id: Any = None,
    properties: Mapping[str, Any] | None = None,
    *,
    instance: str = "default",
) -> str | None:
    """Module-level `capture_exception` on the named instance (see `Instance.capture_exception`)."""
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
    if inst is None:
        return None
    return _capture_exception(inst, exc, distinct_id, properties, skip=1)


def _capture_exception(
    inst: Instance,
    exc: BaseException | None,
    distinct_id: Any,
    properties: Mapping[str, Any] | None,
    *,
    skip: int,
) -> str | None:
    # lazy: start-up time (as in `children`; works with error tracking off, so no tree loaded it)
    from phactor.errortracking.formatting import traceback_of_caller
    from phactor.errortracking.handler import Snapshot  # lazy: start-up time

    if exc is not None and not isinstance(exc, BaseException):
        raise TypeError(f"exc must be an exception or None, got {type(exc).__name__}")
    if properties is not None and not isinstance(properties, Mapping):
        raise TypeError(f"properties must be a Mapping, got {type(properties).__name__}")
    distinct_id_text(distinct_id)  # str/int/UUID or None, else TypeError at the call
    if inst._disabled:
        return None
    if exc is None:
        exc = sys.exc_info()[1]
        if exc is None:
            return None
    synthetic = None
    if exc.__traceback__ is None:
        # skip: this helper and the public function that called it.
        synthetic = traceback_of_caller(skip + 1)
    snapshot = Snapshot(
        "capture_exception",
        exc,
        "error",
        True,
        "generic",
        inst._context.current(),
        time.time(),
        distinct_id=distinct_id,
        properties=dict(properties) if properties else None,
        synthetic_traceback=synthetic,
    )
    # The actor (or, without one, this thread) marks it and takes a rate-limit token, in
    # order after what was logged before: None when it was already captured.
    return intake_of(inst).submit(snapshot, wait=_CALL_WAIT_SECONDS)


def intake_of(inst: Instance) -> Intake:
    """The instance's Intake; with error tracking off, one without an actor, made on first use,
    that builds each event on the caller's thread (explicit captures work all the same)."""
    intake: Intake | None = inst._error_intake or inst._error_intake_off
    if intake is None:
        from phactor.errortracking.actor import ExceptionEventBuilder  # lazy: start-up time
        from phactor.errortracking.handler import Intake  # lazy: start-up time

        intake = Intake(inst)
        intake.fallback = ExceptionEventBuilder(inst.name, inst.config, inst._capture).queue
        inst._error_intake_off = intake
    return intake
