"""Supervisors and the Registry: start, watch and restart an instance's children.

Modelled on an OTP supervisor: child specs, strategy one_for_one, restart intensity
(`max_restarts` within `max_seconds`). pykka has no links or monitors, so every child reports
its own death (`on_failure`, a failing `on_start`, an unexpected `on_stop`) to its Supervisor
by message. The Supervisor does nothing else: business state that must survive a restart lives
in the instance's `EventBuffer`, which each new incarnation is handed again.

Every instance has its own `Supervisor` (its children, its restart intensity, its registry),
but they share one thread: the process-wide `SupervisorHost` actor handles each Supervisor's
messages with that Supervisor's own state, one message at a time, and keeps what goes wrong
while handling one instance's message to that instance. A supervisor never waits (stopping
children is asked of them; whoever stops the tree waits, on its own thread), so one instance
cannot delay another's restarts. The host starts on first use, again in a forked child.

Children marked `on_demand` (the Senders after the first, the LoggerHandler) are not started
with the tree: `Registry.demand(name)` starts one when it is first needed, and an idle one may
retire (`SupervisedActor.retire`) to be started again on the next demand.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from phactor._log import get_logger
from phactor._sigmask import signals_blocked
from phactor.timer import scheduler

__all__ = [
    "ChildExited",
    "ChildRetired",
    "ChildSpec",
    "Crash",
    "EnsureChild",
    "Registry",
    "Retire",
    "StartChild",
    "SupervisedActor",
    "Supervisor",
    "SupervisorHost",
    "WhichChildren",
    "host",
]


class Registry:
    """Names -> live children for one instance. Read lock-free; replaced copy-on-write.

    Callers hold names, not refs: a ref dies with its actor, the name survives restarts. The
    generation tells incarnations apart (a Sender's batches are filed under name#generation).
    `dormant` names the on-demand children not running now (never started, or retired).
    """

    def __init__(self) -> None:
        self._refs: dict[str, tuple[pykka.ActorRef[Any], int]] = {}
        self._lock = threading.Lock()
        self.dormant: frozenset[str] = frozenset()
        self.supervisor: Supervisor | None = None

    def get(self, name: str) -> pykka.ActorRef[Any] | None:
        entry = self._refs.get(name)
        return entry[0] if entry else None

    def entry(self, name: str) -> tuple[pykka.ActorRef[Any], int] | None:
        """(ref, generation) of the running incarnation, or None."""
        return self._refs.get(name)

    def put(self, name: str, ref: pykka.ActorRef[Any], generation: int) -> None:
        with self._lock:
            self._refs = {**self._refs, name: (ref, generation)}

    def remove(self, name: str) -> None:
        with self._lock:
            self._refs = {k: v for k, v in self._refs.items() if k != name}

    def clear(self) -> None:
        with self._lock:
            self._refs = {}

    def names(self) -> list[str]:
        return list(self._refs)

    def tell(self, name: str, message: Any) -> bool:
        """Send `message` to the named child; False when it is not running right now."""
        entry = self._refs.get(name)
        if entry is None:
            return False
        try:
            entry[0].tell(message)
        except pykka.ActorDeadError:
            return False
        return True

    def demand(self, name: str) -> bool:
        """Have the on-demand child `name` started if it is dormant; True when it was asked
        for (it announces itself once running), False when it is not dormant (running,
        restarting, or not an on-demand child)."""
        supervisor = self.supervisor
        if name not in self.dormant or supervisor is None:
            return False
        supervisor.tell(EnsureChild(name))
        return True


@dataclass(frozen=True)
class ChildSpec:
    """How to (re)start one child: `start(generation)` returns the new actor's ref.

    `registered(ref)`, when given, runs once the new incarnation is in the registry: a wake
    told to the name while it started (before it was registered) was lost, so the child is
    told again there.
    `on_demand`: not started with the tree, but by the first `Registry.demand(name)`.
    """

    name: str
    start: Callable[[int], pykka.ActorRef[Any]]
    registered: Callable[[pykka.ActorRef[Any]], None] | None = None
    on_demand: bool = False


@dataclass(frozen=True)
class ChildExited:
    """A child's report of its own death (or of an unexpected stop)."""

    name: str
    generation: int
    reason: str


@dataclass(frozen=True)
class ChildRetired:
    """An on-demand child's report that it stopped because it was idle (not a failure)."""

    name: str
    generation: int


@dataclass(frozen=True)
class StartChild:
    """Ask: from now on supervise the child described by `spec` (and start it, unless it is
    on demand)."""

    spec: ChildSpec


@dataclass(frozen=True)
class EnsureChild:
    """Start the dormant on-demand child `name` (a no-op when it runs or is restarting)."""

    name: str


@dataclass(frozen=True)
class WhichChildren:
    """Ask: child name -> alive, for every child started (not the dormant on-demand ones)."""


@dataclass(frozen=True)
class Crash:
    """Test hook: the receiving child raises, exercising the real death and restart path."""


@dataclass(frozen=True)
class Retire:
    """Test hook: the receiving on-demand child retires now, as it does when idle.

    With `hold`, it then waits (up to 10 s) for `hold` before it handles its own stop, having
    set `reached`: what is told to it meanwhile lands behind the stop.
    """

    reached: threading.Event | None = None
    hold: threading.Event | None = None


@dataclass(frozen=True)
class _Shutdown:
    """Ask: stop every child (without waiting); answered with their refs, to wait for."""


@dataclass(frozen=True)
class _IdleCheck:
    """A retirable child's own timer: has it been idle long enough to retire?"""


_IDLE_CHECK = _IdleCheck()


class SupervisedActor(pykka.ThreadingActor):
    """Base of every child: daemon thread, and reports its death to the Supervisor.

    An on-demand child given `retire_after` seconds retires (stops, reporting `ChildRetired`)
    once it has not called `worked()` for that long; its Supervisor starts it again on demand.
    """

    use_daemon_thread = True

    def __init__(
        self,
        child_name: str,
        generation: int,
        supervisor: Any,
        *,
        retire_after: float | None = None,
    ):
        super().__init__()
        self.child_name = child_name
        self.generation = generation
        self.supervisor = supervisor
        self._stopping_normally = False
        self.retire_after = retire_after
        self._last_work = time.monotonic()
        self._idle_timer: int | None = None
        self._retiring = False

    def on_start(self) -> None:
        try:
            self.started()
        except BaseException as error:
            # pykka calls neither on_failure nor on_stop for a failing on_start.
            self._report(f"on_start failed: {error!r}")
            raise
        self.worked()

    def started(self) -> None:
        """Override instead of on_start."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Crash):
            raise RuntimeError(f"crash requested for {self.child_name}")
        if message is _IDLE_CHECK:
            self._idle_check()
            return None
        if isinstance(message, Retire):
            if self.retire_after is not None and not self._retiring:
                self.retire()
                if message.reached is not None:
                    message.reached.set()
                if message.hold is not None:
                    message.hold.wait(10.0)
            return None
        return self.handle(message)

    def handle(self, message: Any) -> Any:
        """Override: handle one message (a tell); an exception here kills the actor."""
        return None

    def worked(self) -> None:
        """Note a unit of work done (a retirable child retires `retire_after` after the last)."""
        if self.retire_after is None:
            return
        self._last_work = time.monotonic()
        if self._idle_timer is None:  # one timer per idle period, not one per unit of work
            self._arm_idle_check(self.retire_after)

    def _arm_idle_check(self, delay: float) -> None:
        ref = self.actor_ref

        def check() -> None:
            try:
                ref.tell(_IDLE_CHECK)
            except pykka.ActorDeadError:
                pass

        self._idle_timer = scheduler.call_later(delay, check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self.retire_after is None or self._retiring:
            return
        idle = time.monotonic() - self._last_work
        if idle < self.retire_after:
            self._arm_idle_check(self.retire_after - idle)
            return
        self.retire()

    def retire(self) -> None:
        """Stop after what is already in the inbox; the Supervisor marks the child dormant.

        A message told after this is dropped (pykka): whoever sent it must be able to notice
        (a Send's batch stays filed under this incarnation and the Batcher reclaims it when
        the Supervisor reports the retirement).
        """
        self._retiring = True
        self.stop()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._cancel_idle_check()
        self._report(f"crashed: {exception_value!r}")

    def on_stop(self) -> None:
        self._cancel_idle_check()
        try:
            self.stopped()
        finally:
            if self._retiring:
                # After actor_stopped is set: the Supervisor sees this incarnation dead.
                try:
                    self.supervisor.tell(ChildRetired(self.child_name, self.generation))
                except pykka.ActorDeadError:
                    pass

    def stopped(self) -> None:
        """Override instead of on_stop."""

    def _cancel_idle_check(self) -> None:
        if self._idle_timer is not None:
            scheduler.cancel(self._idle_timer)
            self._idle_timer = None

    def _report(self, reason: str) -> None:
        try:
            self.supervisor.tell(ChildExited(self.child_name, self.generation, reason))
        except pykka.ActorDeadError:
            pass


@dataclass
class _Child:
    spec: ChildSpec
    generation: int = 0
    ref: pykka.ActorRef[Any] | None = None
    dormant: bool = False


@dataclass
class _Intensity:
    max_restarts: int
    max_seconds: float
    times: deque[float] = field(default_factory=deque)

    def allow(self, now: float) -> bool:
        while self.times and now - self.times[0] > self.max_seconds:
            self.times.popleft()
        if len(self.times) >= self.max_restarts:
            return False
        self.times.append(now)
        return True


class Supervisor:
    """one_for_one supervisor of one instance's children (its state; run by `SupervisorHost`).

    Past the restart intensity it stops every child, calls `on_give_up(reason)` (on a thread
    of its own: it may run the app's `on_drop`) and stops; the host app is never affected
    beyond the instance going quiet (and counted). `tell` / `ask` / `is_alive` work like an
    actor ref's: children and the tree address it so.
    """

    def __init__(
        self,
        instance_name: str,
        registry: Registry,
        *,
        max_restarts: int,
        max_seconds: float,
        on_restart: Callable[[str], None],
        on_give_up: Callable[[str], None],
        on_started: Callable[[str], None] | None = None,
        on_retired: Callable[[str], None] | None = None,
    ):
        self.instance_name = instance_name
        self.registry = registry
        self.children: dict[str, _Child] = {}
        self.intensity = _Intensity(max_restarts, max_seconds)
        self.on_restart = on_restart
        self.on_give_up = on_give_up
        self.on_started = on_started
        self.on_retired = on_retired
        self.shutting_down = False
        self.alive = True
        self.log = get_logger("supervisor", instance=instance_name)
        registry.supervisor = self

    @classmethod
    def start(cls, instance_name: str, registry: Registry, **options: Any) -> Supervisor:
        """A new Supervisor for one instance, its host thread started if need be."""
        supervisor = cls(instance_name, registry, **options)
        host()
        return supervisor

    # --- the ref-like face (any thread) ----------------------------------------------------

    def tell(self, message: Any) -> None:
        """Queue `message` for this Supervisor on the host thread (never raises)."""
        try:
            host().tell(_Envelope(self, message))
        except pykka.ActorDeadError:  # stopped between the check and the tell: once more
            host().tell(_Envelope(self, message))

    def ask(self, message: Any, timeout: float) -> Any:
        """Send `message` and wait for the answer (pykka.Timeout after `timeout`)."""
        return host().ask(_Envelope(self, message), timeout=timeout)

    def is_alive(self) -> bool:
        return self.alive

    # --- on the host thread ------------------------------------------------------------------

    def handle(self, message: Any) -> Any:
        if isinstance(message, StartChild):
            return self.start_child(message.spec)
        if isinstance(message, EnsureChild):
            self._ensure(message.name)
        elif isinstance(message, WhichChildren):
            return self.which_children()
        elif isinstance(message, ChildExited):
            self._child_exited(message)
        elif isinstance(message, ChildRetired):
            self._child_retired(message)
        elif isinstance(message, _Shutdown):
            return self._stop_children()
        return None

    def start_child(self, spec: ChildSpec) -> bool:
        if not self.alive:
            return False
        child = _Child(spec)
        self.children[spec.name] = child
        if spec.on_demand:
            self._set_dormant(child, True)
            return True
        return self._start(child)

    def which_children(self) -> dict[str, bool]:
        return {
            name: child.ref is not None and child.ref.is_alive()
            for name, child in self.children.items()
            if not child.dormant
        }

    def _ensure(self, name: str) -> None:
        child = self.children.get(name)
        if child is None or not child.dormant or self.shutting_down or not self.alive:
            return
        self._set_dormant(child, False)
        if self._start(child) and self.on_started is not None:
            self.on_started(name)

    def _set_dormant(self, child: _Child, dormant: bool) -> None:
        child.dormant = dormant
        names = set(self.registry.dormant)
        if dormant:
            names.add(child.spec.name)
        else:
            names.discard(child.spec.name)
        self.registry.dormant = frozenset(names)

    def _start(self, child: _Child) -> bool:
        child.generation += 1
        try:
            ref = child.spec.start(child.generation)
        except Exception as error:
            self.log.error("child_start_failed", child=child.spec.name, error=repr(error))
            child.ref = None
            # Count it like a crash so a child that can never start trips the intensity.
            self.tell(ChildExited(child.spec.name, child.generation, repr(error)))
            return False
        child.ref = ref
        self.registry.put(child.spec.name, ref, child.generation)
        if child.spec.registered is not None:
            try:
                child.spec.registered(ref)
            except pykka.ActorDeadError:
                pass  # it died already: its ChildExited is on its way
        return True

    def _child_exited(self, message: ChildExited) -> None:
        child = self.children.get(message.name)
        if child is None or message.generation != child.generation or self.shutting_down:
            return
        self.log.warning("child_exited", child=message.name, reason=message.reason)
        self.registry.remove(message.name)
        if not self.intensity.allow(time.monotonic()):
            reason = (
                f"child {message.name!r} exited ({message.reason}) more than "
                f"{self.intensity.max_restarts} times in {self.intensity.max_seconds}s"
            )
            self.log.error("restart_intensity_exceeded", reason=reason)
            refs = self._stop_children()
            _off_host(self._give_up, refs, reason)
            return
        if self._start(child):
            self.on_restart(message.name)
            self.log.info("child_restarted", child=message.name, generation=child.generation)

    def _give_up(self, refs: list[pykka.ActorRef[Any]], reason: str) -> None:
        # Off the host thread: waiting for the children and the app's on_drop are this
        # instance's time, not every instance's.
        wait_stopped(refs, 1.0)
        self.on_give_up(reason)

    def _child_retired(self, message: ChildRetired) -> None:
        child = self.children.get(message.name)
        if child is None or message.generation != child.generation or self.shutting_down:
            return
        self.registry.remove(message.name)
        child.ref = None
        self._set_dormant(child, True)
        self.log.debug("child_retired", child=message.name, generation=child.generation)
        if self.on_retired is not None:
            self.on_retired(message.name)

    def _stop_children(self) -> list[pykka.ActorRef[Any]]:
        """Stop every child, producers first, without waiting; the refs to wait for."""
        self.shutting_down = True
        self.alive = False
        self.registry.dormant = frozenset()
        refs = []
        # Reverse start order: producers (Batcher) first, then the Senders they feed.
        for name, child in reversed(list(self.children.items())):
            self.registry.remove(name)
            if child.ref is None:
                continue
            refs.append(child.ref)
            try:
                child.ref.stop(block=False)
            except pykka.ActorDeadError:
                pass
        refs.reverse()
        return refs

    def handling_failed(self, message: Any, error: BaseException) -> None:
        """An exception while handling one of this Supervisor's messages: logged, kept here."""
        self.log.error(
            "supervisor_message_failed", message=type(message).__name__, error=repr(error)
        )


def wait_stopped(refs: list[pykka.ActorRef[Any]], timeout: float) -> None:
    """Wait (on the calling thread) until every actor of `refs` stopped, at most `timeout`."""
    deadline = time.monotonic() + timeout
    for ref in refs:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            ref.actor_stopped.wait(remaining)
        except Exception:
            pass


def _off_host(target: Callable[..., None], *args: Any) -> None:
    thread = threading.Thread(target=target, args=args, name="phactor-give-up", daemon=True)
    with signals_blocked():
        thread.start()


@dataclass(frozen=True)
class _Envelope:
    supervisor: Supervisor
    message: Any


class SupervisorHost(pykka.ThreadingActor):
    """The one thread every instance's Supervisor runs on (started on first use).

    It hands each message to the Supervisor it is addressed to; an exception while one
    Supervisor handles its message is logged under that instance and goes no further (it
    never stops this actor, so no other instance's supervision is affected).
    """

    use_daemon_thread = True

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, _Envelope):
            return None
        supervisor = message.supervisor
        try:
            return supervisor.handle(message.message)
        except BaseException as error:  # even SystemExit: pykka would stop every actor
            try:
                supervisor.handling_failed(message.message, error)
            except Exception:
                pass
            return None


_host_ref: pykka.ActorRef[Any] | None = None
_host_lock = threading.Lock()


def host() -> pykka.ActorRef[Any]:
    """The running SupervisorHost, started (again: after a fork, or `stop_all`) if need be."""
    ref = _host_ref
    if ref is not None and ref.is_alive():
        return ref
    return _start_host()


def _start_host() -> pykka.ActorRef[Any]:
    global _host_ref
    with _host_lock:
        ref = _host_ref
        if ref is None or not ref.is_alive():
            # Every child is started on this thread and inherits its signal mask.
            with signals_blocked():
                ref = SupervisorHost.start()
            _host_ref = ref
        return ref


def _after_fork_in_child() -> None:
    # The host's thread did not come along (its ref still says alive) and the lock may have
    # been held: the child starts its own host on first use.
    global _host_ref, _host_lock
    _host_ref = None
    _host_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def shutdown_message() -> Any:
    """The ask that makes a Supervisor stop its children; answered with their refs."""
    return _Shutdown()
