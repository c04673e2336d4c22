"""Encoding an event as JSON bytes: orjson's fast path, made safe for any value a caller passes.

Runs on the caller's thread for every `capture()`. Property values are made JSON-safe here
(datetime, Decimal, set, bytes, Path, ... and anything else through `str()`), so nothing a caller
passes can fail later inside an actor; a value orjson would write out exponentially (shared
containers) is measured first, and a value it refuses (a cycle, a lone surrogate, an int over 64
bits, a raising `__str__`) is copied in linear time by `json_safe`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import gc
import uuid as uuid_module
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import orjson

from phactor.events import format_timestamp

__all__ = ["EventTooLarge", "encode", "encoded_pairs", "json_safe", "walk_is_linear"]

_DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_NAIVE_UTC
_MAX_DEPTH = 64
_MAX_NODES = 1_000_000
_CYCLE = "<cycle>"
_TOO_DEEP = "<max depth exceeded>"
_TRUNCATED = "<truncated>"
_INF = float("inf")


class EventTooLarge(ValueError):
    """`encode`: the event is known to be over `max_bytes` before any of it was written.

    Raised for a value that shares containers (`x = {"a": y, "b": y}`, nested): written out as
    a tree it has at least `nodes` values, so its JSON is at least `size` bytes.
    """

    def __init__(self, nodes: int) -> None:
        self.nodes = nodes
        self.size = 2 * nodes - 1
        super().__init__(f"the event expands to {nodes} values, at least {self.size} bytes")


def encoded_pairs(values: Mapping[str, Any]) -> bytes:
    """`values` as the JSON text of an object's members, without the braces (`"a":1,"b":2`):
    constant properties encoded once, for `encode`'s `tail`."""
    return orjson.dumps(json_safe(dict(values)), option=_DUMPS_OPTIONS)[1:-1]


def encode(message: Mapping[str, Any], max_bytes: int | None = None, tail: bytes = b"") -> bytes:
    """Serialise an event to compact JSON bytes (exact size); never raises for odd values.

    `tail` (from `encoded_pairs`): members written at the end of the message's last value,
    which must be a dict (the event's properties, placed last) without any of their keys.

    `max_bytes` (the caller's size limit) bounds the work. orjson writes a shared container once
    per reference, so a value whose containers are reached more often than a tree's would be
    (a DAG: 41 dicts each referencing the next one twice are 2**40 values written out) is
    measured first, in time linear in its distinct containers: `EventTooLarge` when it cannot
    fit, written in full when it can. See `json_safe` for the slow path (cycles, odd values).
    """
    nested = [*filter(_is_tracked, message.values())]  # one C call for flat properties
    if nested:
        data = _encode_nested(message, nested, max_bytes)
    else:
        try:
            data = orjson.dumps(message, default=_default, option=_DUMPS_OPTIONS)
        except (orjson.JSONEncodeError, TypeError, ValueError, RecursionError):
            data = orjson.dumps(json_safe(message, _max_nodes(max_bytes)), option=_DUMPS_OPTIONS)
    # orjson returns its whole working buffer (~4 KiB whatever the JSON's length). Queued events
    # live for a while, so keep an exact-size copy: 0.2 us here saves ~3 KiB per queued event.
    view = memoryview(data)
    if not tail:
        return bytes(view)
    # The copy takes the tail in: `...{"k":v}}` -> `...{"k":v,TAIL}}` (`...{}}` -> `...{TAIL}}`).
    return b"".join((view[:-2], b"," if view[-3] != 0x7B else b"", tail, b"}}"))


def _max_nodes(max_bytes: int | None) -> int:
    # Compact JSON spends at least 2 bytes on every value but the first (its own byte, plus a
    # comma before it or its container's closing bracket), so a value of more nodes than this
    # is over max_bytes whatever it holds: the budget never cuts what could be sent.
    return _MAX_NODES if max_bytes is None else max_bytes // 2 + 2


