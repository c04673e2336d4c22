"""The supervision tree of one instance: its children, how it starts and how it stops.

`start` builds the Supervisor and its children (Senders, the Batcher, and what the flags and
error-tracking parts add) for an `Instance`, on the starting thread; `stop` shuts it down within
a grace; `delivery` is the Sender's delivery (also used by `sync_mode` on the caller's thread).
The children's state that must survive a restart (the buffer, the registry, the abort flag)
belongs to the Instance; this module only wires it in.

Threads: the Supervisor runs on the process-wide SupervisorHost thread; `sender-0` and the
Batcher start with the tree; `sender-1`.. start on demand (the Batcher asks for one when a batch
waits while every running Sender is busy) and retire after `spare_sender_idle(config)` seconds
without a batch; the LoggerHandler starts with the tree in the instance that receives the
process's exceptions (or claims loggers), in any other on the first exception routed to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import pykka

from phactor._log import get_logger
from phactor.batcher import Batcher, Reclaim, Wake
from phactor.errortracking import methods as error_tracking
from phactor.sender import Delivery, Sender, SenderIdle
from phactor.supervisor import (
    ChildSpec,
    StartChild,
    Supervisor,
    WhichChildren,
    shutdown_message,
    wait_stopped,
)
from phactor.transport import HttpTransport, MemoryTransport, Transport

if TYPE_CHECKING:
    from phactor.instance import Instance

__all__ = ["delivery", "spare_sender_idle", "start", "stop", "which_children"]

# How far stop() may run past its grace waiting for the Supervisor.
_STOP_GRACE = 0.2


def spare_sender_idle(config: Any) -> float:
    """Seconds a Sender started on demand (`sender-1`..) stays without a batch before it
    retires: two flush intervals, at least one second (a burst a little later reuses it)."""
    return max(2 * float(config.flush_interval), 1.0)


def start(inst: Instance) -> None:
    """Start `inst`'s Supervisor and every child (blocks until each child started)."""
    config = inst._config

    def child_restarted(name: str) -> None:
        inst._buffer.count_restart()
        sender_back(name)

    def sender_back(name: str) -> None:
        # A Sender (re)started or retired, or a new Batcher: batches filed under a holder no
        # longer running go back to the queue, and the Batcher dispatches.
        if name in inst._sender_names or name == "batcher":
            inst._registry.tell("batcher", Reclaim())

    # The host thread starts (and restarts) every child: all inherit its signal mask.
    inst._supervisor = supervisor = Supervisor.start(
        inst.name,
        inst._registry,
        max_restarts=config.max_restarts,
        max_seconds=config.max_seconds,
        on_restart=child_restarted,
        on_give_up=lambda reason: _gave_up(inst, reason),
        on_started=sender_back,
        on_retired=sender_back,
    )
    specs = [_sender_spec(inst, n) for n in inst._sender_names]
    specs.append(_batcher_spec(inst))
    specs.extend(inst._flags.children())
    specs.extend(error_tracking.children(inst))
    for spec in specs:
        supervisor.ask(StartChild(spec), timeout=10.0)


def _gave_up(inst: Instance, reason: str) -> None:
    error_tracking.gave_up(inst)  # a LoggerHandler never started does not clean up itself
    inst._give_up(reason)  # last: it reports the drops to on_drop


def stop(supervisor: Supervisor, grace: float) -> None:
    """Stop the tree top-down, giving children `grace` seconds (a Sender mid-request).

    The Supervisor stops every child without waiting (its thread serves every instance);
    the waiting happens here, on the stopping thread.
    """
    try:
        refs = supervisor.ask(shutdown_message(), timeout=grace + _STOP_GRACE)
    except (pykka.ActorDeadError, pykka.Timeout):
        return
    wait_stopped(cast("list[pykka.ActorRef[Any]]", refs or []), grace)


def which_children(supervisor: Supervisor | None) -> dict[str, bool]:
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

    # The first Sender starts with the tree and stays; the others come and go with demand.
    spare = name != inst._sender_names[0]

    def start(generation: int) -> pykka.ActorRef[Any]:
        assert inst._supervisor is not None
        return Sender.start(
            name,
            generation,
            inst._supervisor,
            delivery_factory=lambda: delivery(inst),
            buffer=inst._buffer,
            notify_idle=idle,
            retire_after=spare_sender_idle(inst._config) if spare else None,
        )

    return ChildSpec(name, start, on_demand=spare)


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
