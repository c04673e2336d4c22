"""Wire-safe text and values for error tracking: what every `$exception` string passes through.

Part of the pure core (no threads, no I/O). `clean_text` replaces lone surrogates (from
`os.fsdecode` of a non-UTF-8 file name) that JSON encoders refuse; `cut_text` bounds a string's
UTF-8 size; `safe_str` is a `str()` that never raises; `wire_safe` copies an arbitrary value
(cycles, surrogates, raising `__str__`, huge shared structures) into JSON types in linear time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import os
import re
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CYCLE_MARKER",
    "MAX_WIRE_DEPTH",
    "MAX_WIRE_NODES",
    "clean_or_none",
    "clean_text",
    "cut_text",
    "safe_str",
    "wire_safe",
]

#: What `wire_safe` puts where a value contains itself (a reference back to an enclosing one).
CYCLE_MARKER = "<cycle>"
#: Containers nested deeper than this are cut by `wire_safe` (orjson refuses past 255 levels).
MAX_WIRE_DEPTH = 64
#: Values `wire_safe` copies at most: a structure that shares one container many times (a
#: "diamond": not a cycle, yet 2**64 paths for a tree walk) costs bounded time and size.
MAX_WIRE_NODES = 10_000

_SURROGATES_RE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` with every surrogate code point replaced by U+FFFD.

    Lone surrogates come from `os.fsdecode` of a non-UTF-8 file name (and so from paths, error
    messages, log lines); they are not valid UTF-8 and JSON encoders refuse them.
    """
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES_RE.sub("\ufffd", str(text))
    return text


def clean_or_none(text: str | None) -> str | None:
    return clean_text(text) if isinstance(text, str) else text


def wire_safe(value: Any) -> Any:
    """A copy of `value` made only of JSON types, in time linear in its size. Never raises.

    For values the encoder's fast path refused (a cycle, a lone surrogate, a `__str__` that
    raises, a key that is not a string, an integer over 64 bits): a container inside itself
    becomes `CYCLE_MARKER`, surrogates become U+FFFD, other objects their (cleaned) text; past
    `MAX_WIRE_DEPTH` levels or `MAX_WIRE_NODES` values the rest is cut with a marker.
    """
    copier = _WireCopy()
    try:
        return copier.copy(value, 0)
    except Exception:  # an object whose type checks themselves raise
        return _unrepresentable(value)


class _WireCopy:
    __slots__ = ("nodes", "path")

    def __init__(self) -> None:
        self.path: set[int] = set()  # ids of the containers enclosing the current value
        self.nodes = 0

    def copy(self, value: Any, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_WIRE_NODES:
            return "<truncated>"
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return clean_text(str.__str__(value))
        if isinstance(value, int):
            number = int.__int__(value)
            return number if -(2**63) <= number < 2**64 else str(number)
        if isinstance(value, float):
            real = float.__float__(value)
            return real if real - real == 0.0 else None  # NaN and inf are not JSON
        if isinstance(value, dt.datetime | dt.date | dt.time):
            return _text_of(value, "isoformat")
        if isinstance(value, uuid.UUID | os.PathLike):
            return _text_of(value)
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value).decode("utf-8", "replace")
        if depth >= MAX_WIRE_DEPTH:
            return "<max depth exceeded>"
        if isinstance(value, enum.Enum):
            return self.copy(value.value, depth + 1)
        if isinstance(value, Mapping | list | tuple | set | frozenset) or (
            dataclasses.is_dataclass(value) and not isinstance(value, type)
        ):
            key = id(value)
            if key in self.path:
                return CYCLE_MARKER
            self.path.add(key)
            try:
                return self._container(value, depth)
            finally:
                self.path.discard(key)
        return _text_of(value)

    def _container(self, value: Any, depth: int) -> Any:
        try:
            if isinstance(value, Mapping):
                items = list(value.items())
            elif isinstance(value, list | tuple | set | frozenset):
                return [self.copy(item, depth + 1) for item in list(value)]
            else:  # a dataclass instance
                items = [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
        except Exception:
            return _unrepresentable(value)
        result: dict[str, Any] = {}
        for k, v in items:
            result[self.key(k)] = self.copy(v, depth + 1)
        return result

    @staticmethod
    def key(key: Any) -> str:
        if isinstance(key, str):
            return clean_text(str.__str__(key))
        return _text_of(key)


def _text_of(value: Any, method: str | None = None) -> str:
    """`str(value)` (or `value.method()`), cleaned; a marker when it raises or is not text."""
    try:
        text = getattr(value, method)() if method else str(value)
        if isinstance(text, str):
            return clean_text(str.__str__(text))
    except Exception:
        pass
    return _unrepresentable(value)


def _unrepresentable(value: object) -> str:
    return f"<unrepresentable {type(value).__name__}>"


def cut_text(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes on a code point boundary, marked by '...'."""
    if len(text) * 4 <= max_bytes:  # cheap exit: even all 4-byte code points would fit
        return text
    try:
        encoded = text.encode("utf-8", errors="replace")
    except Exception:
        return text[: max_bytes // 4]
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max_bytes - 3].decode("utf-8", errors="ignore") + "..."


def safe_str(value: object) -> str:
    """`str(value)` (else its repr), with surrogates replaced; never raises."""
    for to_text in (str, repr):
        try:
            text = to_text(value)
            if isinstance(text, str):
                return clean_text(text)
        except Exception:
            pass
    try:
        return f"<unprintable {type(value).__qualname__} object>"
    except Exception:
        return "<unprintable object>"