def _encode_nested(message: Mapping[str, Any], nested: list[Any], max_bytes: int | None) -> bytes:
    """`encode` of a message holding containers (`nested`, its values that may hold some):
    walked (or measured) before orjson runs."""
    left = _WALK_BUDGET if _shallow(nested) else _walk(nested, _WALK_BUDGET, 0)
    if left == _BIG:
        nodes = _expanded_nodes(message)
        if nodes is not None and nodes > _max_nodes(max_bytes):
            raise EventTooLarge(nodes)
        if nodes is None:  # a cycle, deep nesting: the careful copy cuts them
            left = _NOT_FOLLOWED
    if left != _NOT_FOLLOWED:
        try:
            return orjson.dumps(message, default=_default, option=_DUMPS_OPTIONS)
        except (orjson.JSONEncodeError, TypeError, ValueError, RecursionError):
            pass
    return orjson.dumps(json_safe(message, _max_nodes(max_bytes)), option=_DUMPS_OPTIONS)


def walk_is_linear(value: Any) -> bool:
    """True when writing `value` out as a tree (as orjson does) is cheap: linear in its size.

    False when it is big, or its containers are reached more often than a tree's would be
    (shared, cyclic), or their contents cannot be followed cheaply (a Mapping that is not a
    dict): copy such a value with a bounded walk (`json_safe`) instead. Never raises.
    """
    return _walk((value,), _WALK_BUDGET, 0) >= 0


# --- how much orjson would write -------------------------------------------------------------------
#
# orjson writes a value as a tree: a container referenced twice is written twice, so a graph of
# a few containers can stand for 2**64 values. Before orjson runs, `_walk` follows the value as
# orjson would, charging each container its length, and stops at a small budget: a normal value
# is walked once; a big or shared one is then measured by `_expanded_nodes`, which counts each
# distinct container once. Both lean on CPython's garbage collector: atomic values (str, int,
# float, None, ...) and dicts or tuples holding only such values are not tracked
# (`gc.is_tracked`, documented), so `filter(gc.is_tracked, ...)` skips in C whatever cannot hold
# a container, and flat properties cost one C call. Such flat values are not followed: each
# reference to one is written out, so what they add is the references the caller made times
# the value's own size, never a product over levels. One gap: CPython also untracks a tuple of
# untracked values, one level per collection of its generation, so a shared tuple-of-tuples
# DAG that has survived as many full collections as it is deep is not seen (checking every
# value's type would cost the flat fast path ~5%).

_WALK_BUDGET = 20_000  # values (container lengths) a walk follows before measuring instead
_WALK_DEPTH = 255  # orjson refuses deeper nesting anyway: the careful copy cuts it
_BIG = -1  # `_walk`: over budget or nested too deep
_NOT_FOLLOWED = -2  # `_walk`: holds a type whose contents are not followed here
_is_tracked = gc.is_tracked
_get_referents = gc.get_referents


def _shallow(nested: list[Any]) -> bool:
    """True when the containers in `nested` hold, two levels down, no container: written out
    they are what those two levels hold (values below are not followed, as in `_walk`), and
    a small budget bounds that. Three C calls for the usual nested properties (lists of atoms,
    dicts of atoms, a dict holding dicts of atoms); False: `_walk` decides.

    `gc.get_referents` gives a dict's values, a list's or a tuple's items, and for any other
    object what its type traverses: its class when that is defined in Python (tracked, so such
    objects are always walked), its contents otherwise (a set's items).
    """
    below = _get_referents(*nested)
    inner = [*filter(_is_tracked, below)]
    if not inner:
        return len(below) <= _WALK_BUDGET
    leaves = _get_referents(*inner)
    return len(below) + len(leaves) <= _WALK_BUDGET and not any(map(_is_tracked, leaves))


