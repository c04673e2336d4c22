"""Loading flag definitions never fails as a whole: generated malformed definitions (property test).

Whatever one flag or cohort holds -- numbers past the int-string limit, NaN, lone surrogates,
wrong types, nested garbage -- ``Definitions.from_response`` returns, ``evaluate`` returns, and
each flag is either decided or unresolved with a reason; a well-formed flag next to them always
evaluates.
"""

from __future__ import annotations

import sys
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from phactor.flags import Definitions, evaluate

# Ints str() refuses to render and strings past the int-string limit; drawn as markers and put
# in place in the test, so that hypothesis never has to print one.
HUGE = 10 ** (sys.get_int_max_str_digits() + 1) - 1
HUGE_DIGITS = "9" * (sys.get_int_max_str_digits() + 1)
HUGE_VALUES = {
    "<huge>": HUGE,
    "<-huge>": -HUGE,
    "<huge-semver>": HUGE_DIGITS,
    "<huge-relative-date>": f"-{HUGE_DIGITS}d",
    "<huge-minor>": f"1.{HUGE_DIGITS}.0",
    "<huge-wildcard>": f"{HUGE_DIGITS}.*",
}
OPERATORS = [
    "exact",
    "is_not",
    "is_set",
    "icontains",
    "regex",
    "not_regex",
    "gt",
    "lte",
    "is_date_before",
    "is_date_after",
    "semver_eq",
    "semver_gt",
    "semver_tilde",
    "semver_caret",
    "semver_wildcard",
    "flag_evaluates_to",
    "in",
    "not_in",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([*HUGE_VALUES, 2**64, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3),
    st.sampled_from(
        [
            "^(a|a)*$",
            "1.2.3",
            "-7d",
            "2024-01-01",
        ]
    ),
)
garbage = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def property_filter(draw: st.DrawFn) -> Any:
    prop = {
        "key": draw(st.one_of(st.sampled_from(["p", "q"]), garbage)),
        "value": draw(garbage),
        "operator": draw(st.one_of(st.sampled_from(OPERATORS), garbage)),
        "type": draw(st.sampled_from(["person", "group", "cohort", "flag", None])),
    }
    if draw(st.booleans()):
        prop["dependency_chain"] = draw(st.one_of(st.just(["good"]), garbage))
    if draw(st.booleans()):
        prop["negation"] = draw(garbage)
    return draw(st.one_of(st.just(prop), garbage))


@st.composite
def malformed_flag(draw: st.DrawFn, key: str) -> dict[str, Any]:
    condition = {
        "properties": draw(st.one_of(st.lists(property_filter(), max_size=3), garbage)),
        "rollout_percentage": draw(garbage),
        "variant": draw(garbage),
        "aggregation_group_type_index": draw(garbage),
    }
    filters = {
        "groups": draw(st.one_of(st.lists(st.one_of(st.just(condition), garbage)), garbage)),
        "multivariate": draw(
            st.one_of(
                garbage,
                st.fixed_dictionaries(
                    {
                        "variants": st.lists(
                            st.fixed_dictionaries({"key": garbage, "rollout_percentage": garbage})
                        )
                    }
                ),
            )
        ),
        "payloads": draw(garbage),
        "holdout": draw(
            st.one_of(
                garbage, st.fixed_dictionaries({"id": garbage, "exclusion_percentage": garbage})
            )
        ),
        "aggregation_group_type_index": draw(garbage),
        "bucketing_identifier": draw(garbage),
    }
    return {
        "key": key,
        "id": draw(garbage),
        "version": draw(garbage),
        "active": draw(st.one_of(st.just(True), garbage)),
        "ensure_experience_continuity": draw(garbage),
        "filters": draw(st.one_of(st.just(filters), garbage)),
    }


def with_huge_ints(value: Any) -> Any:
    if isinstance(value, str):
        return HUGE_VALUES.get(value, value)
    if isinstance(value, (list, tuple)):
        return type(value)(with_huge_ints(v) for v in value)
    if isinstance(value, dict):
        return {k: with_huge_ints(v) for k, v in value.items()}
    return value


GOOD = {
    "key": "good",
    "active": True,
    "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]},
}


@given(
    flags=st.lists(st.integers(0, 3), max_size=4).flatmap(
        lambda ns: st.tuples(*(malformed_flag(f"bad-{i}") for i in range(len(ns))))
    ),
    cohorts=st.dictionaries(
        st.sampled_from(["1", "2", "9" * 50]),
        st.one_of(
            garbage,
            st.fixed_dictionaries(
                {
                    "type": st.sampled_from(["AND", "OR"]),
                    "values": st.lists(property_filter(), max_size=3),
                }
            ),
        ),
        max_size=2,
    ),
    person=st.dictionaries(st.sampled_from(["p", "q"]), garbage, max_size=2),
    mapping=st.one_of(st.just({"0": "company"}), garbage),
)
def test_malformed_definitions_never_fail_the_load_or_other_flags(flags, cohorts, person, mapping):
    flags, cohorts, person, mapping = (
        with_huge_ints(flags),
        with_huge_ints(cohorts),
        with_huge_ints(person),
        with_huge_ints(mapping),
    )
    defs = Definitions.from_response(
        {"flags": [*flags, GOOD], "cohorts": cohorts, "group_type_mapping": mapping}
    )
    assert len(defs) == len(flags) + 1
    results, unresolved = evaluate(defs, "user-1", person_properties=person)
    assert results["good"].value is True
    keys = {f["key"] for f in flags}
    assert set(results) | set(unresolved) == keys | {"good"}
    assert not set(results) & set(unresolved)
    for key, reason in unresolved.items():
        assert isinstance(reason, str) and reason, key
