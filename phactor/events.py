"""Pure event building: from call arguments to the wire-format event dict and its JSON bytes.

Runs on the caller's thread for every `capture()`, so it is written for speed and never does
I/O. Serialising the event (and making any property value JSON-safe) is `phactor.encoding`'s.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
import uuid as uuid_module
from collections.abc import Mapping
from typing import Any

from phactor._version import __version__

__all__ = [
    "LIB",
    "build_event",
    "checked_event",
    "distinct_id_text",
    "format_timestamp",
    "new_uuid",
    "new_uuid4",
    "normalize_uuid",
    "now_iso",
    "stamp",
    "wire_event",
]

LIB = "phactor"
_LIB_PROPS: Mapping[str, Any] = {"$lib": LIB, "$lib_version": __version__}


# Our own generator, seeded from os.urandom (10x cheaper per call than os.urandom): an app that
# seeds the global `random` (per job, per test) must neither get equal uuids nor see its own
# sequence shifted by our captures. Reseeded in a forked child, as CPython does for `random`.
_rng = random.Random()
_random_bits = _rng.getrandbits
os.register_at_fork(after_in_child=_rng.seed)


def new_uuid() -> str:
    """A random UUIDv7 string: time-ordered (48-bit ms timestamp), 74 random bits."""
    ms = time.time_ns() // 1_000_000
    rand = _random_bits(80)
    value = (
        ((ms & 0xFFFF_FFFF_FFFF) << 80)
        | (0x7 << 76)
        | ((rand >> 68) << 64)
        | (0b10 << 62)
        | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    )
    return _uuid_text(value)


def new_uuid4() -> str:
    """A random UUIDv4 string (an id that must not reveal when it was made, unlike `new_uuid`)."""
    value = (_random_bits(128) & ~(0xF << 76) & ~(0b11 << 62)) | (0x4 << 76) | (0b10 << 62)
    return _uuid_text(value)


def _uuid_text(value: int) -> str:
    """The canonical 8-4-4-4-12 text of a 128-bit value (cheaper than building a uuid.UUID)."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def normalize_uuid(value: Any) -> str:
    """A caller-given uuid as a canonical string; TypeError/ValueError when it is not one."""
    if isinstance(value, uuid_module.UUID):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"uuid must be a str or uuid.UUID, got {type(value).__name__}")
    try:
        return str(uuid_module.UUID(value))
    except ValueError:
        raise ValueError(f"uuid must be a valid UUID string, got {value!r}") from None


_second_cache: tuple[int, str] = (-1, "")
# The texts of the current millisecond: (ms, "xxxxxxxx-xxxx-7" uuid prefix, ISO timestamp).
_ms_cache: tuple[int, str, str] = (-1, "", "")
_time_ns = time.time_ns
_VARIANT_ON = 1 << 63  # the variant bits (10) at the top of the last 64 bits
_VARIANT_OFF = ~(1 << 62)


def stamp() -> tuple[str, str]:
    """A new UUIDv7 and the ISO-8601 UTC time (milliseconds) of the same clock reading.

    What `new_uuid()` and `now_iso()` give, from one clock read: the texts of the millisecond
    are made once per millisecond, so an event costs a random number and one format.
    """
    global _ms_cache
    ms = _time_ns() // 1_000_000
    cached, prefix, iso = _ms_cache
    if ms != cached:
        h = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
        prefix = f"{h[:8]}-{h[8:]}-7"
        iso = _iso_of_ms(ms)
        _ms_cache = (ms, prefix, iso)
    # 12 bits rand_a, then the variant (10) over 2 of 64 random bits: 74 random bits in all.
    t = f"{(_random_bits(76) | _VARIANT_ON) & _VARIANT_OFF:019x}"
    return f"{prefix}{t[:3]}-{t[3:7]}-{t[7:]}", iso


def _iso_of_ms(ms: int) -> str:
    global _second_cache
    second, fraction = divmod(ms, 1000)
    cached_second, prefix = _second_cache
    if second != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, prefix)
    return f"{prefix}.{fraction:03d}Z"


def distinct_id_text(value: Any, name: str = "distinct_id") -> str | None:
    """A caller's distinct_id as the text sent; None when there is none (None or "").

    `str`, `int` (not bool) and `uuid.UUID` are ids; anything else is a TypeError naming its
    type (never stringified: `capture("signed_up", {"plan": "pro"})` is a slip, not an id).
    """
    kind = type(value)
    if kind is str:
        return value or None
    if value is None:
        return None
    if kind is int:
        return str(value)
    if isinstance(value, uuid_module.UUID):
        return str(value)
    if isinstance(value, str):
        return str.__str__(value) or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    raise TypeError(f"{name} must be a str, int or uuid.UUID, got {type(value).__name__}")


