"""The module-level API: named instances and functions that act on one (`instance=`).

Instances live in a plain dict replaced copy-on-write, so the lookup on every module-level
call is one dict read with no lock. atexit and fork hooks are registered here, once.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from phactor import shutdown
from phactor._args import timeout_arg
from phactor.config import Config, mask
from phactor.errors import AlreadyStarted, NotStarted
from phactor.errortracking.methods import capture_exception
from phactor.flags.methods import (
    evaluate_flags,
    feature_enabled,
    get_all_flags,
    get_all_flags_and_payloads,
    get_feature_flag,
    get_feature_flag_payload,
    get_feature_flag_result,
    reload_feature_flags,
)
from phactor.instance import Instance
from phactor.unstarted import warn_unstarted

__all__ = [
    "alias",
    "bare_capture",
    "capture",
    "capture_exception",
    "config",
    "context",
    "evaluate_flags",
    "feature_enabled",
    "flush",
    "get_all_flags",
    "get_all_flags_and_payloads",
    "get_context",
    "get_event_context",
    "get_feature_flag",
    "get_feature_flag_payload",
    "get_feature_flag_result",
    "group_identify",
    "identify",
    "instance",
    "instances",
    "queue_length",
    "reload_feature_flags",
    "set",
    "set_context",
    "set_event_context",
    "set_once",
    "start",
    "stats",
    "stop",
]

_instances: dict[str, Instance] = {}
_KEY_PREFIXES = ("phc_", "phx_")
_lock = threading.Lock()


def start(name: str = "default", **options: Any) -> Instance:
    """Start the named instance's supervision tree and return it.

    Raises ConfigError (naming the option) for bad config, AlreadyStarted if `name` runs.
    """
    if not isinstance(name, str) or not name:
        # The type only: a key passed as the name (bytes, say) must not be echoed.
        raise TypeError(f"instance name must be a non-empty str, got {type(name).__name__}")
    if name.startswith(_KEY_PREFIXES):
        # posthog's `Posthog("phc_...")` habit: the key would become the name, in every log line.
        raise ValueError(
            f"instance name {mask(name)!r} looks like a PostHog key: pass it as api_key=... "
            "(the first argument of start() is the instance name)"
        )
    config = Config.build(**options)
    existing = _instances.get(name)
    if existing is not None and existing._state == "failed":
        # Its tree gave up (restart intensity exceeded): nothing runs under the name any more,
        # so it is free again. stop() only records the final figures and forgets it.
        existing.stop(0)
    with _lock:
        existing = _instances.get(name)
        if existing is not None:
            if existing._forked:
                existing._restart_after_fork()
            raise AlreadyStarted(name)
        inst = Instance(name, config)
        inst._start_tree()
        _replace({**_instances, name: inst})
    shutdown.on_start(config)
    return inst


def _replace(new: dict[str, Instance]) -> None:
    global _instances
    _instances = new


def _forget(inst: Instance) -> None:
    with _lock:
        if _instances.get(inst.name) is not inst:
            return
        _replace({k: v for k, v in _instances.items() if k != inst.name})
    if not _instances:
        shutdown.on_last_stop()


def instance(name: str = "default") -> Instance:
    """The running instance called `name`; NotStarted when there is none."""
    inst = _instances.get(name)
    if inst is None:
        raise NotStarted(name)
    return inst


def instances() -> list[str]:
    """Names of the running instances."""
    return list(_instances)


def stop(name: str = "default", timeout: float = 10.0) -> bool:
    """Flush (within `timeout`) and stop the named instance; other instances are untouched.

    `timeout=math.inf`: no deadline. A timeout that is not a number (TypeError), nan or negative
    (ValueError) is refused before anything happens: the instance keeps running.
    """
    inst = _instances.get(name)
    if inst is None:
        timeout_arg(timeout, "stop")  # a bad timeout is refused whatever the name
        return False
    return inst.stop(timeout)


def capture(
    event: str,
    distinct_id: Any = None,
    properties: Mapping[str, Any] | None = None,
    *,
    timestamp: Any = None,
    uuid: Any = None,
    groups: Mapping[str, Any] | None = None,
    send_feature_flags: bool = False,
    flags: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> str | None:
    """Capture an event through the named instance (see `Instance.capture`)."""
    inst = _instances.get(instance) or _unstarted(instance)
    if inst is None:
        return None
    return inst.capture(
        event,
        distinct_id,
        properties,
        timestamp=timestamp,
        uuid=uuid,
        groups=groups,
        send_feature_flags=send_feature_flags,
        flags=flags,
        disable_geoip=disable_geoip,
    )


def bare_capture(
    event: str,
    distinct_id: Any,
    properties: Mapping[str, Any] | None = None,
    *,
    timestamp: Any = None,
    uuid: Any = None,
    groups: Mapping[str, Any] | None = None,
    send_feature_flags: bool = False,
    flags: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> str | None:
    """Capture ignoring context (see `Instance.bare_capture`)."""
    inst = _instances.get(instance) or _unstarted(instance)
    if inst is None:
        return None
    return inst.bare_capture(
        event,
        distinct_id,
        properties,
        timestamp=timestamp,
        uuid=uuid,
        groups=groups,
        send_feature_flags=send_feature_flags,
        flags=flags,
        disable_geoip=disable_geoip,
    )


def identify(
    distinct_id: Any,
    properties: Mapping[str, Any] | None = None,
    *,
    timestamp: Any = None,
    uuid: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> str | None:
    """Send `$identify` (see `Instance.identify`)."""
    inst = _instances.get(instance) or _unstarted(instance)
    if inst is None:
        return None
    return inst.identify(
        distinct_id, properties, timestamp=timestamp, uuid=uuid, disable_geoip=disable_geoip
    )


def set(
    distinct_id: Any,
    properties: Mapping[str, Any],
    *,
    timestamp: Any = None,
    uuid: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> str | None:
    """Send a `$set` event (see `Instance.set`)."""
    inst = _instances.get(instance) or _unstarted(instance)
    if inst is None:
        return None
    return inst.set(
        distinct_id, properties, timestamp=timestamp, uuid=uuid, disable_geoip=disable_geoip
    )


def set_once(
    distinct_id: Any,
    properties: Mapping[str, Any],
    *,
    timestamp: Any = None,
    uuid: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> str | None:
    """Send a `$set_once` event (see `Instance.set_once`)."""
    inst = _instances.get(instance) or _unstarted(instance)
    if inst is None:
        return None
    return inst.set_once(
        distinct_id, properties, timestamp=timestamp, uuid=uuid, disable_geoip=disable_geoip
    )


def alias(
    distinct_id: Any,
    alias: Any,
    *,
    timestamp: Any = None,
    uuid: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> str | None:
    """Send `$create_alias` (see `Instance.alias`)."""
    inst = _instances.get(instance) or _unstarted(instance)
    if inst is None:
        return None
    return inst.alias(
        distinct_id, alias, timestamp=timestamp, uuid=uuid, disable_geoip=disable_geoip
    )


def group_identify(
    group_type: str,
    group_key: Any,
    properties: Mapping[str, Any] | None = None,
    distinct_id: Any = None,
    *,
    timestamp: Any = None,
    uuid: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> str | None:
    """Send `$groupidentify` (see `Instance.group_identify`)."""
    inst = _instances.get(instance) or _unstarted(instance)
    if inst is None:
        return None
    return inst.group_identify(
        group_type,
        group_key,
        properties,
        distinct_id,
        timestamp=timestamp,
        uuid=uuid,
        disable_geoip=disable_geoip,
    )


def set_context(props: Any, *, instance: str = "default") -> None:
    """Merge into this thread's/task's context of the named instance."""
    _get(instance).set_context(props)


def get_context(*, instance: str = "default") -> dict[str, Any]:
    """This thread's/task's context of the named instance."""
    return _get(instance).get_context()


def set_event_context(event: str, props: Mapping[str, Any], *, instance: str = "default") -> None:
    """Merge into the context applied only to events named `event`."""
    _get(instance).set_event_context(event, props)


def get_event_context(event: str, *, instance: str = "default") -> dict[str, Any]:
    """The context applied only to events named `event`."""
    return _get(instance).get_event_context(event)


def context(
    props: Any, event: str | None = None, *, instance: str = "default"
) -> AbstractContextManager[None]:
    """`with phactor.context({...}):` — context for the block, restored on exit."""
    return _get(instance).context(props, event)


def flush(timeout: float | None = None, *, instance: str = "default") -> bool:
    """Block until what was queued is delivered or dropped; False on timeout."""
    return _get(instance).flush(timeout)


def queue_length(*, instance: str = "default") -> int:
    """Events accepted but not yet handed to a Sender."""
    return _get(instance).queue_length()


def config(*, instance: str = "default") -> Config:
    """The frozen Config of the named instance."""
    return _get(instance).config


def stats(*, instance: str = "default") -> dict[str, Any]:
    """Delivery counters of the named instance."""
    return _get(instance).stats()


def _get(name: str) -> Instance:
    inst = _instances.get(name)
    if inst is None:
        raise NotStarted(name)
    return inst


def _unstarted(name: str) -> Instance | None:
    """A capture-family or flag call on a name that was never started: None, one warning."""
    warn_unstarted(name)
    return None


def _stop_all_at_exit() -> None:
    """Drain every instance within its shutdown_timeout at interpreter exit (in parallel)."""
    shutdown.drain(list(_instances.values()))


def _after_fork_in_child() -> None:
    # Each Instance resets itself (phactor.instance registers that hook, before this one).
    global _lock
    _lock = threading.Lock()
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


shutdown.bind(lambda: list(_instances.values()))
atexit.register(_stop_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
