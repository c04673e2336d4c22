"""Flags compile lazily (issue 16 item 6): a load keeps the raw definitions and compiles a flag
on its first evaluation, so 10,000 definitions cost about their JSON in time, memory and
GC-tracked objects. Evaluation results do not depend on which flags were compiled before, in
what order; a flag that cannot be compiled is reported once, when first compiled."""

from __future__ import annotations

import gc
import sys
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from phactor.flags import Definitions, evaluate

HUGE = 10 ** (sys.get_int_max_str_digits() + 1) - 1  # a regex value no parser can render


def flag(key: str, props: list[dict[str, Any]], rollout: int = 100, **filters: Any) -> dict:
    return {
        "id": 1,
        "key": key,
        "active": True,
        "filters": {"groups": [{"properties": props, "rollout_percentage": rollout}], **filters},
    }


def many_flags(n: int) -> list[dict[str, Any]]:
    return [
        flag(
            f"flag-{i}",
            [
                {"key": "email", "operator": "icontains", "value": f"@corp{i}.com"},
                {"key": "plan", "operator": "exact", "value": ["pro", f"p{i}"]},
                {"key": "url", "operator": "regex", "value": f"^/app/{i}/"},
            ],
            rollout=i % 100,
            multivariate={"variants": [{"key": "a", "rollout_percentage": 100}]},
        )
        for i in range(n)
    ]


def test_a_load_compiles_no_flag():
    # Before: every flag was compiled at load: ~15 GC-tracked objects per flag (the compiled
    # flag, its conditions, filters, tuples), 30,000+ here; now a dict of the raw ones.
    body = {"flags": many_flags(2000), "cohorts": {}, "group_type_mapping": {}}
    gc.collect()
    before = len(gc.get_objects())
    defs = Definitions.from_response(body)
    created = len(gc.get_objects()) - before
    assert created < 50, created
    assert len(defs) == 2000 and "flag-7" in defs
    results, unresolved = evaluate(
        defs, "u", person_properties={"plan": "p7", "email": "a@corp7.com", "url": "/app/7/x"},
        flag_keys=["flag-7"],
    )
    assert unresolved == {} and list(results) == ["flag-7"]


class _Marker:
    """Something a raw definition holds that a weak reference can watch."""


def test_a_replaced_snapshot_is_freed_at_once_not_by_a_gc_pass():
    # Before (first lazy version): the snapshot and its lazy mapping referenced each other, so
    # a replaced snapshot's raw definitions stayed alive until a full collection.
    import weakref

    flags = many_flags(50)
    marker = _Marker()
    flags[3]["marker"] = marker
    defs = Definitions.from_response({"flags": flags})
    evaluate(defs, "u", person_properties={"plan": "p7"})  # compiled flags too
    gone = weakref.ref(marker)
    was = gc.isenabled()
    gc.disable()
    try:
        del defs, flags, marker
        assert gone() is None
    finally:
        if was:
            gc.enable()


PROPS = st.sampled_from(
    [
        {"key": "plan", "operator": "exact", "value": "pro"},
        {"key": "plan", "operator": "is_not", "value": ["free"]},
        {"key": "age", "operator": "gt", "value": 30},
        {"key": "email", "operator": "regex", "value": "@corp\\.com$"},
        {"key": "email", "operator": "regex", "value": "<huge>"},  # uncompilable flag
        {"key": "d", "type": "flag", "value": True, "operator": "flag_evaluates_to"},
    ]
)
KEYS = st.sampled_from(["a", "b", "c", "d", "e"])


def _materialise(prop: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    prop = dict(prop)
    if prop["value"] == "<huge>":
        prop["value"] = HUGE
    if prop.get("type") == "flag":
        prop["dependency_chain"] = [prop["key"]] if prop["key"] in keys else ["missing"]
    return prop


@given(
    st.lists(st.tuples(KEYS, st.lists(PROPS, max_size=3), st.integers(0, 100)), max_size=8),
    st.permutations(["a", "b", "c", "d", "e", "zz"]),
    st.fixed_dictionaries({"plan": st.sampled_from(["pro", "free"]), "age": st.integers(0, 60)}),
)
def test_results_do_not_depend_on_what_was_compiled_before(specs, order, person):
    keys = [k for k, _, _ in specs]
    flags = [
        flag(k, [_materialise(p, keys) for p in props], rollout) for k, props, rollout in specs
    ]
    body = {"flags": flags, "cohorts": {}, "group_type_mapping": {}}
    person = {**person, "email": "x@corp.com"}
    all_at_once = evaluate(Definitions.from_response(body), "user-9", person_properties=person)

    reported: list[str] = []
    defs = Definitions.from_response(body, on_uncompilable=reported.append)
    for key in order:  # one flag at a time, in any order, compiling as they come
        results, unresolved = evaluate(defs, "user-9", person_properties=person, flag_keys=[key])
        if key in all_at_once[0]:
            assert results[key] == all_at_once[0][key]
        elif key in all_at_once[1]:
            assert unresolved[key] == all_at_once[1][key]
        else:
            assert unresolved == {key: "unknown_flag"}
    assert evaluate(defs, "user-9", person_properties=person) == all_at_once
    # Each flag that cannot be compiled is reported once, however often it was evaluated.
    assert sorted(reported) == sorted(set(reported)) == sorted(defs.uncompilable)
    assert all(all_at_once[1].get(k) == "malformed_definition" for k in reported)


# --- decoding a definitions body with the GC paused (phactor/flags/http.py) ------------------

SCALARS = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5)
OBJECTS = st.dictionaries(st.text(max_size=4), SCALARS | st.lists(SCALARS, max_size=3), max_size=4)
JSON_VALUES = SCALARS | OBJECTS | st.lists(OBJECTS | SCALARS, max_size=4)


@given(JSON_VALUES, st.booleans(), st.booleans())
def test_the_gc_pause_decodes_the_same_and_leaves_the_gc_as_the_app_had_it(value, app_gc, broken):
    import orjson

    from phactor.flags.http import _decode_without_gc

    body = orjson.dumps(value) + (b"}" if broken else b"")
    was = gc.isenabled()
    try:
        (gc.enable if app_gc else gc.disable)()
        try:
            decoded = _decode_without_gc(body)
        except orjson.JSONDecodeError:
            assert broken
        else:
            assert not broken and decoded == value
        assert gc.isenabled() is app_gc  # never turned on behind an app that turned it off
    finally:
        (gc.enable if was else gc.disable)()