def _walk(values: Any, budget: int, depth: int) -> int:
    """The budget left after following the containers in `values`, or `_BIG` / `_NOT_FOLLOWED`."""
    try:
        for node in filter(_is_tracked, values):
            kind = type(node)
            if kind is dict:
                inner: Any = node.values()
            elif kind is list or kind is tuple:
                inner = node
            else:
                inner = _inner(node)
                if inner is None:
                    continue
                if inner is _OTHER:
                    return _NOT_FOLLOWED
            budget -= len(inner) + 1
            if budget < 0 or depth >= _WALK_DEPTH:
                return _BIG
            if not any(map(_is_tracked, inner)):  # a list of atoms: nothing below
                continue
            budget = _walk(inner, budget, depth + 1)
            if budget < 0:
                return budget
        return budget
    except Exception:  # a hostile __class__, property or iterator: the careful copy deals with it
        return _NOT_FOLLOWED


_OTHER = object()


def _inner(node: Any) -> Any:
    """What orjson (or `_default`) writes inside a tracked object that is not a plain dict, list
    or tuple: a list of its values, None for a leaf, `_OTHER` when it is not followed here."""
    if isinstance(node, dict):  # subclasses: orjson writes them as dicts
        return list(node.values())
    if isinstance(node, list | tuple | set | frozenset):
        return list(node)
    if isinstance(node, enum.Enum):
        return [node.value]
    if isinstance(node, Mapping):  # `dict(value)` may run any code: not here
        return _OTHER
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return [getattr(node, f.name) for f in dataclasses.fields(node)]
    return None


def _expanded_nodes(message: Mapping[str, Any]) -> int | None:
    """At least how many values `message` has written out as a tree (as `json_safe` counts
    them), None when it has a cycle, nests deeper than `json_safe` goes, or holds a type not
    followed here. Each distinct container is measured once (memoised by id), so this is linear
    in the containers however many paths lead to them."""
    try:
        return _measure(message)
    except Exception:  # an object that changed under us: the careful copy decides
        return None


def _measure(message: Mapping[str, Any]) -> int | None:
    memo: dict[int, tuple[int, int]] = {}  # id -> (values written out, height)
    on_path: set[int] = set()
    keep: list[Any] = [message]  # what `memo` is keyed by stays alive: ids are not reused
    top = list(message.values())
    # Each frame: the container, its tracked children still to measure, [values, height].
    stack: list[tuple[Any, Iterator[Any], list[int]]] = [
        (message, filter(_is_tracked, top), [1 + len(top), 0])
    ]
    on_path.add(id(message))
    while stack:
        node, children, acc = stack[-1]
        for child in children:
            key = id(child)
            done = memo.get(key)
            if done is None:
                if key in on_path:
                    return None
                kind = type(child)
                inner = (
                    list(child.values())
                    if kind is dict
                    else child
                    if kind is list or kind is tuple
                    else _inner(child)
                )
                if inner is None:
                    continue
                if inner is _OTHER:
                    return None
                on_path.add(key)
                keep.append(child)
                stack.append((child, filter(_is_tracked, inner), [1 + len(inner), 0]))
                break
            acc[0] += done[0] - 1  # the child was counted as one value of `node` already
            acc[1] = max(acc[1], done[1])
        else:
            stack.pop()
            on_path.discard(id(node))
            nodes, height = acc[0], acc[1] + 1
            if height > _MAX_DEPTH:
                return None
            memo[id(node)] = (nodes, height)
            if not stack:
                return nodes - 1  # the message itself is not one of json_safe's values
            parent = stack[-1][2]
            parent[0] += nodes - 1
            parent[1] = max(parent[1], height)
    return None  # not reached


def _default(value: Any) -> Any:
    # orjson calls this only for types it cannot serialise natively.
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


