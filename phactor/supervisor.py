"""The Supervisor actor and the Registry: start, watch and restart an instance's children.

Modelled on an OTP supervisor: child specs, strategy one_for_one, restart intensity
(`max_restarts` within `max_seconds`). pykka has no links or monitors, so every child reports
its own death (`on_failure`, a failing `on_start`, an unexpected `on_stop`) to the Supervisor
by message. The Supervisor does nothing else: business state that must survive a restart lives
in the instance's `EventBuffer`, which each new incarnation is handed again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from phactor._log import get_logger

__all__ = [
    "ChildExited",
    "ChildSpec",
    "Crash",
    "Registry",
    "StartChild",
    "SupervisedActor",
    "Supervisor",
    "WhichChildren",
]


class Registry:
    """Names -> live children for one instance. Read lock-free; replaced copy-on-write.

    Callers hold names, not refs: a ref dies with its actor, the name survives restarts. The
    generation tells incarnations apart (a Sender's batches are filed under name#generation).
    """

    def __init__(self) -> None:
        self._refs: dict[str, tuple[pykka.ActorRef[Any], int]] = {}
        self._lock = threading.Lock()

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


@dataclass(frozen=True)
class ChildSpec:
    """How to (re)start one child: `start(generation)` returns the new actor's ref.

    `registered(ref)`, when given, runs once the new incarnation is in the registry: a wake
    told to the name while it started (before it was registered) was lost, so the child is
    told again there.
    """

    name: str
    start: Callable[[int], pykka.ActorRef[Any]]
    registered: Callable[[pykka.ActorRef[Any]], None] | None = None


@dataclass(frozen=True)
class ChildExited:
    """A child's report of its own death (or of an unexpected stop)."""

    name: str
    generation: int
    reason: str


@dataclass(frozen=True)
class StartChild:
    """Ask: start (and from now on supervise) the child described by `spec`."""

    spec: ChildSpec


@dataclass(frozen=True)
class WhichChildren:
    """Ask: child name -> alive."""


@dataclass(frozen=True)
class Crash:
    """Test hook: the receiving child raises, exercising the real death and restart path."""


@dataclass(frozen=True)
class _Shutdown:
    timeout: float


class SupervisedActor(pykka.ThreadingActor):
    """Base of every child: daemon thread, and reports its death to the Supervisor."""

    use_daemon_thread = True

    def __init__(self, child_name: str, generation: int, supervisor: pykka.ActorRef[Any]):
        super().__init__()
        self.child_name = child_name
        self.generation = generation
        self.supervisor = supervisor
        self._stopping_normally = False

    def on_start(self) -> None:
        try:
            self.started()
        except BaseException as error:
            # pykka calls neither on_failure nor on_stop for a failing on_start.
            self._report(f"on_start failed: {error!r}")
            raise

    def started(self) -> None:
        """Override instead of on_start."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Crash):
            raise RuntimeError(f"crash requested for {self.child_name}")
        return self.handle(message)

    def handle(self, message: Any) -> Any:
        """Override: handle one message (a tell); an exception here kills the actor."""
        return None

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._report(f"crashed: {exception_value!r}")

    def on_stop(self) -> None:
        self.stopped()

    def stopped(self) -> None:
        """Override instead of on_stop."""

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


class Supervisor(pykka.ThreadingActor):
    """one_for_one supervisor of an instance's children.

    Past the restart intensity it stops every child, calls `on_give_up(reason)` and stops
    itself; the host app is never affected beyond the instance going quiet (and counted).
    """

    use_daemon_thread = True

    def __init__(
        self,
        instance_name: str,
        registry: Registry,
        *,
        max_restarts: int,
        max_seconds: float,
        on_restart: Callable[[str], None],
        on_give_up: Callable[[str], None],
    ):
        super().__init__()
        self.registry = registry
        self.children: dict[str, _Child] = {}
        self.intensity = _Intensity(max_restarts, max_seconds)
        self.on_restart = on_restart
        self.on_give_up = on_give_up
        self.shutting_down = False
        self.log = get_logger("supervisor", instance=instance_name)

    # Called through ask() by the Instance while building the tree.
    def start_child(self, spec: ChildSpec) -> bool:
        child = _Child(spec)
        self.children[spec.name] = child
        return self._start(child)

    def which_children(self) -> dict[str, bool]:
        return {
            name: child.ref is not None and child.ref.is_alive()
            for name, child in self.children.items()
        }

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StartChild):
            return self.start_child(message.spec)
        if isinstance(message, WhichChildren):
            return self.which_children()
        if isinstance(message, ChildExited):
            self._child_exited(message)
        elif isinstance(message, _Shutdown):
            self._stop_children(message.timeout)
        return None

    def _start(self, child: _Child) -> bool:
        child.generation += 1
        try:
            ref = child.spec.start(child.generation)
        except Exception as error:
            self.log.error("child_start_failed", child=child.spec.name, error=repr(error))
            child.ref = None
            # Count it like a crash so a child that can never start trips the intensity.
            self.actor_ref.tell(ChildExited(child.spec.name, child.generation, repr(error)))
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
            self._stop_children(1.0)
            self.on_give_up(reason)
            self.actor_ref.stop(block=False)
            return
        if self._start(child):
            self.on_restart(message.name)
            self.log.info("child_restarted", child=message.name, generation=child.generation)

    def _stop_children(self, timeout: float) -> None:
        self.shutting_down = True
        deadline = time.monotonic() + timeout
        # Reverse start order: producers (Batcher) first, then the Senders they feed.
        for name, child in reversed(list(self.children.items())):
            self.registry.remove(name)
            if child.ref is None:
                continue
            try:
                child.ref.stop(block=False)
            except pykka.ActorDeadError:
                pass
        for child in self.children.values():
            if child.ref is None:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                child.ref.actor_stopped.wait(remaining)
            except Exception:
                pass


def shutdown_message(timeout: float) -> Any:
    """The message that makes a Supervisor stop its children (then stop it normally)."""
    return _Shutdown(timeout)
