"""The module-level API: named instances and functions that act on one (`instance=`).

Each function looks the instance up in `phactor.registry` (one dict read, no lock) and
delegates to the `Instance` method of the same name; the behaviour lives there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from phactor import registry, shutdown
from phactor.config import Config, mask
from phactor.errors import AlreadyStarted, NotStarted
from phactor.errortracking.methods import capture_exception
from phactor.instance import Instance

if TYPE_CHECKING:
    from phactor.flags.evaluations import FlagEvaluations

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
    "get_context",
    "get_event_context",
    "get_feature_flag",
    "get_feature_flag_payload",
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

_KEY_PREFIXES = ("phc_", "phx_")


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
    existing = registry.find(name)
    if existing is not None and existing._state == "failed":
        # Its tree gave up (restart intensity exceeded): nothing runs under the name any more,
        # so it is free again. stop() only records the final figures and forgets it.
        existing.stop(0)
    with registry.lock():
        existing = registry.find(name)
        if existing is not None:
            if existing._forked:
                existing._restart_after_fork()
            raise AlreadyStarted(name)
        inst = Instance(name, config)
        inst._start_tree()
        registry.register(inst)
    shutdown.on_start(config)
    return inst


def instance(name: str = "default") -> Instance:
    """The running instance called `name`; NotStarted when there is none."""
    return registry.lookup(name)


def instances() -> list[str]:
    """Names of the running instances."""
    return registry.names()


def stop(name: str = "default", timeout: float = 10.0) -> bool:
    """Flush (within `timeout`) and stop the named instance; other instances are untouched.

    `timeout=math.inf`: no deadline. A timeout that is not a number (TypeError), nan or negative
    (ValueError) is refused before anything happens: the instance keeps running.
    """
    return instance(name).stop(timeout)


def capture(
    event: str,
    distinct_id: Any = None,
    properties: Mapping[str, Any] | None = None,
    *,
    timestamp: Any = None,
    uuid: Any = None,
    groups: Mapping[str, Any] | None = None,
    send_feature_flags: bool = False,
    instance: str = "default",
) -> str | None:
    """Capture an event through the named instance (see `Instance.capture`)."""
    inst = registry.by_name.get(instance) or _missing(instance)
    return inst.capture(
        event,
        distinct_id,
        properties,
        timestamp=timestamp,
        uuid=uuid,
        groups=groups,
        send_feature_flags=send_feature_flags,
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
    instance: str = "default",
) -> str | None:
    """Capture ignoring context (see `Instance.bare_capture`)."""
    return _get(instance).bare_capture(
        event,
        distinct_id,
        properties,
        timestamp=timestamp,
        uuid=uuid,
        groups=groups,
        send_feature_flags=send_feature_flags,
    )


def identify(
    distinct_id: Any,
    properties: Mapping[str, Any] | None = None,
    *,
    instance: str = "default",
    **opts: Any,
) -> str | None:
    """Send `$identify` (see `Instance.identify`)."""
    return _get(instance).identify(distinct_id, properties, **opts)


def set(
    distinct_id: Any, properties: Mapping[str, Any], *, instance: str = "default", **opts: Any
) -> str | None:
    """Send a `$set` event (see `Instance.set`)."""
    return _get(instance).set(distinct_id, properties, **opts)


def set_once(
    distinct_id: Any, properties: Mapping[str, Any], *, instance: str = "default", **opts: Any
) -> str | None:
    """Send a `$set_once` event (see `Instance.set_once`)."""
    return _get(instance).set_once(distinct_id, properties, **opts)


def alias(distinct_id: Any, alias: Any, *, instance: str = "default", **opts: Any) -> str | None:
    """Send `$create_alias` (see `Instance.alias`)."""
    return _get(instance).alias(distinct_id, alias, **opts)


def group_identify(
    group_type: str,
    group_key: Any,
    properties: Mapping[str, Any] | None = None,
    distinct_id: Any = None,
    *,
    instance: str = "default",
    **opts: Any,
) -> str | None:
    """Send `$groupidentify` (see `Instance.group_identify`)."""
    return _get(instance).group_identify(group_type, group_key, properties, distinct_id, **opts)


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


# --- feature flags ------------------------------------------------------------------------


def evaluate_flags(
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    flag_keys: Iterable[str] | None = None,
    only_evaluate_locally: bool = False,
    instance: str = "default",
) -> FlagEvaluations:
    """Evaluate flags through the named instance (see `Instance.evaluate_flags`)."""
    return _get(instance).evaluate_flags(
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        flag_keys=flag_keys,
        only_evaluate_locally=only_evaluate_locally,
    )


def feature_enabled(
    key: str,
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    only_evaluate_locally: bool = False,
    send_feature_flag_events: bool = True,
    instance: str = "default",
) -> bool | None:
    """Whether a flag is on, through the named instance (see `Instance.feature_enabled`)."""
    return _get(instance).feature_enabled(
        key,
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        only_evaluate_locally=only_evaluate_locally,
        send_feature_flag_events=send_feature_flag_events,
    )


def get_feature_flag(
    key: str,
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    only_evaluate_locally: bool = False,
    send_feature_flag_events: bool = True,
    instance: str = "default",
) -> bool | str | None:
    """A flag's value, through the named instance (see `Instance.get_feature_flag`)."""
    return _get(instance).get_feature_flag(
        key,
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        only_evaluate_locally=only_evaluate_locally,
        send_feature_flag_events=send_feature_flag_events,
    )


def get_feature_flag_payload(
    key: str,
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    only_evaluate_locally: bool = False,
    instance: str = "default",
) -> Any:
    """A flag's decoded payload, through the named instance (no event)."""
    return _get(instance).get_feature_flag_payload(
        key,
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        only_evaluate_locally=only_evaluate_locally,
    )


def get_all_flags(
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    flag_keys: Iterable[str] | None = None,
    only_evaluate_locally: bool = False,
    instance: str = "default",
) -> dict[str, bool | str]:
    """Every flag's value for one user, through the named instance (no event)."""
    return _get(instance).get_all_flags(
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        flag_keys=flag_keys,
        only_evaluate_locally=only_evaluate_locally,
    )


def reload_feature_flags(*, timeout: float | None = None, instance: str = "default") -> bool:
    """Reload the named instance's flag definitions now; blocks until loaded or failed."""
    return _get(instance).reload_feature_flags(timeout)


def _get(name: str) -> Instance:
    inst = registry.by_name.get(name)
    if inst is None:
        raise NotStarted(name)
    return inst


def _missing(name: str) -> Instance:
    raise NotStarted(name)