def now_iso() -> str:
    """The current UTC time as ISO-8601 with milliseconds, e.g. `2026-11-23T14:09:02.123Z`."""
    global _second_cache
    t = time.time()
    second = int(t)
    cached_second, prefix = _second_cache
    if second != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, prefix)
    return f"{prefix}.{int((t - second) * 1000):03d}Z"


def format_timestamp(value: Any) -> str:
    """A caller-given timestamp (aware/naive datetime, date or ISO string) as ISO-8601 UTC.

    Naive datetimes are taken as UTC. Raises TypeError for other types, ValueError for a
    string that is not ISO-8601.
    """
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"timestamp must be ISO-8601, got {value!r}") from None
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise TypeError(f"timestamp must be a datetime or ISO string, got {type(value).__name__}")
    if value.tzinfo is not None:
        try:
            value = value.astimezone(dt.UTC)
        except OverflowError:  # e.g. year 1 at +01:00: the UTC instant is before datetime.min
            raise ValueError(f"timestamp is out of range in UTC: {value.isoformat()}") from None
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:"
        f"{value.minute:02d}:{value.second:02d}.{value.microsecond // 1000:03d}Z"
    )


def build_event(
    event: str,
    distinct_id: str,
    properties: dict[str, Any],
    timestamp: str,
    uuid: str,
    groups: Mapping[str, Any] | None = None,
    top_level: Mapping[str, Any] | None = None,
    lib_properties: Mapping[str, Any] = _LIB_PROPS,
) -> dict[str, Any]:
    """The wire-format event dict. Takes ownership of `properties` (it is updated in place).

    `top_level` carries keys that sit beside `properties` on the wire (`$set` / `$set_once`
    of `set()` and `set_once()` events). `lib_properties` (`$lib`, `$lib_version`, the
    runtime properties of `phactor.runtime`, computed once) override the caller's.
    """
    properties.update(lib_properties)
    message = wire_event(event, distinct_id, properties, timestamp, uuid, groups)
    if top_level:
        message.update(top_level)
    return message


def wire_event(
    event: str,
    distinct_id: str,
    properties: dict[str, Any],
    timestamp: str,
    uuid: str,
    groups: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The event's own keys, properties placed last (`build_event` adds the lib properties and
    `top_level`); on capture()'s fast path the caller appends the constant properties already
    encoded (`encoding.encode`'s `tail`)."""
    if groups:
        properties["$groups"] = dict(groups)
    return {
        "event": event,
        "distinct_id": distinct_id,
        "timestamp": timestamp,
        "uuid": uuid,
        "properties": properties,
    }


def checked_event(value: Any, built: Mapping[str, Any]) -> dict[str, Any]:
    """What a `before_send` hook returned, as a wire event; ValueError saying what is wrong.

    Checked as `capture()` checks its own arguments, because the server refuses a whole batch
    for one bad event: a Mapping with a non-empty str `event`, a non-empty str (or int)
    `distinct_id`, a valid `uuid` (none: the one the event was `built` with), Mapping
    `properties` (if any) and a datetime or ISO `timestamp` (if any).
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"result must be a dict, got {_kind(value)}")
    message = dict(value)
    name = message.get("event")
    if not isinstance(name, str) or not name:
        raise ValueError(f"event must be a non-empty str, got {_kind(name)}")
    distinct_id = message.get("distinct_id")
    if isinstance(distinct_id, int) and not isinstance(distinct_id, bool):
        message["distinct_id"] = distinct_id = str(distinct_id)
    if not isinstance(distinct_id, str) or not distinct_id:
        raise ValueError(f"distinct_id must be a non-empty str, got {_kind(distinct_id)}")
    event_uuid = message.get("uuid")
    if event_uuid is None:
        message["uuid"] = built["uuid"]
    elif event_uuid is not built["uuid"]:
        try:
            message["uuid"] = normalize_uuid(event_uuid)
        except (TypeError, ValueError):
            raise ValueError(f"uuid must be a UUID, got {_kind(event_uuid)}") from None
    if "properties" in message:
        properties = message["properties"]
        if not isinstance(properties, Mapping):
            raise ValueError(f"properties must be a dict, got {_kind(properties)}")
        if type(properties) is not dict:
            message["properties"] = dict(properties)
    timestamp = message.get("timestamp")
    if timestamp is None:
        message.pop("timestamp", None)
    elif timestamp is not built.get("timestamp"):
        try:
            message["timestamp"] = format_timestamp(timestamp)
        except (TypeError, ValueError):
            raise ValueError(f"timestamp must be ISO-8601, got {_kind(timestamp)}") from None
    return message


def _kind(value: Any) -> str:
    """A short, safe description of a bad value for an error message (never its content)."""
    if value is None:
        return "None"
    if isinstance(value, str) and not value:
        return "an empty str"
    return type(value).__name__
