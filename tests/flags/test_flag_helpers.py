"""The posthog package's flag helpers, on a real loopback endpoint, with the posthog package as
the oracle where it helps: get_all_flags_and_payloads, get_feature_flag_result (one
`$feature_flag_called`), get_feature_flag_payload(match_value=), device_id= reaching local
evaluation, FlagEvaluations.is_enabled, capture(flags=snapshot)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import posthog
import pytest
from conftest import StartInstance
from hypothesis import given
from hypothesis import strategies as st

import phactor
from phactor.devserver import DevServer
from phactor.flags import FeatureFlagResult

# The posthog package (the oracle here) deprecates its per-flag helpers in favour of
# evaluate_flags; phactor keeps them (API.md).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PERSONAL_KEY = "phx_personal_helpers_key"
VARIANTS = {
    "id": 7,
    "key": "colour",
    "version": 2,
    "active": True,
    "filters": {
        "groups": [{"properties": [], "rollout_percentage": 100}],
        "multivariate": {
            "variants": [
                {"key": "red", "rollout_percentage": 50},
                {"key": "blue", "rollout_percentage": 50},
            ]
        },
        "payloads": {"red": '{"hex": "#f00"}', "blue": '{"hex": "#00f"}'},
    },
}
BY_DEVICE = {
    "id": 8,
    "key": "by-device",
    "active": True,
    "bucketing_identifier": "device_id",
    "filters": {"groups": [{"properties": [], "rollout_percentage": 50}]},
}
BOOLEAN = {
    "id": 9,
    "key": "on",
    "active": True,
    "filters": {
        "groups": [{"properties": [], "rollout_percentage": 100}],
        "payloads": {"true": '{"n": 1}', "false": '"off"'},
    },
}
REMOTE_FLAGS = {"remote-on": True, "remote-variant": "b", "remote-off": False}
REMOTE_PAYLOADS = {"remote-variant": {"k": [1, 2]}, "remote-on": "text"}


@pytest.fixture
def remote() -> Iterator[DevServer]:
    with DevServer(flags=REMOTE_FLAGS, flag_payloads=REMOTE_PAYLOADS) as server:
        yield server


@pytest.fixture
def local() -> Iterator[DevServer]:
    with DevServer(
        flag_definitions=[VARIANTS, BY_DEVICE, BOOLEAN], personal_api_key=PERSONAL_KEY
    ) as server:
        yield server


def _reference(server: DevServer, **options: Any) -> posthog.Client:
    return posthog.Client("phc_reference", host=server.url, sync_mode=True, **options)


def test_get_all_flags_and_payloads_as_posthog(
    remote: DevServer, start_instance: StartInstance
) -> None:
    client = _reference(remote)
    try:
        expected = client.get_all_flags_and_payloads("u1")
    finally:
        client.shutdown()
    inst = start_instance(api_key="phc_ours", host=remote.url, enable_error_tracking=False)
    ours = inst.get_all_flags_and_payloads("u1")
    assert ours == expected
    assert phactor.get_all_flags_and_payloads("u1", instance=inst.name) == expected


def test_get_feature_flag_result_as_posthog_and_reported_once(
    remote: DevServer, start_instance: StartInstance
) -> None:
    client = _reference(remote)
    try:
        expected = {k: client.get_feature_flag_result(k, "u1") for k in REMOTE_FLAGS}
    finally:
        client.shutdown()
    remote.clear()
    inst = start_instance(api_key="phc_ours", host=remote.url, enable_error_tracking=False)
    for key, theirs in expected.items():
        for _ in range(3):
            ours = inst.get_feature_flag_result(key, "u1")
            assert isinstance(ours, FeatureFlagResult)
            assert theirs is not None
            assert (ours.key, ours.enabled, ours.variant, ours.payload) == (
                theirs.key,
                theirs.enabled,
                theirs.variant,
                theirs.payload,
            )
            assert ours.get_value() == theirs.get_value()
    assert inst.get_feature_flag_result("missing", "u1") is None
    assert inst.flush(timeout=5)
    called = [e["properties"] for e in remote.events(event="$feature_flag_called")]
    assert sorted(p["$feature_flag"] for p in called) == sorted([*REMOTE_FLAGS, "missing"])


def test_match_value_payload_as_posthog(local: DevServer, start_instance: StartInstance) -> None:
    client = _reference(local, personal_api_key=PERSONAL_KEY)
    try:
        client.load_feature_flags()
        expected = {
            (key, match): client.get_feature_flag_payload(key, "u1", match_value=match)
            for key, match in [
                ("colour", "red"),
                ("colour", "blue"),
                ("colour", None),
                ("on", True),
                ("on", False),
                ("on", None),
            ]
        }
    finally:
        client.shutdown()
    inst = start_instance(
        api_key="phc_ours",
        host=local.url,
        personal_api_key=PERSONAL_KEY,
        enable_error_tracking=False,
    )
    assert inst.reload_feature_flags() is True
    for (key, match), theirs in expected.items():
        assert inst.get_feature_flag_payload(key, "u1", match_value=match) == theirs, (key, match)
    with pytest.raises(TypeError, match="match_value"):
        inst.get_feature_flag_payload("on", "u1", match_value=1)


def test_device_id_reaches_local_evaluation_as_in_posthog(
    local: DevServer, start_instance: StartInstance
) -> None:
    inst = start_instance(
        api_key="phc_ours",
        host=local.url,
        personal_api_key=PERSONAL_KEY,
        enable_error_tracking=False,
    )
    assert inst.reload_feature_flags() is True
    client = _reference(local, personal_api_key=PERSONAL_KEY)
    client.load_feature_flags()
    try:

        @given(device_id=st.text(min_size=1, max_size=16), distinct_id=st.text(min_size=1))
        def run(device_id: str, distinct_id: str) -> None:
            theirs = client.get_feature_flag(
                "by-device",
                distinct_id,
                device_id=device_id,
                only_evaluate_locally=True,
                send_feature_flag_events=False,
            )
            ours = inst.get_feature_flag(
                "by-device",
                distinct_id,
                device_id=device_id,
                only_evaluate_locally=True,
                send_feature_flag_events=False,
            )
            assert ours == theirs
            flags = inst.evaluate_flags(distinct_id, device_id=device_id, flag_keys=["by-device"])
            assert flags.get_flag("by-device") == theirs

        run()
    finally:
        client.shutdown()
    # Without a device id a device-bucketed flag cannot be decided locally.
    assert inst.get_feature_flag("by-device", "u1", only_evaluate_locally=True) is None
    with pytest.raises(TypeError, match="device_id"):
        inst.get_feature_flag("on", "u1", device_id=["d"])


def test_flag_evaluations_is_enabled_is_enabled(
    remote: DevServer, start_instance: StartInstance
) -> None:
    inst = start_instance(api_key="phc_ours", host=remote.url, enable_error_tracking=False)
    flags = inst.evaluate_flags("u1")
    for key in [*REMOTE_FLAGS, "missing"]:
        assert flags.is_enabled(key) == flags.enabled(key)
    assert flags.is_enabled("missing", True) is True


def test_capture_with_a_flags_snapshot_sends_its_properties_without_a_request(
    remote: DevServer, start_instance: StartInstance
) -> None:
    inst = start_instance(api_key="phc_ours", host=remote.url, enable_error_tracking=False)
    flags = inst.evaluate_flags("u1")
    requests_before = remote.request_count("flags")
    inst.capture("e", "u1", {"a": 1}, flags=flags, send_feature_flags=True)
    phactor.capture("e2", "u1", flags=flags.only(["remote-variant"]), instance=inst.name)
    assert inst.flush(timeout=5)
    assert remote.request_count("flags") == requests_before
    first, second = (e["raw"]["properties"] for e in remote.events())
    assert first["$feature/remote-on"] is True
    assert first["$feature/remote-variant"] == "b"
    assert first["$feature/remote-off"] is False
    assert first["$active_feature_flags"] == ["remote-on", "remote-variant"]
    assert second["$feature/remote-variant"] == "b" and "$feature/remote-on" not in second
    with pytest.raises(TypeError, match="flags"):
        inst.capture("e", "u1", flags={"remote-on": True})


def test_capture_flags_snapshot_matches_posthog(
    remote: DevServer, start_instance: StartInstance
) -> None:
    with DevServer(flags=REMOTE_FLAGS, flag_payloads=REMOTE_PAYLOADS) as reference:
        client = _reference(reference)
        try:
            snapshot = client.evaluate_flags("u1")
            client.capture("e", distinct_id="u1", flags=snapshot)
        finally:
            client.shutdown()
        (theirs,) = reference.events(event="e")
    inst = start_instance(api_key="phc_ours", host=remote.url, sync_mode=True)
    inst.capture("e", "u1", flags=inst.evaluate_flags("u1"))
    (ours,) = remote.events(event="e")
    wanted = {k: v for k, v in theirs["raw"]["properties"].items() if k.startswith("$feature")}
    wanted["$active_feature_flags"] = theirs["raw"]["properties"]["$active_feature_flags"]
    got = {k: v for k, v in ours["raw"]["properties"].items() if k in wanted}
    assert json.dumps(got, sort_keys=True) == json.dumps(wanted, sort_keys=True)


def test_feature_flag_called_carries_evaluated_at_as_posthog(
    remote: DevServer, start_instance: StartInstance
) -> None:
    with DevServer(flags=REMOTE_FLAGS, flag_payloads=REMOTE_PAYLOADS) as reference:
        client = _reference(reference)
        try:
            client.get_feature_flag("remote-on", "u1")
        finally:
            client.shutdown()
        (theirs,) = reference.events(event="$feature_flag_called")
    inst = start_instance(api_key="phc_ours", host=remote.url, enable_error_tracking=False)
    inst.get_feature_flag("remote-on", "u1")
    inst.evaluate_flags("u2").enabled("remote-variant")
    inst.get_feature_flag("missing", "u3")
    assert inst.flush(timeout=5)
    events = remote.events(event="$feature_flag_called")
    assert len(events) == 3
    assert isinstance(theirs["raw"]["properties"]["$feature_flag_evaluated_at"], int)
    for event in events:
        value = event["raw"]["properties"]["$feature_flag_evaluated_at"]
        assert type(value) is int and value > 1_700_000_000_000