def json_safe(value: Any, max_nodes: int = _MAX_NODES) -> Any:
    """A copy of `value` made only of JSON types and valid Unicode. Slow path; never raises.

    Used when the fast orjson path fails (ints over 64 bits, lone surrogates, cycles, str()
    raising, odd keys). Linear in the size of the result: a container met again on its own
    path is a cycle and becomes `"<cycle>"`; nesting deeper than 64 becomes
    `"<max depth exceeded>"`; after `max_nodes` values (shared containers count each time they
    are met, so a DAG of 2**64 paths costs no more) the rest becomes `"<truncated>"`. Lone
    surrogates (`os.fsdecode` of a non-UTF-8 name) become U+FFFD, in keys as in values.
    """
    return _SafeCopy(max_nodes).convert(value, 0)


class _SafeCopy:
    """One json_safe walk: the node budget left and the ids of the containers on the path."""

    __slots__ = ("budget", "path")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.path: set[int] = set()

    def convert(self, value: Any, depth: int) -> Any:
        self.budget -= 1
        if self.budget < 0:
            return _TRUNCATED
        # Anything a hostile value can do (str(), items(), utcoffset(), a property, __eq__
        # raising) ends as a marker for that value, never as an exception.
        try:
            return self._convert(value, depth)
        except Exception:
            return _unrepresentable(value)

    def _convert(self, value: Any, depth: int) -> Any:
        kind = type(value)  # the common kinds first
        if kind is str:
            return _valid_text(value)
        if kind is dict:
            return self._container(value, depth, iter(value.items()), True)
        if kind is list or kind is tuple:
            return self._container(value, depth, iter(value), False)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return _valid_text(value)
        if isinstance(value, int):
            return value if -(2**63) <= value < 2**64 else str(value)
        if isinstance(value, float):
            return value if value == value and value not in (_INF, -_INF) else None
        if isinstance(value, dt.datetime):
            return format_timestamp(value)
        if isinstance(value, dt.date | dt.time):
            return value.isoformat()
        if isinstance(value, uuid_module.UUID):
            return str(value)
        if isinstance(value, enum.Enum):
            return self.convert(value.value, depth + 1)
        if isinstance(value, Mapping):
            return self._container(value, depth, iter(value.items()), True)
        if isinstance(value, list | tuple | set | frozenset):
            return self._container(value, depth, iter(value), False)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
            return self._container(value, depth, fields, True)
        converted = _default(value)
        if isinstance(converted, str):
            return _valid_text(converted)
        return self.convert(converted, depth + 1)

    def _container(self, value: Any, depth: int, items: Iterator[Any], pairs: bool) -> Any:
        key = id(value)
        if key in self.path:
            return _CYCLE
        if depth >= _MAX_DEPTH:
            return _TOO_DEEP
        self.path.add(key)
        try:
            return self._mapping(items, depth) if pairs else self._sequence(items, depth)
        finally:
            self.path.discard(key)

    def _mapping(self, items: Iterator[tuple[Any, Any]], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if self.budget <= 0:
                out[_TRUNCATED] = _TRUNCATED
                break
            out[_safe_key(k)] = self.convert(v, depth + 1)
        return out

    def _sequence(self, items: Iterator[Any], depth: int) -> list[Any]:
        out: list[Any] = []
        for v in items:
            if self.budget <= 0:
                out.append(_TRUNCATED)
                break
            out.append(self.convert(v, depth + 1))
        return out


def _valid_text(text: str) -> str:
    """`text` with each lone surrogate as U+FFFD (a surrogate pair as the character it codes)."""
    if str.isascii(text):
        return text
    try:
        str.encode(text, "utf-8")
        return text
    except UnicodeEncodeError:
        return str.encode(text, "utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _safe_key(key: Any) -> str:
    if isinstance(key, str):
        return _valid_text(key)
    try:
        return _valid_text(str(key))
    except Exception:
        return _unrepresentable(key)


def _unrepresentable(value: Any) -> str:
    return f"<unrepresentable {type(value).__name__}>"
