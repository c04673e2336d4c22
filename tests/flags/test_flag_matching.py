"""Hand-written cases for phactor.flags.matching and phactor.flags.definitions."""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
import threading
from typing import Any

import pytest

from phactor.flags import Definitions, bucket_hash, evaluate, reason_category


def flag(key: str = "f", *conditions: dict[str, Any], **filters: Any) -> dict[str, Any]:
    return {
        "id": 7,
        "key": key,
        "version": 3,
        "active": True,
        "filters": {"groups": list(conditions), **filters},
    }


def cond(*props: dict[str, Any], rollout: Any = 100, **extra: Any) -> dict[str, Any]:
    return {"properties": list(props), "rollout_percentage": rollout, **extra}


def prop(key: str, value: Any, operator: str | None = "exact", **extra: Any) -> dict[str, Any]:
    p = {"key": key, "value": value, "type": "person", **extra}
    if operator is not None:
        p["operator"] = operator
    return p


def run(flags: list[dict[str, Any]], distinct_id: str = "user-1", **kwargs: Any):
    defs = Definitions.from_response(
        {
            "flags": flags,
            "cohorts": kwargs.pop("cohorts", {}),
            "group_type_mapping": kwargs.pop("mapping", {"0": "company"}),
        }
    )
    return evaluate(defs, distinct_id, **kwargs)


def value(flags: list[dict[str, Any]], key: str = "f", **kwargs: Any) -> Any:
    results, unresolved = run(flags, **kwargs)
    return results[key].value if key in results else ("unresolved", unresolved[key])


def test_hash_matches_the_protocol_formula():
    expected = int(hashlib.sha1(b"beta.user-1variant").hexdigest()[:15], 16) / 0xFFFFFFFFFFFFFFF
    assert bucket_hash("beta", "user-1", "variant") == expected
    assert (
        bucket_hash("beta", 42)
        == int(hashlib.sha1(b"beta.42").hexdigest()[:15], 16) / 0xFFFFFFFFFFFFFFF
    )


def test_result_carries_metadata_and_raw_payload():
    results, unresolved = run([flag("f", cond(), payloads={"true": '{"a": 1}'})])
    r = results["f"]
    assert (r.value, r.payload, r.flag_id, r.version, r.condition_index, r.locally_evaluated) == (
        True,
        '{"a": 1}',
        7,
        3,
        0,
        True,
    )
    assert unresolved == {}


@pytest.mark.parametrize(
    ("operator", "filter_value", "person_value", "expected"),
    [
        ("exact", "PRO", "pro", True),
        ("exact", ["free", "Pro"], "pro", True),
        ("exact", "pro", "free", False),
        ("is_not", "pro", "free", True),
        ("is_not", ["pro"], "PRO", False),
        (None, "pro", "pro", True),  # exact is the default
        ("exact", True, "true", True),
        ("exact", 12, 12, True),
        ("is_set", "", "anything", True),
        ("is_not_set", "", "anything", False),
        ("icontains", "EXAMPLE", "a@example.com", True),
        ("not_icontains", "example", "a@example.com", False),
        ("starts_with", "a@", "A@x", True),
        ("ends_with", ".COM", "a@x.com", True),
        ("regex", "^pro$", "pro", True),
        ("not_regex", "^pro$", "pro", False),
        ("gt", 18, 25, True),
        ("gt", "18", "25", True),
        ("gte", 18, 18, True),
        ("lt", 18, "abc", False),  # a non-number property never matches a numeric filter
        ("lte", 1.5, 1.5, True),
        ("is_date_before", "2023-06-01", "2023-05-31", True),
        ("is_date_after", "2023-06-01T00:00:00Z", dt.datetime(2023, 6, 2), True),
        ("is_date_after", "-7d", dt.datetime.now(dt.UTC) - dt.timedelta(days=1), True),
        ("is_date_before", "-2w", "2000-01-01", True),
        ("is_date_after", "-1m", "2000-01-01", False),
        ("is_date_after", "-1y", dt.date(2999, 1, 1), True),
        ("is_date_before", "-6h", dt.datetime.now(dt.UTC), False),
        ("semver_eq", "1.2.3", "v1.2.3", True),
        ("semver_neq", "1.2.3", "1.2.4", True),
        ("semver_gt", "1.2.3", "1.10.0", True),
        ("semver_gte", "1.2", "1.2.0", True),
        ("semver_lt", "2.0.0", "1.99.99", True),
        ("semver_lte", "1.2.3", "1.2.3-beta", True),  # pre-release suffixes are dropped
        ("semver_tilde", "1.2.3", "1.2.9", True),
        ("semver_tilde", "1.2.3", "1.3.0", False),
        ("semver_caret", "0.2.3", "0.2.9", True),
        ("semver_caret", "0.2.3", "0.3.0", False),
        ("semver_wildcard", "1.2.*", "1.2.7", True),
        ("semver_wildcard", "1.*", "2.0.0", False),
    ],
)
def test_operators(operator, filter_value, person_value, expected):
    flags = [flag("f", cond(prop("p", filter_value, operator)))]
    assert value(flags, person_properties={"p": person_value}) is expected


