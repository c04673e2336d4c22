"""Tests for phactor.flags.remote: /flags request bodies and response parsing (no HTTP)."""

from __future__ import annotations

import pytest

from phactor.flags import build_flags_request, decode_payload, parse_flags_response

V4 = {
    "flags": {
        "on": {
            "key": "on",
            "enabled": True,
            "variant": None,
            "reason": {"code": "condition_match", "condition_index": 0, "description": "Matched"},
            "metadata": {"id": 1, "version": 3, "payload": '{"a": 1}'},
        },
        "exp": {"key": "exp", "enabled": True, "variant": "b", "metadata": {"id": 2, "version": 1}},
        "off": {
            "key": "off",
            "enabled": False,
            "variant": None,
            "metadata": {"id": 3, "payload": '"x"'},
        },
        "typed": {"key": "typed", "value": "v", "metadata": {"id": 4, "payload": "[1]"}},
        "number": {"key": "number", "value": 5, "metadata": {"id": 5}},
        "failed": {"key": "failed", "enabled": False, "failed": True},
        "bad-id": {"key": "bad-id", "enabled": True, "metadata": {"id": "one"}},
        "not-a-record": [1, 2],
    },
    "errorsWhileComputingFlags": False,
    "requestId": "req-1",
    "evaluatedAt": 1700000000,
}


def test_v4_shape():
    parsed = parse_flags_response(V4, requested=["on", "missing"])
    r = parsed.results
    assert (
        r["on"].value,
        r["on"].payload,
        r["on"].reason,
        r["on"].condition_index,
        r["on"].flag_id,
        r["on"].version,
    ) == (
        True,
        '{"a": 1}',
        "condition_match",
        0,
        1,
        3,
    )
    assert r["on"].locally_evaluated is False
    assert r["exp"].value == "b"
    assert (r["off"].value, r["off"].payload) == (False, None)  # no payload for a disabled flag
    assert (r["typed"].value, decode_payload(r["typed"].payload)) == ("v", [1])
    assert (r["number"].value, decode_payload(r["number"].payload)) == (True, 5)
    assert parsed.unresolved == {
        "failed": "evaluation_failed",
        "bad-id": "malformed_record:metadata.id",
        "not-a-record": "malformed_record:record",
        "missing": "flag_missing",
    }
    assert (parsed.error, parsed.request_id, parsed.evaluated_at) == (None, "req-1", 1700000000)


def test_v1_shape():
    parsed = parse_flags_response(
        {
            "featureFlags": {"a": True, "b": "variant", "c": False, "d": 3},
            "featureFlagPayloads": {"a": "1", "c": "2"},
        }
    )
    assert {k: (v.value, v.payload) for k, v in parsed.results.items()} == {
        "a": (True, "1"),
        "b": ("variant", None),
        "c": (False, None),
    }
    assert parsed.unresolved == {"d": "malformed_record:value"}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (None, "malformed_response"),
        ("<html>", "malformed_response"),
        ({"flags": ["x"]}, "malformed_response"),
        ({"featureFlags": "x"}, "malformed_response"),
        ({"flags": {}, "quotaLimited": ["feature_flags"]}, "quota_limited"),
    ],
)
def test_unusable_responses_give_no_values_and_a_reason(body, error):
    parsed = parse_flags_response(body, requested=["a"])
    assert parsed.results == {}
    assert parsed.error == error
    assert parsed.unresolved == {"a": error}


def test_errors_while_computing_marks_missing_flags():
    parsed = parse_flags_response(
        {"flags": {"a": {"key": "a", "enabled": True}}, "errorsWhileComputingFlags": True},
        requested=["a", "b"],
    )
    assert parsed.results["a"].value is True
    assert parsed.unresolved == {"b": "errors_while_computing_flags"}
    assert parsed.error == "errors_while_computing_flags"


def test_request_body():
    body = build_flags_request(
        "phc_key",
        "user-1",
        groups={"company": "acme"},
        person_properties={"plan": "pro"},
        group_properties={"company": {"size": 10}, "ignored": {"x": 1}},
        flag_keys=["a", "b"],
    )
    assert body == {
        "api_key": "phc_key",
        "distinct_id": "user-1",
        "groups": {"company": "acme"},
        "person_properties": {"plan": "pro"},
        "group_properties": {"company": {"$group_key": "acme", "size": 10}},
        "geoip_disable": True,
        "evaluation_runtime": "server",
        "flag_keys_to_evaluate": ["a", "b"],
    }
    assert "flag_keys_to_evaluate" not in build_flags_request("k", "u")
