"""Argument checks of the flag calls (pure): wrong types raise TypeError at the call.

Shared by every flag method of `Instance` and the module-level helpers, before anything is
evaluated or requested.
"""

from __future__ import annotations

import uuid as uuid_module
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "checked_call",
    "checked_extras",
    "checked_flag_keys",
    "checked_flag_read",
    "checked_match_value",
]


def checked_call(
    distinct_id: Any,
    groups: Any,
    person_properties: Any,
    group_properties: Any,
    flag_keys: Any,
    only_evaluate_locally: Any,
) -> tuple[str, tuple[str, ...] | None]:
    """(distinct_id as str, "" when None; flag keys or None) — TypeError for a wrong type."""
    did = _distinct_id(distinct_id)
    if groups is not None:
        if type(groups) is not dict and not isinstance(groups, Mapping):
            raise TypeError(f"groups must be a Mapping, got {type(groups).__name__}")
        for group_type in groups:
            if type(group_type) is not str:
                raise TypeError(f"group types must be str, got {type(group_type).__name__}")
    if person_properties is not None and (
        type(person_properties) is not dict and not isinstance(person_properties, Mapping)
    ):
        raise TypeError(
            f"person_properties must be a Mapping, got {type(person_properties).__name__}"
        )
    if group_properties is not None and (
        type(group_properties) is not dict and not isinstance(group_properties, Mapping)
    ):
        raise TypeError(
            f"group_properties must be a Mapping, got {type(group_properties).__name__}"
        )
    if group_properties:
        for props in group_properties.values():
            if props is not None and type(props) is not dict and not isinstance(props, Mapping):
                raise TypeError(
                    "group_properties must map a group type to a Mapping, got "
                    f"{type(props).__name__}"
                )
    keys = None if flag_keys is None else checked_flag_keys(flag_keys)
    if type(only_evaluate_locally) is not bool:
        raise TypeError("only_evaluate_locally must be True or False")
    return did, keys


def checked_extras(device_id: Any, disable_geoip: Any) -> str | None:
    """`device_id` as str (None when None or ""); TypeError for a wrong type of either."""
    if device_id is not None:
        device_id = _distinct_id(device_id, "device_id") or None
    if disable_geoip is not None and type(disable_geoip) is not bool:
        raise TypeError("disable_geoip must be True, False or None")
    return device_id


def checked_flag_read(key: Any, send_feature_flag_events: Any) -> None:
    """A flag key is a str, `send_feature_flag_events` True or False; TypeError otherwise."""
    if type(key) is not str:
        raise TypeError(f"flag key must be a str, not {type(key).__name__}")
    if type(send_feature_flag_events) is not bool:
        raise TypeError("send_feature_flag_events must be True or False")


def checked_match_value(value: Any) -> None:
    """`match_value` is None, a bool or a variant key str; TypeError otherwise."""
    if value is not None and type(value) is not bool and not isinstance(value, str):
        raise TypeError(f"match_value must be a bool, a str or None, got {type(value).__name__}")


def _distinct_id(value: Any, name: str = "distinct_id") -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, uuid_module.UUID):
        return str(value)
    raise TypeError(f"{name} must be a str, int or uuid.UUID, got {type(value).__name__}")


def checked_flag_keys(flag_keys: Any) -> tuple[str, ...]:
    """`flag_keys` as a tuple of str; TypeError for a str or anything but an iterable of str."""
    if type(flag_keys) is tuple and len(flag_keys) == 1 and type(flag_keys[0]) is str:
        return flag_keys  # get_feature_flag's own (key,): the per-call fast path
    if isinstance(flag_keys, str) or not isinstance(flag_keys, Iterable):
        raise TypeError("flag_keys must be an iterable of str (not a str)")
    keys = tuple(flag_keys)
    for key in keys:
        if type(key) is not str:
            raise TypeError(f"flag_keys must hold str keys, got {type(key).__name__}")
    return keys