@pytest.mark.parametrize(
    ("operator", "filter_value", "person_value", "reason"),
    [
        ("exact", "pro", None, None),  # present but None: compared as "null", a decided False
        ("gt", "ten", 5, "invalid_filter_value:p"),
        ("semver_gt", "1.2.3", "not-a-version", "invalid_property_value:p"),
        ("is_date_before", "2023-01-01", "garbage", "invalid_property_value:p"),
        ("is_date_before", "nope", "2023-01-01", "invalid_filter_value:p"),
        (
            "regex",
            "(?=x)",
            "x",
            "unsupported_regex:p",
        ),  # look-around reads differently on the server
        ("foo", "x", "x", "unknown_operator:foo"),
    ],
)
def test_inconclusive_operators(operator, filter_value, person_value, reason):
    flags = [flag("f", cond(prop("p", filter_value, operator)))]
    got = value(flags, person_properties={"p": person_value})
    assert got == (False if reason is None else ("unresolved", reason))


def test_missing_property_is_unresolved_with_its_name():
    assert value([flag("f", cond(prop("email", "x")))]) == ("unresolved", "missing_property:email")
    assert reason_category("missing_property:email") == "missing_context"


def test_an_unusable_filter_outranks_a_missing_property():
    flags = [flag("f", cond(prop("age", "ten", "gt")))]
    assert value(flags) == ("unresolved", "invalid_filter_value:age")


def test_invalid_regex_never_matches_like_posthog():
    # posthog treats regex syntax Python cannot compile as a definite non-match (for regex and
    # not_regex alike), not as inconclusive; we agree with it rather than sending it remote.
    assert (
        value([flag("f", cond(prop("p", "(unclosed", "regex")))], person_properties={"p": "x"})
        is False
    )
    assert (
        value([flag("f", cond(prop("p", "(unclosed", "not_regex")))], person_properties={"p": "x"})
        is False
    )


def test_distinct_id_is_a_person_property_unless_given():
    flags = [flag("f", cond(prop("distinct_id", "user-1")))]
    assert value(flags) is True
    assert value(flags, person_properties={"distinct_id": "other"}) is False


def test_group_flags():
    group_flag = flag("g", cond(prop("$group_key", "acme")), aggregation_group_type_index=0)
    # No group passed: a decided False (the server would say the same).
    assert value([group_flag], "g") is False
    assert run([group_flag])[0]["g"].reason == "group_not_passed"
    # $group_key is added to the group's properties.
    assert value([group_flag], "g", groups={"company": "acme"}) is True
    assert (
        value(
            [group_flag], "g", groups={"company": "initech"}, group_properties={"company": {"x": 1}}
        )
        is False
    )
    # An index missing from group_type_mapping cannot be evaluated locally.
    assert value([group_flag], "g", groups={"company": "acme"}, mapping={}) == (
        "unresolved",
        "unknown_group_type:0",
    )


def test_group_rollout_buckets_by_group_key():
    group_flag = flag("g", cond(rollout=50), aggregation_group_type_index=0)
    outcomes = {
        value([group_flag], "g", distinct_id=f"u{i}", groups={"company": "acme"}) for i in range(30)
    }
    assert len(outcomes) == 1  # same group, any user -> same bucket
    expected = bucket_hash("g", "acme") <= 0.5
    assert outcomes == {expected}


def test_rollout_and_variants():
    variants = {
        "variants": [{"key": "a", "rollout_percentage": 50}, {"key": "b", "rollout_percentage": 50}]
    }
    f = flag("f", cond(rollout=100), multivariate=variants, payloads={"a": '"pa"', "b": '"pb"'})
    for i in range(20):
        did = f"user-{i}"
        results, _ = run([f], did)
        expected = "a" if bucket_hash("f", did, "variant") < 0.5 else "b"
        assert results["f"].value == expected
        assert results["f"].payload == f'"p{expected}"'
    off = flag("f", cond(rollout=0))
    assert value([off]) is False


