"""The module-level API: named instances and functions that act on one (`instance=`).

Each function looks the instance up in `phactor.registry` (one dict read, no lock) and
delegates to the `Instance` method of the same name; the behaviour lives there. A setup slip
never raises into the app: a capture-family or flag call on a name that was never started
returns None (a flag helper its default) with one warning per name (`registry.unstarted`);
`instance()`, the context functions, `flush`, `stats`... still raise `NotStarted`.

Over 500 lines on purpose: every public function with its full signature (shared/API.md: no
`**kwargs`, an unknown keyword is a TypeError at the call), each a lookup and one delegation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from phactor import registry, shutdown
from phactor._args import timeout_arg
from phactor._log import get_logger
from phactor.config import Config, mask
from phactor.errors import AlreadyStarted, NotStarted
from phactor.errortracking.methods import capture_exception
from phactor.instance import Instance

if TYPE_CHECKING:
    from phactor.flags.evaluations import FlagEvaluations
    from phactor.flags.results import FeatureFlagResult

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
    if config.disabled and not options.get("disabled"):
        # No api key outside test mode: a setup slip, so the instance starts disabled, said once.
        get_logger("config", instance=name).warning(
            "api_key_missing",
            effect="the instance starts disabled: nothing is captured or sent",
            fix="pass api_key=... to start() or set POSTHOG_API_KEY (or test_mode=True)",
        )
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
    inst = registry.by_name.get(name)
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
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
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
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
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
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
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
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
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
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
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
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
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
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
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


# --- feature flags ------------------------------------------------------------------------
# A name that was never started: the helper's default and one warning per name, never a raise.


def evaluate_flags(
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    flag_keys: Iterable[str] | None = None,
    only_evaluate_locally: bool = False,
    device_id: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> FlagEvaluations:
    """Evaluate flags through the named instance (see `Instance.evaluate_flags`)."""
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
    if inst is None:
        # lazy: start-up time (the flag core loads when flags are first used)
        from phactor.flags.evaluations import FlagEvaluations

        return FlagEvaluations()
    return inst.evaluate_flags(
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        flag_keys=flag_keys,
        only_evaluate_locally=only_evaluate_locally,
        device_id=device_id,
        disable_geoip=disable_geoip,
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
    device_id: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> bool | None:
    """Whether a flag is on, through the named instance (see `Instance.feature_enabled`)."""
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
    if inst is None:
        return None
    return inst.feature_enabled(
        key,
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        only_evaluate_locally=only_evaluate_locally,
        send_feature_flag_events=send_feature_flag_events,
        device_id=device_id,
        disable_geoip=disable_geoip,
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
    device_id: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> bool | str | None:
    """A flag's value, through the named instance (see `Instance.get_feature_flag`)."""
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
    if inst is None:
        return None
    return inst.get_feature_flag(
        key,
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        only_evaluate_locally=only_evaluate_locally,
        send_feature_flag_events=send_feature_flag_events,
        device_id=device_id,
        disable_geoip=disable_geoip,
    )


def get_feature_flag_result(
    key: str,
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    only_evaluate_locally: bool = False,
    send_feature_flag_events: bool = True,
    device_id: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> FeatureFlagResult | None:
    """A flag's value, payload and reason, through the named instance."""
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
    if inst is None:
        return None
    return inst.get_feature_flag_result(
        key,
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        only_evaluate_locally=only_evaluate_locally,
        send_feature_flag_events=send_feature_flag_events,
        device_id=device_id,
        disable_geoip=disable_geoip,
    )


def get_feature_flag_payload(
    key: str,
    distinct_id: Any = None,
    *,
    match_value: bool | str | None = None,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    only_evaluate_locally: bool = False,
    device_id: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> Any:
    """A flag's decoded payload, through the named instance (no event)."""
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
    if inst is None:
        return None
    return inst.get_feature_flag_payload(
        key,
        distinct_id,
        match_value=match_value,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        only_evaluate_locally=only_evaluate_locally,
        device_id=device_id,
        disable_geoip=disable_geoip,
    )


def get_all_flags(
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    flag_keys: Iterable[str] | None = None,
    only_evaluate_locally: bool = False,
    device_id: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> dict[str, bool | str]:
    """Every flag's value for one user, through the named instance (no event)."""
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
    if inst is None:
        return {}
    return inst.get_all_flags(
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        flag_keys=flag_keys,
        only_evaluate_locally=only_evaluate_locally,
        device_id=device_id,
        disable_geoip=disable_geoip,
    )


def get_all_flags_and_payloads(
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    flag_keys: Iterable[str] | None = None,
    only_evaluate_locally: bool = False,
    device_id: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> dict[str, dict[str, Any]]:
    """Every flag's value and payload for one user, through the named instance (no event)."""
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
    if inst is None:
        return {"featureFlags": {}, "featureFlagPayloads": {}}
    return inst.get_all_flags_and_payloads(
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        flag_keys=flag_keys,
        only_evaluate_locally=only_evaluate_locally,
        device_id=device_id,
        disable_geoip=disable_geoip,
    )


def reload_feature_flags(*, timeout: float | None = None, instance: str = "default") -> bool:
    """Reload the named instance's flag definitions now; blocks until loaded or failed."""
    inst = registry.by_name.get(instance) or registry.unstarted(instance)
    if inst is None:
        return False
    return inst.reload_feature_flags(timeout)


def _get(name: str) -> Instance:
    inst = registry.by_name.get(name)
    if inst is None:
        raise NotStarted(name)
    return inst


