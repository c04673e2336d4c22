"""`Posthog`: the posthog package's client API over one named phactor instance.

Changing `from posthog import Posthog` to `from phactor.compat import Posthog` keeps the
constructor (posthog's option names and defaults, see `options.OPTIONS`) and the methods with
posthog's signatures. Every call goes through phactor's public `Instance` methods, so events,
flags and delivery are phactor's (see docs/migrating-from-posthog.md for what differs).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import phactor
from phactor.compat.options import OPTIONS, bind_options, phactor_options

__all__ = ["FeatureFlagResult", "Posthog"]

_log = logging.getLogger("phactor.compat")
_names = itertools.count(1)
_logged_lock = threading.Lock()
_logged_ignored: set[str] = set()


@dataclass(frozen=True, slots=True)
class FeatureFlagResult:
    """posthog's `FeatureFlagResult`: a flag's value, payload and reason in one object."""

    key: str
    enabled: bool
    variant: str | None
    payload: Any
    reason: str | None

    def get_value(self) -> bool | str:
        """The variant when there is one, else whether the flag is on."""
        return self.variant or self.enabled


def _log_ignored(names: list[str]) -> None:
    with _logged_lock:
        new = [name for name in names if name not in _logged_ignored]
        _logged_ignored.update(new)
    for name in new:
        _log.debug("posthog option %r accepted: it has no meaning in phactor", name)


class Posthog:
    """The posthog package's `Posthog` client, backed by one phactor instance.

    `Posthog(project_api_key, host=..., ...)` takes posthog's constructor options (unknown
    ones raise TypeError) and starts the phactor instance `posthog-<n>` (`.name`; `.instance`
    is that `phactor.Instance`, for phactor's own API).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._start(f"posthog-{next(_names)}", args, kwargs)

    @classmethod
    def _named(cls, name: str, *args: Any, **kwargs: Any) -> Posthog:
        """A client on the phactor instance `name` (the module-level client's is "posthog")."""
        client = cls.__new__(cls)
        client._start(name, args, kwargs)
        return client

    def _start(self, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        bound = bind_options(args, kwargs)
        options, ignored = phactor_options(bound)
        _log_ignored(ignored)
        self.name: str = name
        key = bound.get("project_api_key", bound.get("api_key"))
        # Attributes posthog's client has and code (the posthog.ai wrappers) reads.
        self.api_key: str | None = key.strip() if isinstance(key, str) else None
        self.host: str = options.get("host", "")
        self.privacy_mode = bool(bound.get("privacy_mode", False))
        self.enable_full_ai_capture = bool(bound.get("enable_full_ai_capture", False))
        try:
            self.instance: phactor.Instance = phactor.start(self.name, **options)
        except phactor.ConfigError as error:
            raise _in_posthog_terms(error, bound) from None

    @property
    def disabled(self) -> bool:
        """True when the instance sends nothing (`disabled=True` or no api key)."""
        return bool(self.instance.config.disabled) or not self.api_key

    # --- events ----------------------------------------------------------------------------

    def capture(
        self,
        event: str,
        *,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: Any = None,
        uuid: Any = None,
        groups: Mapping[str, Any] | None = None,
        flags: Any = None,
        send_feature_flags: Any = False,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Capture `event`; the event uuid, or None when it was not queued."""
        return self.instance.capture(
            event,
            distinct_id,
            properties,
            timestamp=timestamp,
            uuid=uuid,
            groups=groups,
            # posthog also takes an options dict here: any truthy value asks for the flags.
            send_feature_flags=bool(send_feature_flags),
            flags=flags,
            disable_geoip=disable_geoip,
        )

    def set(
        self,
        *,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: Any = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Send a `$set` event setting the person's properties."""
        return self.instance.set(
            distinct_id,
            properties if properties is not None else {},
            timestamp=timestamp,
            uuid=uuid,
            disable_geoip=disable_geoip,
        )

    def set_once(
        self,
        *,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: Any = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Send a `$set_once` event setting the person's properties where they are unset."""
        return self.instance.set_once(
            distinct_id,
            properties if properties is not None else {},
            timestamp=timestamp,
            uuid=uuid,
            disable_geoip=disable_geoip,
        )

    def group_identify(
        self,
        group_type: str,
        group_key: Any,
        properties: Mapping[str, Any] | None = None,
        timestamp: Any = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
        distinct_id: Any = None,
    ) -> str | None:
        """Send `$groupidentify` setting the group's properties."""
        return self.instance.group_identify(
            group_type,
            group_key,
            properties,
            distinct_id,
            timestamp=timestamp,
            uuid=uuid,
            disable_geoip=disable_geoip,
        )

    def alias(
        self,
        previous_id: Any,
        distinct_id: Any,
        timestamp: Any = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Send `$create_alias`: `distinct_id` becomes another id of `previous_id`'s person."""
        return self.instance.alias(
            previous_id,
            distinct_id,
            timestamp=timestamp,
            uuid=uuid,
            disable_geoip=disable_geoip,
        )

    def capture_exception(
        self,
        exception: Any = None,
        *,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
        **ignored: Any,
    ) -> str | None:
        """Send `exception` (an exception, an `exc_info` tuple, or None: the one being handled)."""
        unknown = set(ignored) - _CAPTURE_KEYWORDS
        if unknown:
            raise TypeError(
                f"capture_exception() got an unexpected keyword argument {min(unknown)!r}"
            )
        if isinstance(exception, tuple):  # sys.exc_info()
            exception = exception[1] if len(exception) == 3 else None
        return self.instance.capture_exception(exception, distinct_id, properties)

    # --- feature flags ---------------------------------------------------------------------

    def feature_enabled(
        self,
        key: str,
        distinct_id: Any,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        only_evaluate_locally: bool = False,
        send_feature_flag_events: bool = True,
        disable_geoip: bool | None = None,
        device_id: str | None = None,
    ) -> bool | None:
        """Whether the flag is on for the user (a variant counts); None when it has no value."""
        return self.instance.feature_enabled(
            key,
            distinct_id,
            groups=groups,
            person_properties=person_properties,
            group_properties=group_properties,
            only_evaluate_locally=only_evaluate_locally,
            send_feature_flag_events=send_feature_flag_events,
            disable_geoip=disable_geoip,
            device_id=device_id,
        )

    def get_feature_flag(
        self,
        key: str,
        distinct_id: Any,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        only_evaluate_locally: bool = False,
        send_feature_flag_events: bool = True,
        disable_geoip: bool | None = None,
        device_id: str | None = None,
    ) -> bool | str | None:
        """The flag's value for the user: True/False, the variant, or None when unknown."""
        return self.instance.get_feature_flag(
            key,
            distinct_id,
            groups=groups,
            person_properties=person_properties,
            group_properties=group_properties,
            only_evaluate_locally=only_evaluate_locally,
            send_feature_flag_events=send_feature_flag_events,
            disable_geoip=disable_geoip,
            device_id=device_id,
        )

    def get_feature_flag_result(
        self,
        key: str,
        distinct_id: Any,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        only_evaluate_locally: bool = False,
        send_feature_flag_events: bool = True,
        disable_geoip: bool | None = None,
        device_id: str | None = None,
    ) -> FeatureFlagResult | None:
        """Value, payload and reason of the flag in one `FeatureFlagResult` (None: no value)."""
        result = self.instance.get_feature_flag_result(
            key,
            distinct_id,
            groups=groups,
            person_properties=person_properties,
            group_properties=group_properties,
            only_evaluate_locally=only_evaluate_locally,
            send_feature_flag_events=send_feature_flag_events,
            disable_geoip=disable_geoip,
            device_id=device_id,
        )
        return None if result is None else _flag_result(key, result)

    def get_feature_flag_payload(
        self,
        key: str,
        distinct_id: Any,
        *,
        match_value: bool | str | None = None,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        only_evaluate_locally: bool = False,
        send_feature_flag_events: bool = False,
        disable_geoip: bool | None = None,
        device_id: str | None = None,
    ) -> Any:
        """The decoded payload of the flag's value for the user, or None."""
        if send_feature_flag_events:
            # posthog reports the read when asked to; phactor's payload read never does.
            self.get_feature_flag(
                key,
                distinct_id,
                groups=groups,
                person_properties=person_properties,
                group_properties=group_properties,
                only_evaluate_locally=only_evaluate_locally,
                disable_geoip=disable_geoip,
                device_id=device_id,
            )
        return self.instance.get_feature_flag_payload(
            key,
            distinct_id,
            groups=groups,
            person_properties=person_properties,
            group_properties=group_properties,
            only_evaluate_locally=only_evaluate_locally,
            match_value=match_value,
            disable_geoip=disable_geoip,
            device_id=device_id,
        )

    def get_all_flags(
        self,
        distinct_id: Any,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        only_evaluate_locally: bool = False,
        disable_geoip: bool | None = None,
        flag_keys_to_evaluate: list[str] | None = None,
        device_id: str | None = None,
    ) -> dict[str, bool | str] | None:
        """Flag key -> value for every flag with a value (no `$feature_flag_called`)."""
        return self.instance.get_all_flags(
            distinct_id,
            groups=groups,
            person_properties=person_properties,
            group_properties=group_properties,
            flag_keys=flag_keys_to_evaluate,
            only_evaluate_locally=only_evaluate_locally,
            disable_geoip=disable_geoip,
            device_id=device_id,
        )

    def get_all_flags_and_payloads(
        self,
        distinct_id: Any,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        only_evaluate_locally: bool = False,
        disable_geoip: bool | None = None,
        flag_keys_to_evaluate: list[str] | None = None,
        device_id: str | None = None,
    ) -> dict[str, dict[str, Any]]:
        """`{"featureFlags": {key: value}, "featureFlagPayloads": {key: payload}}`."""
        return dict(
            self.instance.get_all_flags_and_payloads(
                distinct_id,
                groups=groups,
                person_properties=person_properties,
                group_properties=group_properties,
                flag_keys=flag_keys_to_evaluate,
                only_evaluate_locally=only_evaluate_locally,
                disable_geoip=disable_geoip,
                device_id=device_id,
            )
        )

    def evaluate_flags(
        self,
        distinct_id: Any = None,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        only_evaluate_locally: bool = False,
        disable_geoip: bool | None = None,
        flag_keys: list[str] | None = None,
        device_id: str | None = None,
    ) -> phactor.FlagEvaluations:
        """Every flag for the user in one snapshot (`capture(..., flags=snapshot)` attaches it)."""
        return self.instance.evaluate_flags(
            distinct_id,
            groups=groups,
            person_properties=person_properties,
            group_properties=group_properties,
            flag_keys=flag_keys,
            only_evaluate_locally=only_evaluate_locally,
            disable_geoip=disable_geoip,
            device_id=device_id,
        )

    def load_feature_flags(self) -> None:
        """Load the flag definitions now (needs a personal api key), waiting for the load."""
        self.instance.reload_feature_flags()

    # --- lifecycle -------------------------------------------------------------------------

    def flush(self, timeout_seconds: float | None = 10) -> None:
        """Wait until what was captured before is delivered or dropped, at most the timeout."""
        self.instance.flush(timeout_seconds)

    def join(self) -> None:
        """Stop the instance (after delivering what is queued, within its shutdown_timeout)."""
        self.instance.stop()

    def shutdown(self) -> None:
        """Deliver what is queued (within `shutdown_timeout`), then stop the instance."""
        self.instance.stop()

    def __repr__(self) -> str:
        return f"<phactor.compat.Posthog {self.name!r}>"


# The posthog capture keywords capture_exception accepts besides distinct_id and properties;
# phactor builds the $exception event itself (its own uuid and timestamp).
_CAPTURE_KEYWORDS = frozenset(
    {"timestamp", "uuid", "groups", "flags", "send_feature_flags", "disable_geoip"}
)


def _in_posthog_terms(error: phactor.ConfigError, bound: Mapping[str, Any]) -> phactor.ConfigError:
    """The ConfigError naming the posthog option the caller gave (and phactor's name for it)."""
    for option in OPTIONS:
        if option.target == error.option and option.name in bound and option.name != error.option:
            return phactor.ConfigError(
                f"{option.name} (phactor: {error.option})",
                error.expected,
                bound[option.name],
                secret=option.target in ("api_key", "personal_api_key"),
            )
    return error


def _flag_result(key: str, result: Any) -> FeatureFlagResult:
    """posthog's `FeatureFlagResult` from phactor's (the same fields, read by name)."""
    return FeatureFlagResult(
        key=getattr(result, "key", key),
        enabled=bool(result.enabled),
        variant=result.variant,
        payload=result.payload,
        reason=result.reason,
    )
