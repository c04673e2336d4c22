"""capture()'s fast path writes the constant properties (`$lib`, `$lib_version`, `$is_server`,
the runtime ones) as bytes encoded once, spliced into each encoded event: the event on the wire
must hold exactly the keys and values the dict merge gives (`events.build_event`), for any
properties — empty, nested, odd values orjson refuses (lone surrogates, ints over 64 bits,
cycles) — and a property named like a constant one must still lose to it.
"""

from __future__ import annotations

from typing import Any

import orjson
from conftest import StartInstance
from hypothesis import given
from hypothesis import strategies as st

import phactor.testing
from phactor import encoding as enc
from phactor import events as ev
from phactor.runtime import lib_properties

LIB = lib_properties()
TAIL = enc.encoded_pairs(LIB)

_keys = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["$lib", "$os", "distinct_id", "$groups", "\ud800", "a"]),
)
_atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=10),
    st.just("lone \udc80 surrogate"),
)
_values = st.recursive(
    _atoms,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
_properties = st.dictionaries(_keys, _values, max_size=8)


def _decoded(data: bytes) -> Any:
    return orjson.loads(data)


@given(_properties, st.one_of(st.none(), st.just({"company": "acme"})), st.booleans())
def test_spliced_constant_properties_give_the_same_event(
    properties: dict[str, Any], groups: dict[str, str] | None, cyclic: bool
) -> None:
    props = {k: v for k, v in properties.items() if k not in LIB}  # capture()'s precondition
    if cyclic:
        loop: list[Any] = []
        loop.append(loop)
        props["loop"] = loop
    fields = ("e", "u1", dict(props), "2026-01-01T00:00:00.000Z", ev.new_uuid(), groups)
    merged = enc.encode(ev.build_event(*fields, None, LIB))
    spliced = enc.encode(ev.wire_event(*fields), None, TAIL)
    assert _decoded(spliced) == _decoded(merged)
    assert spliced.endswith(b"}}") and orjson.loads(spliced)["properties"]["$lib"] == LIB["$lib"]


def test_empty_properties_take_the_tail_alone() -> None:
    data = enc.encode(ev.wire_event("e", "u1", {}, "t", "u"), None, TAIL)
    assert _decoded(data)["properties"] == dict(LIB)


def test_capture_sends_the_same_event_with_or_without_the_fast_path(
    start_test_mode: StartInstance,
) -> None:
    # A before_send hook (here: one that changes nothing) takes the dict-merge path; a
    # property named like a constant one also does, and loses to the constant value.
    plain = start_test_mode()
    hooked = start_test_mode(before_send=lambda event: event)

    @given(_properties)
    def check(properties: dict[str, Any]) -> None:
        events = []
        for inst in (plain, hooked):
            phactor.testing.clear(inst.name)
            inst.capture("e", "u1", properties, uuid="0192f0c4-0000-7000-8000-000000000000")
            (event,) = phactor.testing.events(inst.name)
            event.pop("timestamp")
            events.append(event)
        for event in events:
            for key, value in LIB.items():
                assert event["properties"][key] == value
        assert events[0] == events[1]

    check()


# --- the two-level shortcut before orjson ------------------------------------------------------


@st.composite
def _graphs(draw: st.DrawFn) -> Any:
    """A dict, list or tuple graph: containers may be shared, nest each other or themselves."""
    kinds = draw(st.lists(st.sampled_from(["dict", "list", "tuple"]), min_size=1, max_size=6))
    edges = draw(
        st.lists(
            st.lists(
                st.one_of(
                    st.integers(0, len(kinds) - 1).map(lambda i: ("ref", i)),
                    _atoms.map(lambda a: ("atom", a)),
                ),
                max_size=4,
            ),
            min_size=len(kinds),
            max_size=len(kinds),
        )
    )
    nodes: list[Any] = [{} if kind == "dict" else [] for kind in kinds]
    for node, targets in zip(nodes, edges, strict=True):
        for n, target in enumerate(targets):
            kind, target = target
            value = nodes[target] if kind == "ref" else target
            if isinstance(node, dict):
                node[f"k{n}"] = value
            else:
                node.append(value)
    # Tuples last (they cannot be filled after the fact): a list node becomes a tuple copy.
    for i, kind in enumerate(kinds):
        if kind == "tuple":
            nodes[i] = tuple(nodes[i])
    return {"properties": nodes[0], "event": "e"}


@given(_graphs())
def test_the_shortcut_only_passes_what_the_walk_finds_linear(message: dict[str, Any]) -> None:
    nested = [v for v in message.values() if enc._is_tracked(v)]
    if nested and enc._shallow(nested):
        assert enc._walk(nested, enc._WALK_BUDGET, 0) >= 0  # no cycle, nothing deep, small
    enc.encode(message, 10_000)  # and either way: never hangs or raises (cut or measured)


class _Holder:
    def __init__(self, value: Any) -> None:
        self.value = value


def test_objects_of_python_classes_are_always_walked() -> None:
    shared = [1, 2]
    for value in (_Holder(shared), [_Holder(1)], {"a": _Holder(shared)}):
        assert not enc._shallow([{"x": value}])