def test_condition_variant_override_wins_when_valid():
    variants = {
        "variants": [{"key": "a", "rollout_percentage": 100}, {"key": "b", "rollout_percentage": 0}]
    }
    assert value([flag("f", cond(variant="b"), multivariate=variants)]) == "b"
    assert value([flag("f", cond(variant="zzz"), multivariate=variants)]) == "a"


def test_inactive_flags_are_false_and_continuity_is_unresolved():
    inactive = {**flag("f", cond()), "active": False}
    assert value([inactive]) is False
    continuity = {**flag("f", cond()), "ensure_experience_continuity": True}
    assert value([continuity]) == ("unresolved", "ensure_experience_continuity")


def test_holdout():
    held = flag("f", cond(), holdout={"id": 4, "exclusion_percentage": 100})
    assert value([held]) == "holdout-4"
    none_held = flag("f", cond(), holdout={"id": 4, "exclusion_percentage": 0})
    assert value([none_held]) is True


COHORTS = {
    "1": {
        "type": "OR",
        "values": [
            {"type": "AND", "values": [prop("plan", "pro"), prop("country", "DE", negation=True)]},
            prop("email", "@staff", "icontains"),
        ],
    },
    "2": {"type": "AND", "values": [{"key": "id", "type": "cohort", "value": 1, "negation": True}]},
}


@pytest.mark.parametrize(
    ("person", "in_1"),
    [
        ({"plan": "pro", "country": "FR", "email": "x"}, True),
        ({"plan": "pro", "country": "DE", "email": "x"}, False),
        ({"plan": "free", "country": "DE", "email": "a@staff"}, True),
    ],
)
def test_nested_cohorts_with_negation(person, in_1):
    in_flag = flag("in", cond({"key": "id", "type": "cohort", "value": 1, "operator": "in"}))
    not_in_flag = flag(
        "out", cond({"key": "id", "type": "cohort", "value": 1, "operator": "not_in"})
    )
    negated = flag("neg", cond({"key": "id", "type": "cohort", "value": 2}))
    results, _ = run([in_flag, not_in_flag, negated], cohorts=COHORTS, person_properties=person)
    assert results["in"].value is in_1
    assert results["out"].value is (not in_1)
    assert results["neg"].value is (not in_1)


def test_static_cohort_is_unresolved_even_if_a_later_condition_matches():
    f = flag("f", cond({"key": "id", "type": "cohort", "value": 99}), cond())
    assert value([f], cohorts=COHORTS) == ("unresolved", "static_cohort:99")


def test_flag_dependencies():
    base = flag("base", cond(prop("plan", "pro")))
    dependent = flag(
        "dep",
        cond(
            {
                "key": "base",
                "type": "flag",
                "operator": "flag_evaluates_to",
                "value": True,
                "dependency_chain": ["base"],
            }
        ),
    )
    assert value([base, dependent], "dep", person_properties={"plan": "pro"}) is True
    assert value([base, dependent], "dep", person_properties={"plan": "free"}) is False
    assert value([base, dependent], "dep") == ("unresolved", "unresolved_dependency:base")
    assert value([dependent], "dep") == ("unresolved", "missing_dependency:base")
    circular = flag(
        "dep",
        cond(
            {
                "key": "dep",
                "type": "flag",
                "operator": "flag_evaluates_to",
                "value": True,
                "dependency_chain": [],
            }
        ),
    )
    assert value([circular], "dep") == ("unresolved", "circular_dependency:dep")


def test_malformed_flags_only_affect_themselves():
    good = flag("good", cond())
    broken = [
        {"key": "filters-list", "active": True, "filters": ["nope"]},
        {"key": "groups-dict", "active": True, "filters": {"groups": {"a": 1}}},
        {
            "key": "variant-no-key",
            "active": True,
            "filters": {
                "groups": [cond()],
                "multivariate": {"variants": [{"rollout_percentage": 100}]},
            },
        },
        {"key": "rollout-text", "active": True, "filters": {"groups": [cond(rollout="fifty")]}},
        {"key": "bad-prop", "active": True, "filters": {"groups": [cond("not-an-object")]}},
    ]
    results, unresolved = run([*broken, "not a flag", {"no": "key"}, good])
    assert results["good"].value is True
    assert unresolved == {b["key"]: "malformed_definition" for b in broken}


def test_unknown_requested_keys_are_reported():
    # posthog leaves these out of unresolved_flags; we name them so the caller can ask the server.
    results, unresolved = run([flag("f", cond())], flag_keys=["f", "nope"])
    assert list(results) == ["f"]
    assert unresolved == {"nope": "unknown_flag"}
    assert run([flag("f", cond())], flag_keys=[]) == ({}, {})


