"""The instance registry: running instances by name, and the process hooks that act on them all.

Every layer that finds an instance by name imports this module downward (`api`, the flag and
error-tracking parts, `errortracking.loop`, the integrations); nothing here imports an instance
module. The running instances live in a plain dict replaced copy-on-write, so a lookup is one
dict read with no lock; the lock only serialises changes (`start()` / `stop()`). A call on a
name that was never started gets `unstarted(name)`: None, and one warning per name.

The process hooks live here, registered once at import:
- `atexit`: drain every running instance within its shutdown_timeout (`shutdown.drain`);
- `os.register_at_fork` (child side): a new registry lock, then each Instance's own reset (every
  one ever made, running or not: a stopped one may still be read), a usable pykka registry, and
  the multiprocessing finalizer (`shutdown.after_fork_in_child`), in that order.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from typing import TYPE_CHECKING

from phactor import shutdown
from phactor._log import get_logger
from phactor.errors import NotStarted

if TYPE_CHECKING:
    from phactor.instance import Instance

__all__ = [
    "by_name",
    "find",
    "forget",
    "lock",
    "lookup",
    "names",
    "register",
    "running",
    "track",
    "unstarted",
]

# Replaced, never changed in place: read it (`registry.by_name.get(name)`), don't keep it.
by_name: dict[str, Instance] = {}
# Serialises changes to `by_name` (start/stop); readers never take it.
_lock = threading.Lock()
# Every Instance, running or not: a forked child resets each.
_every: weakref.WeakSet[Instance] = weakref.WeakSet()
# Names warned about by `unstarted` (the caller's: bounded, a loop over generated names
# must not grow it for ever), and the lock of that set.
_warned: set[str] = set()
_warned_lock = threading.Lock()
_MAX_WARNED = 1000


def find(name: str) -> Instance | None:
    """The running instance called `name`, or None."""
    return by_name.get(name)


def lookup(name: str) -> Instance:
    """The running instance called `name`; NotStarted when there is none."""
    inst = by_name.get(name)
    if inst is None:
        raise NotStarted(name)
    return inst


def unstarted(name: object) -> Instance | None:
    """What a capture-family or flag call on a name that was never started gets instead of an
    instance: None (the call returns None or its default), after one warning per name. A setup
    slip is not a crash of the app: `by_name.get(name) or unstarted(name)`."""
    key = name if isinstance(name, str) else f"<{type(name).__name__}>"
    with _warned_lock:
        if key in _warned or len(_warned) >= _MAX_WARNED:
            return None
        _warned.add(key)
    get_logger("api").warning(
        "instance_not_started",
        name=key[:100],
        effect="the call did nothing (returned None / the flag's default)",
        fix=f"call phactor.start({key[:100]!r}, api_key=...) first",
    )
    return None


def names() -> list[str]:
    """Names of the running instances."""
    return list(by_name)


def running() -> list[Instance]:
    """The running instances."""
    return list(by_name.values())


def lock() -> threading.Lock:
    """The lock that serialises registrations (a new one in a forked child)."""
    return _lock


def register(inst: Instance) -> None:
    """Add `inst` under its name; the caller holds `lock()` and checked the name is free."""
    _replace({**by_name, inst.name: inst})


def forget(inst: Instance) -> None:
    """Remove `inst` (if it is still the one under its name); the last one out tells shutdown."""
    with _lock:
        if by_name.get(inst.name) is not inst:
            return
        _replace({k: v for k, v in by_name.items() if k != inst.name})
    if not by_name:
        shutdown.on_last_stop()


def track(inst: Instance) -> None:
    """Remember `inst` (weakly) so a forked child resets it."""
    _every.add(inst)


def _replace(new: dict[str, Instance]) -> None:
    global by_name
    by_name = new


def _busy() -> bool:
    return _lock.locked()


def _stop_all_at_exit() -> None:
    """Drain every instance within its shutdown_timeout at interpreter exit (in parallel)."""
    shutdown.drain(running())


def _after_fork_in_child() -> None:
    """os.fork() hook (in the child, cheap: no threads, no IO)."""
    global _lock, _warned_lock
    _lock = threading.Lock()
    _warned_lock = threading.Lock()
    for inst in list(_every):
        inst._after_fork_in_child()
    _reset_pykka_registry()
    shutdown.after_fork_in_child()


def _reset_pykka_registry() -> None:
    """Give the child a usable pykka registry.

    The parent's actor threads do not exist in a forked child, yet pykka's process-wide registry
    still lists them, and its lock may have been copied while held by one of those threads (the
    child would then hang in the first `Actor.start()`). pykka has no public reset, so this
    touches its private class attributes; it is guarded so a pykka change only skips it.
    """
    try:
        import pykka

        registry = pykka.ActorRegistry
        if isinstance(getattr(registry, "_actor_refs", None), list):
            registry._actor_refs = []  # type: ignore[misc]
            registry._actor_refs_lock = threading.RLock()  # type: ignore[misc]
    except Exception:  # pragma: no cover - never let a fork hook raise
        pass


shutdown.bind(running, _busy)
atexit.register(_stop_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
