"""Differential test: phactor's local flag evaluation against the ``posthog`` package's.

Cases are generated from a seed (so hypothesis can shrink to a seed and a failure is replayable):
flag definitions covering every operator family, rollouts, variants and overrides, payloads,
holdouts, group flags, cohorts (nested, negated, static) and flag dependencies, plus person/group
properties and groups. Both evaluators run locally only; posthog's client is pointed at a closed
loopback port, has ``send=False`` and its request functions are replaced so it can never reach the
network. Agreement means: the same keys have values, with equal value and decoded payload; a flag
posthog leaves unresolved is unresolved here too, in the same coarse category.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import warnings
from typing import Any

import posthog.client as posthog_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phactor.flags import Definitions, decode_payload, evaluate, reason_category

KEYS = [
    "email",
    "plan",
    "age",
    "signup",
    "version",
    "country",
    "distinct_id",
    "$group_key",
    "name",
    "tags",
]
OPERATORS = [
    None,
    "exact",
    "is_not",
    "is_set",
    "is_not_set",
    "icontains",
    "not_icontains",
    "regex",
    "not_regex",
    "starts_with",
    "ends_with",
    "not_starts_with",
    "not_ends_with",
    "gt",
    "gte",
    "lt",
    "lte",
    "is_date_before",
    "is_date_after",
    "semver_eq",
    "semver_neq",
    "semver_gt",
    "semver_gte",
    "semver_lt",
    "semver_lte",
    "semver_tilde",
    "semver_caret",
    "semver_wildcard",
    "bogus_operator",
]
STRINGS = [
    "pro",
    "Pro",
    "free",
    "a@example.com",
    "B@Example.COM",
    "true",
    "FALSE",
    "",
    "ß",
    "Ünïcode",
    "12",
    "1.5",
]
REGEXES = [
    "^pro$",
    "example\\.com$",
    "[0-9]+",
    "(a|b)+",
    "^$",
    "",
    "(unclosed",
    "a**",
    "(?=x)",
    "\\bword",
    "\\w+@",
    "\\s",
    "[]",
    "(ab)+*",
    "x{2,3}",
    "\\d{1,}",
    "[a-z&&b]",
    "é.",
]
DATES = [
    "2023-06-01",
    "2023-06-01T12:00:00Z",
    "2020-01-01 10:00:00 UTC",
    "-7d",
    "-2w",
    "-1m",
    "-1y",
    "-6h",
    "2024",
    "nope",
    "-10000d",
    "-3x",
]
PERSON_DATES = [
    "2019-03-04",
    "2099-01-01T00:00:00+02:00",
    "2023-06-01T12:00:00Z",
    "2023-05-31",
    "garbage",
    dt.datetime(2022, 1, 1, 12, 0),
    dt.date(2030, 5, 5),
    dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
]
SEMVERS = [
    "1.2.3",
    "v1.2",
    "1",
    "0.2.3",
    "0.0.3",
    "1.2.*",
    "1.*",
    "01.2.3",
    "1.2.3-beta",
    "2.0.0+build",
    " 1.10.0 ",
    "x.y",
    "1.2.3.4",
]


def _filter_value(rng: random.Random, op: Any) -> Any:
    if op in ("regex", "not_regex"):
        return rng.choice(REGEXES)
    if op in ("gt", "gte", "lt", "lte"):
        return rng.choice([10, 0, -5, 2.5, "18", "1e3", "abc", True, None])
    if op in ("is_date_before", "is_date_after"):
        return rng.choice(DATES)
    if op and op.startswith("semver"):
        return rng.choice(SEMVERS)
    if op in ("exact", "is_not", None):
        return rng.choice(
            [
                rng.choice(STRINGS),
                [rng.choice(STRINGS), rng.choice(STRINGS)],
                True,
                False,
                ["true"],
                [],
                12,
                1.5,
                None,
            ]
        )
    return rng.choice([*STRINGS, 12, None, True])


def _person_value(rng: random.Random, key: str) -> Any:
    pools: dict[str, list[Any]] = {
        "age": [0, 17, 18, 25, 99.5, "18", "1e3", " 5", True, None, "abc", 1e20],
        "signup": PERSON_DATES,
        "version": [*SEMVERS, None, 3],
        "tags": [["a", "b"], [], ["true", True], {"k": 1}, (1, 2)],
    }
    pool = pools.get(key, [*STRINGS, None, 12, 1.5, True, False, 1e-07, ["pro"]])
    return rng.choice(pool)


def _property_filter(rng: random.Random) -> dict[str, Any]:
    op = rng.choice(OPERATORS)
    key = rng.choice(KEYS)
    f: dict[str, Any] = {
        "key": key,
        "value": _filter_value(rng, op),
        "type": rng.choice(["person", "group"]),
    }
    if op is not None:
        f["operator"] = op
    if rng.random() < 0.15:
        f["negation"] = True
    return f


def _cohort_group(rng: random.Random, depth: int, cohort_ids: list[str]) -> Any:
    if rng.random() < 0.05:
        return {}
    entries: list[Any] = []
    for _ in range(rng.randint(0, 3)):
        roll = rng.random()
        if roll < 0.2 and depth < 2:
            entries.append(_cohort_group(rng, depth + 1, cohort_ids))
        elif roll < 0.3 and cohort_ids:
            entries.append(
                {
                    "key": "id",
                    "type": "cohort",
                    "value": rng.choice(cohort_ids),
                    "negation": rng.random() < 0.3,
                }
            )
        elif roll < 0.33:
            entries.append("not-an-object")
        else:
            entries.append(_property_filter(rng))
    return {"type": rng.choice(["AND", "OR", "AND", "OR", "XOR"]), "values": entries}


def _flag(
    rng: random.Random,
    index: int,
    keys: list[str],
    chains: dict[str, list[str]],
    cohort_ids: list[str],
) -> dict[str, Any]:
    key = keys[index]
    variants = []
    if rng.random() < 0.4:
        names = rng.sample(["control", "test", "beta", "holdout"], rng.randint(2, 3))
        cuts = sorted(rng.sample(range(1, 100), len(names) - 1))
        pcts = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
        if rng.random() < 0.1:
            pcts[0] += 10  # over 100%: later ranges are unreachable
        variants = [{"key": n, "rollout_percentage": p} for n, p in zip(names, pcts, strict=True)]
    conditions = []
    own_deps: list[str] = []
    for _ in range(rng.randint(0, 3)):
        props: list[dict[str, Any]] = []
        for _ in range(rng.randint(0, 3)):
            roll = rng.random()
            if roll < 0.12 and cohort_ids:
                cid = rng.choice([*cohort_ids, "999"])
                props.append(
                    {
                        "key": "id",
                        "type": "cohort",
                        "value": int(cid) if cid.isdigit() else cid,
                        "operator": rng.choice(["in", "not_in", None, "bogus"]),
                    }
                )
            elif roll < 0.24 and index > 0:
                dep = keys[rng.randrange(index)] if rng.random() < 0.9 else "ghost-flag"
                chain = [*chains.get(dep, []), dep]
                prop: dict[str, Any] = {
                    "key": dep,
                    "type": "flag",
                    "operator": "flag_evaluates_to",
                    "value": rng.choice([True, False, "control", "test", None]),
                }
                shape = rng.random()
                if shape < 0.85:
                    prop["dependency_chain"] = chain
                elif shape < 0.92:
                    prop["dependency_chain"] = []
                own_deps.extend(c for c in chain if c not in own_deps)
                props.append(prop)
            else:
                props.append(_property_filter(rng))
        condition: dict[str, Any] = {
            "properties": props,
            "rollout_percentage": rng.choice([None, 0, 30, 50, 100, 100, 72.5]),
        }
        if variants and rng.random() < 0.3:
            condition["variant"] = rng.choice([v["key"] for v in variants] + ["not-a-variant"])
        if rng.random() < 0.1:
            condition["aggregation_group_type_index"] = rng.choice([0, 1, None, 7])
        conditions.append(condition)
    chains[key] = own_deps
    filters: dict[str, Any] = {"groups": conditions}
    if variants:
        filters["multivariate"] = {"variants": variants}
    payloads = {}
    for name in ["true", "false", *[v["key"] for v in variants]]:
        if rng.random() < 0.5:
            payloads[name] = rng.choice(
                [json.dumps({"n": name}), "[1,2]", '"s"', "not json", "NaN", "7"]
            )
    if payloads:
        filters["payloads"] = payloads
    if rng.random() < 0.2:
        filters["aggregation_group_type_index"] = rng.choice([0, 1, 1, 5])
    if rng.random() < 0.1:
        filters["holdout"] = {
            "id": rng.randint(1, 9),
            "exclusion_percentage": rng.choice([0, 10, 50, 100]),
        }
    if rng.random() < 0.1:
        filters["early_exit"] = True
    if rng.random() < 0.1:
        # Bucket rollouts and variants by device_id instead of distinct_id.
        filters["bucketing_identifier"] = rng.choice(["device_id", "distinct_id"])
    return {
        "id": index + 1,
        "key": key,
        "version": rng.randint(1, 5),
        "active": rng.random() < 0.9,
        "ensure_experience_continuity": rng.random() < 0.05,
        "filters": filters,
    }


def generate_case(seed: int) -> dict[str, Any]:
    """One generated scenario: definitions plus the evaluation inputs."""
    rng = random.Random(seed)
    cohort_ids = [str(i) for i in range(1, rng.randint(1, 4))]
    cohorts: dict[str, Any] = {}
    for i, cid in enumerate(cohort_ids):
        cohorts[cid] = _cohort_group(rng, 0, cohort_ids[:i])
    keys = [f"flag-{i}" for i in range(rng.randint(1, 4))]
    chains: dict[str, list[str]] = {}
    flags = [_flag(rng, i, keys, chains, cohort_ids) for i in range(len(keys))]
    person = {k: _person_value(rng, k) for k in rng.sample(KEYS, rng.randint(0, len(KEYS)))}
    distinct_id = rng.choice(["user-1", "user-2", "Ünïcode-id", "", f"u{rng.randint(0, 10**6)}"])
    groups: dict[str, Any] = {}
    group_props: dict[str, Any] = {}
    for name in ("company", "project"):
        if rng.random() < 0.5:
            groups[name] = rng.choice(["acme", "initech", 42, f"g{rng.randint(0, 999)}"])
            if rng.random() < 0.7:
                group_props[name] = {
                    k: _person_value(rng, k) for k in rng.sample(KEYS, rng.randint(0, 4))
                }
    flag_keys = None
    if rng.random() < 0.15:
        flag_keys = rng.sample(keys, rng.randint(1, len(keys)))
    definitions: dict[str, Any] = {
        "flags": flags,
        "cohorts": cohorts,
        "group_type_mapping": {"0": "company", "1": "project"},
    }
    if rng.random() < 0.3:
        # Version 2 changes how `exact`/`is_not` treat boolean-like values.
        definitions["property_matching_version"] = 2
    return {
        "definitions": definitions,
        "device_id": rng.choice([None, None, "device-1", f"d{rng.randint(0, 10**6)}"]),
        "distinct_id": distinct_id,
        "person": person,
        "groups": groups,
        "group_props": group_props,
        "flag_keys": flag_keys,
    }


def _no_network(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("posthog tried to reach the network")


@pytest.fixture(scope="module")
def oracle():
    """A posthog client that can only evaluate locally."""
    saved = {name: getattr(posthog_client, name) for name in ("flags", "get", "batch_post")}
    posthog_logger = logging.getLogger("posthog")
    saved_level = posthog_logger.level
    posthog_logger.setLevel(logging.CRITICAL)  # it warns on every unknown group type we generate
    for name in saved:
        setattr(posthog_client, name, _no_network)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = posthog_client.Client(
            "phc_test",
            host="http://127.0.0.1:9",
            personal_api_key="phx_test",
            send=False,
            sync_mode=True,
            enable_local_evaluation=False,
        )
    yield client
    for name, value in saved.items():
        setattr(posthog_client, name, value)
    posthog_logger.setLevel(saved_level)


def posthog_evaluate(client: Any, case: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """posthog's answer: key -> (value, decoded payload), and key -> unresolved category."""
    defs = case["definitions"]
    client.feature_flags = defs["flags"]
    client.cohorts = defs["cohorts"]
    client.group_type_mapping = defs["group_type_mapping"]
    client._property_matching_version = defs.get("property_matching_version", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = client.evaluate_flags(
            case["distinct_id"] or "anon",
            groups=case["groups"],
            person_properties=case["person"],
            group_properties=case["group_props"],
            flag_keys=case["flag_keys"],
            device_id=case["device_id"],
            only_evaluate_locally=True,
        )
    values = {}
    for key, record in ev._flags.items():
        value = (
            False
            if not record.enabled
            else (record.variant if record.variant is not None else True)
        )
        values[key] = (value, record.payload)
    return values, {k: v.value for k, v in ev.unresolved_flags.items()}


def phactor_evaluate(case: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """phactor's answer in the same shape."""
    defs = Definitions.from_response(case["definitions"])
    results, unresolved = evaluate(
        defs,
        case["distinct_id"] or "anon",
        groups=case["groups"],
        person_properties=case["person"],
        group_properties=case["group_props"],
        flag_keys=case["flag_keys"],
        device_id=case["device_id"],
    )
    values = {k: (r.value, decode_payload(r.payload)) for k, r in results.items()}
    return values, {k: reason_category(v) for k, v in unresolved.items()}


def mismatch_report(
    seed: int,
    case: dict[str, Any],
    got: dict[str, Any],
    expected: dict[str, Any],
    got_unresolved: dict[str, str],
) -> str:
    """Name each disagreeing flag with both answers and its own definition, so a failure is
    readable without replaying; ``compare(oracle, seed)`` replays it."""
    lines = [f"phactor and posthog disagree for seed={seed} (replay: compare(oracle, {seed}))"]
    flags = {f["key"]: f for f in case["definitions"]["flags"]}
    for key in sorted(set(got) | set(expected)):
        ours = got.get(key, f"<unresolved: {got_unresolved.get(key)}>")
        theirs = expected.get(key, "<unresolved>")
        if ours != theirs:
            lines.append(f"  flag {key!r}: phactor={ours!r} posthog={theirs!r}")
            lines.append(f"    definition: {json.dumps(flags.get(key), default=repr)[:1500]}")
    inputs = {k: case[k] for k in ("distinct_id", "device_id", "person", "groups", "group_props")}
    lines.append(f"  inputs: {json.dumps(inputs, default=repr)[:1500]}")
    lines.append(
        "  cohorts: "
        + json.dumps(case["definitions"]["cohorts"], default=repr)[:1500]
        + f" property_matching_version="
        f"{case['definitions'].get('property_matching_version', 1)}"
    )
    return "\n".join(lines)


def compare(client: Any, seed: int) -> None:
    case = generate_case(seed)
    expected, expected_unresolved = posthog_evaluate(client, case)
    got, got_unresolved = phactor_evaluate(case)
    if got != expected:
        raise AssertionError(mismatch_report(seed, case, got, expected, got_unresolved))
    context = json.dumps(case, default=repr)[:4000]
    # Both sides leave the same flags unresolved, in the same category. posthog omits a flag its
    # evaluator crashed on from unresolved_flags; we report it as "malformed_definition".
    crashed = {k for k in got_unresolved if k not in expected_unresolved and k not in expected}
    assert {k: v for k, v in got_unresolved.items() if k not in crashed} == expected_unresolved, (
        f"seed={seed}\n{context}\nours={got_unresolved}"
    )
    assert all(got_unresolved[k] == "unsupported_definition" for k in crashed)


def test_seeded_cases_agree(oracle):
    """5,000 fixed seeds: replayable as compare(oracle, seed)."""
    for seed in range(5000):
        compare(oracle, seed)


@settings(max_examples=3000, deadline=None)
@given(seed=st.integers(min_value=10_000, max_value=2**40))
def test_hypothesis_cases_agree(oracle, seed):
    compare(oracle, seed)


def test_generator_covers_every_family():
    """Guard against a generator change silently dropping an operator family."""
    seen_ops: set[Any] = set()
    kinds: set[str] = set()
    for seed in range(400):
        case = generate_case(seed)
        for flag in case["definitions"]["flags"]:
            filters = flag["filters"]
            if "multivariate" in filters:
                kinds.add("variants")
            if "aggregation_group_type_index" in filters:
                kinds.add("group")
            if "holdout" in filters:
                kinds.add("holdout")
            if "payloads" in filters:
                kinds.add("payloads")
            for cond in filters["groups"]:
                if "variant" in cond:
                    kinds.add("override")
                for p in cond["properties"]:
                    kinds.add(p["type"])
                    seen_ops.add(p.get("operator"))
    assert set(OPERATORS) <= seen_ops | {None}
    assert {
        "variants",
        "group",
        "holdout",
        "payloads",
        "override",
        "cohort",
        "flag",
        "person",
    } <= kinds


RELATIVE_DATES = [d for d in DATES if d.startswith("-") and d != "-3x"]


def _single_filter_case(rng: random.Random, op: str, relative: bool) -> dict[str, Any]:
    key = rng.choice(KEYS[:-2])
    value = rng.choice(RELATIVE_DATES) if relative else _filter_value(rng, op)
    group = rng.random() < 0.3
    prop = {"key": key, "value": value, "operator": op, "type": "group" if group else "person"}
    flag: dict[str, Any] = {
        "id": 1,
        "key": "f",
        "active": True,
        "filters": {"groups": [{"properties": [prop], "rollout_percentage": 100}]},
    }
    if group:
        flag["filters"]["aggregation_group_type_index"] = 0
    props = {key: _person_value(rng, key if rng.random() < 0.7 else rng.choice(KEYS))}
    return {
        "definitions": {"flags": [flag], "cohorts": {}, "group_type_mapping": {"0": "company"}},
        "device_id": None,
        "distinct_id": "user-1",
        "person": {} if group else props,
        "groups": {"company": "acme"} if group else {},
        "group_props": {"company": props} if group else {},
        "flag_keys": None,
    }


@pytest.mark.parametrize("relative", [False, True], ids=["any_value", "relative_dates"])
def test_every_operator_is_decided_both_ways_and_agrees(oracle, relative):
    """Agreement alone proves little if an operator is always inconclusive: each operator, on
    person and group properties, must come out True and False (decided locally) against posthog."""
    operators = (
        ["is_date_before", "is_date_after"]
        if relative
        else [op for op in OPERATORS if op not in (None, "bogus_operator")]
    )
    # A missing property is inconclusive, so a decided is_set is always True (is_not_set False).
    reachable = {"is_set": {True}, "is_not_set": {False}}
    rng = random.Random(4 if relative else 3)
    for op in operators:
        want = reachable.get(op, {True, False})
        outcomes: set[Any] = set()
        for i in range(300):
            case = _single_filter_case(rng, op, relative)
            expected, _ = posthog_evaluate(oracle, case)
            got, got_unresolved = phactor_evaluate(case)
            if got != expected:
                raise AssertionError(mismatch_report(i, case, got, expected, got_unresolved))
            if "f" in got:
                outcomes.add(got["f"][0])
            if outcomes == want:
                break
        assert outcomes == want, f"{op} was only ever {outcomes or 'inconclusive'}"
