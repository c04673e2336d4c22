"""The supervision tree of one instance: its children, how it starts and how it stops.

`start` builds the Supervisor and its children (Senders, the Batcher, and what the flags and
error-tracking parts add) for an `Instance`, on the starting thread; `stop` shuts it down within
a grace; `delivery` is the Sender's delivery (also used by `sync_mode` on the caller's thread).
The children's state that must survive a restart (the buffer, the registry, the abort flag)
belongs to the Instance; this module only wires it in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import pykka

from phactor._log import get_logger
from phactor._sigmask import signals_blocked
from phactor.batcher import Batcher, Reclaim, Wake
from phactor.errortracking import methods as error_tracking
from phactor.sender import Delivery, Sender, SenderIdle
from phactor.supervisor import (
    ChildSpec,
    StartChild,
    Supervisor,
    WhichChildren,
    shutdown_message,
)
from phactor.transport import HttpTransport, MemoryTransport, Transport

if TYPE_CHECKING:
    from phactor.instance import Instance

__all__ = ["delivery", "start", "stop", "which_children"]

# How far stop() may run past its grace waiting for the Supervisor.
_STOP_GRACE = 0.2


def start(inst: Instance) -> None:
    """Start `inst`'s Supervisor and every child (blocks until each child started)."""
    config = inst._config

    def child_restarted(name: str) -> None:
        inst._buffer.count_restart()
        if name in inst._sender_names or name == "batcher":
            inst._registry.tell("batcher", Reclaim())

    # The Supervisor's thread starts (and restarts) every child: all inherit its mask.
    with signals_blocked():
        inst._supervisor = Supervisor.start(
            inst.name,
            inst._registry,
            max_restarts=config.max_restarts,
            max_seconds=config.max_seconds,
            on_restart=child_restarted,
            on_give_up=inst._give_up,
        )
    specs = [_sender_spec(inst, n) for n in inst._sender_names]
    specs.append(_batcher_spec(inst))
    specs.extend(inst._flags.children())
    specs.extend(error_tracking.children(inst))
    proxy = inst._supervisor
    for spec in specs:
        proxy.ask(StartChild(spec), timeout=10.0)


def stop(supervisor: pykka.ActorRef[Any], grace: float) -> None:
    """Stop the tree top-down, giving children `grace` seconds (a Sender mid-request)."""
    try:
        supervisor.tell(shutdown_message(grace))
        supervisor.stop(block=True, timeout=grace + _STOP_GRACE)
    except (pykka.ActorDeadError, pykka.Timeout):
        pass


def which_children(supervisor: pykka.ActorRef[Any] | None) -> dict[str, bool]:
    """Each child and whether it is alive; {} when the tree is down or does not answer."""
    if supervisor is None or not supervisor.is_alive():
        return {}
    try:
        answer = supervisor.ask(WhichChildren(), timeout=5.0)
    except (pykka.ActorDeadError, pykka.Timeout):
        return {}
    return dict(cast("dict[str, bool]", answer))


def delivery(inst: Instance) -> Delivery:
    """A new Delivery (transport, retries, settling) over `inst`'s buffer."""
    return Delivery(
        inst._config,
        _transport(inst),
        inst._buffer,
        inst._abort,
        get_logger("sender", instance=inst.name),
        inst._health,
    )


def _transport(inst: Instance) -> Transport:
    config = inst._config
    if config.test_mode:
        return MemoryTransport(inst._test_events, inst._test_lock)
    return HttpTransport(
        config.host, timeout=config.request_timeout, gzip=config.gzip, verify=config.verify
    )


def _sender_spec(inst: Instance, name: str) -> ChildSpec:
    def idle(sender: str) -> None:
        inst._registry.tell("batcher", SenderIdle(sender))

    def start(generation: int) -> pykka.ActorRef[Any]:
        assert inst._supervisor is not None
        return Sender.start(
            name,
            generation,
            inst._supervisor,
            delivery_factory=lambda: delivery(inst),
            buffer=inst._buffer,
            notify_idle=idle,
        )

    return ChildSpec(name, start)


def _batcher_spec(inst: Instance) -> ChildSpec:
    config = inst._config

    def start(generation: int) -> pykka.ActorRef[Any]:
        assert inst._supervisor is not None
        return Batcher.start(
            "batcher",
            generation,
            inst._supervisor,
            buffer=inst._buffer,
            health=inst._health,
            registry=inst._registry,
            sender_names=inst._sender_names,
            flush_at=config.flush_at,
            flush_interval=config.flush_interval,
            max_batch_bytes=config.max_batch_bytes,
        )

    def registered(ref: pykka.ActorRef[Any]) -> None:
        # A wake told while the Batcher started (the spool's replay loading its backlog, a
        # capture on another thread) found no name and was lost; with nothing else queued to
        # come, the backlog would wait for ever.
        ref.tell(Wake())

    return ChildSpec("batcher", start, registered)