def test_non_string_variant_keys_read_as_true():
    # posthog returns the raw key (e.g. 5) from get_feature_flag; phactor values are bool|str.
    f = flag("f", cond(), multivariate={"variants": [{"key": 5, "rollout_percentage": 100}]})
    assert value([f]) is True


def test_wrong_argument_types_raise():
    defs = Definitions.empty()
    with pytest.raises(TypeError):
        evaluate(defs, 123)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        evaluate(defs, "u", person_properties=["x"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        evaluate(defs, "u", flag_keys="f")


def test_definitions_are_immutable_and_tolerate_garbage():
    defs = Definitions.from_response(
        {"flags": [flag("f", cond())], "cohorts": "x", "group_type_mapping": None}
    )
    with pytest.raises(AttributeError):
        defs.flags = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        defs.group_type_mapping["0"] = "x"  # type: ignore[index]
    assert "f" in defs and len(defs) == 1
    assert len(Definitions.from_response(None)) == 0
    assert len(Definitions.from_response({"flags": "nope"})) == 0


def _diamond_cohorts(depth: int, leaf: dict[str, Any]) -> dict[str, Any]:
    """Cohort i is in cohort i+1 twice (AND): 2**depth paths to the leaf cohort."""
    cohorts: dict[str, Any] = {str(depth): {"type": "AND", "values": [leaf]}}
    for i in range(depth - 1, -1, -1):
        ref = {"key": "id", "type": "cohort", "value": i + 1}
        cohorts[str(i)] = {"type": "AND", "values": [ref, dict(ref)]}
    return cohorts


@pytest.mark.parametrize("plan", ["pro", "free", None])
def test_a_diamond_cohort_graph_is_decided_once_per_cohort(plan):
    # Each cohort refers to the next one twice, 30 levels deep: without memoising each cohort
    # per evaluation this walks 2**30 paths (depth 23 took 7 s). Bounded in a thread.
    cohorts = _diamond_cohorts(30, prop("plan", "pro"))
    diamond = flag("diamond", cond({"key": "id", "type": "cohort", "value": 0, "operator": "in"}))
    direct = flag("direct", cond({"key": "id", "type": "cohort", "value": 30, "operator": "in"}))
    person = {} if plan is None else {"plan": plan}
    outcome: list[Any] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            run([diamond, direct], cohorts=cohorts, person_properties=person)
        ),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=5)
    assert outcome, "a diamond cohort graph of depth 30 did not evaluate within 5 s"
    results, unresolved = outcome[0]
    if plan is None:
        assert unresolved == {"diamond": "missing_property:plan", "direct": "missing_property:plan"}
    else:
        assert results["diamond"].value is results["direct"].value is (plan == "pro")


def test_a_cohort_cycle_is_still_malformed():
    cycle = {
        "1": {"type": "AND", "values": [{"key": "id", "type": "cohort", "value": 2}]},
        "2": {"type": "OR", "values": [{"key": "id", "type": "cohort", "value": 1}]},
    }
    f = flag("f", cond({"key": "id", "type": "cohort", "value": 1}))
    assert value([f], cohorts=cycle) == ("unresolved", "malformed_definition")


HUGE = "9" * (sys.get_int_max_str_digits() + 1)


@pytest.mark.parametrize(
    ("operator", "filter_value"),
    [
        ("semver_eq", HUGE),
        ("semver_gt", f"1.{HUGE}.0"),
        ("semver_tilde", HUGE),
        ("semver_caret", f"0.0.{HUGE}"),
        ("semver_wildcard", f"{HUGE}.*"),
        ("is_date_before", f"-{HUGE}d"),
        ("is_date_after", f"{HUGE}h"),
        ("exact", int(HUGE[:-1]) * 10 + 9),  # an int str() refuses to render
        ("icontains", [int(HUGE[:-1]) * 10 + 9]),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else type(v).__name__,
)
def test_a_value_past_the_int_string_limit_only_affects_its_flag(operator, filter_value):
    # int() of more than sys.get_int_max_str_digits() digits raises ValueError; that used to
    # fail the whole definitions load, so every flag lost local evaluation.
    bad = flag("bad", cond(prop("p", filter_value, operator)))
    results, unresolved = run([bad, flag("good", cond())], person_properties={"p": "1.2.3"})
    assert results["good"].value is True
    assert unresolved == {"bad": "invalid_filter_value:p"}


def test_a_person_value_past_the_int_string_limit_is_an_invalid_property_value():
    f = flag("f", cond(prop("p", "1.2.3", "semver_gt")))
    assert value([f], person_properties={"p": HUGE}) == ("unresolved", "invalid_property_value:p")
