"""Flag evaluation through an Instance: local first, one remote request, events, test mode."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import StartInstance

import phactor
import phactor.testing
from phactor import api as flag_api
from phactor.devserver import DevServer
from phactor.flags import FlagEvaluations

PERSONAL_KEY = "phx_personal_test_key"

LOCAL = {
    "id": 1,
    "key": "local",
    "version": 4,
    "active": True,
    "filters": {
        "groups": [{"properties": [], "rollout_percentage": 100}],
        "payloads": {"true": '{"color": "blue"}'},
    },
}
NEEDS_EMAIL = {
    "id": 2,
    "key": "needs-email",
    "active": True,
    "filters": {
        "groups": [
            {
                "properties": [
                    {"key": "email", "value": "a@b.c", "operator": "exact", "type": "person"}
                ],
                "rollout_percentage": 100,
            }
        ]
    },
}
OFF = {
    "id": 3,
    "key": "off",
    "active": False,
    "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]},
}


@pytest.fixture
def server() -> Iterator[DevServer]:
    s = DevServer(
        flags={"needs-email": True, "remote-only": "variant-r", "local": False},
        flag_payloads={"remote-only": {"n": 1}},
        flag_definitions=[LOCAL, NEEDS_EMAIL, OFF],
        personal_api_key=PERSONAL_KEY,
    ).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def started(start_instance: StartInstance) -> Any:
    def start(server: DevServer | None = None, **options: Any) -> phactor.Instance:
        config: dict[str, Any] = {"enable_error_tracking": False, "poll_interval": 60.0}
        if server is not None:
            config.update(api_key="phc_test", host=server.url, personal_api_key=PERSONAL_KEY)
        config.update(options)
        inst = start_instance(**config)
        if config.get("personal_api_key") and not config.get("test_mode"):
            assert inst.reload_feature_flags() is True
        return inst

    return start


def flag_requests(server: DevServer) -> list[Any]:
    return [r for r in server.requests if r.endpoint == "flags"]


def called_events(inst: phactor.Instance, server: DevServer) -> list[dict[str, Any]]:
    assert inst.flush(timeout=5)
    return [e["properties"] for e in server.events(event="$feature_flag_called")]


# --- local and remote -----------------------------------------------------------------------


def test_local_only_when_everything_is_decided(server, started):
    inst = started(server)
    ev = inst.evaluate_flags("user-1", person_properties={"email": "a@b.c"})
    assert ev.get_flag("local") is True  # the server would say False: this came from local
    assert ev.get_flag("needs-email") is True
    assert ev.get_flag("off") is False
    assert ev.keys() == ["local", "needs-email", "off"]
    assert ev.get_flag_payload("local") == {"color": "blue"}
    assert flag_requests(server) == []


def test_inconclusive_flags_go_remote_in_exactly_one_request(server, started):
    inst = started(server)
    ev = inst.evaluate_flags("user-1")
    assert len(flag_requests(server)) == 1
    body = flag_requests(server)[0].body
    assert body["flag_keys_to_evaluate"] == ["needs-email"]
    assert body["distinct_id"] == "user-1"
    assert body["person_properties"] == {"distinct_id": "user-1"}
    assert flag_requests(server)[0].query == {"v": "2"}
    assert ev.get_flag("needs-email") is True
    assert ev.get_result("needs-email").locally_evaluated is False
    assert ev.get_flag("local") is True  # the local value is not replaced by the server's
    assert ev.request_id
    assert dict(ev.unresolved) == {}

    ev = inst.evaluate_flags("user-1", flag_keys=["local", "remote-only", "missing"])
    assert len(flag_requests(server)) == 2
    assert sorted(flag_requests(server)[1].body["flag_keys_to_evaluate"]) == [
        "missing",
        "remote-only",
    ]
    assert ev.get_flag("remote-only") == "variant-r"
    assert ev.get_flag_payload("remote-only") == {"n": 1}
    assert ev.unresolved == {"missing": "flag_missing"}


def test_only_evaluate_locally_never_asks_the_server(server, started):
    inst = started(server)
    ev = inst.evaluate_flags("user-1", only_evaluate_locally=True)
    assert ev.get_flag("needs-email") is None
    assert ev.unresolved["needs-email"].startswith("missing_property")
    assert inst.get_feature_flag("needs-email", "user-1", only_evaluate_locally=True) is None
    assert inst.get_all_flags("user-1", only_evaluate_locally=True) == {
        "local": True,
        "off": False,
    }
    assert flag_requests(server) == []


def test_without_definitions_everything_is_remote(server, started):
    inst = started(server, personal_api_key=None)
    ev = inst.evaluate_flags("user-1")
    assert len(flag_requests(server)) == 1
    assert "flag_keys_to_evaluate" not in flag_requests(server)[0].body
    assert ev.get_flag("local") is False  # the server's answer
    assert ev.get_flag("remote-only") == "variant-r"
    ev = inst.evaluate_flags("user-1", only_evaluate_locally=True, flag_keys=["local"])
    assert ev.unresolved == {"local": "definitions_not_loaded"}
    assert len(flag_requests(server)) == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ('{"quotaLimited": ["feature_flags"], "flags": {}}', "quota_limited"),
        ("{definitely not json", "malformed_response"),
        ('{"flags": ["not", "a", "mapping"]}', "malformed_response"),
        (500, "api_error_500"),
    ],
)
def test_remote_failures_give_none_with_a_reason(server, started, fault, reason, caplog):
    inst = started(server)
    if isinstance(fault, int):
        server.fail_next(1, fault, endpoint="flags")
    else:
        server.fail_next(1, 200, body=fault, endpoint="flags")
    with caplog.at_level("WARNING", logger="phactor.flags"):
        ev = inst.evaluate_flags("user-1")
    assert len(flag_requests(server)) == 1  # not retried
    assert ev.get_flag("needs-email") is None
    assert ev.unresolved == {"needs-email": reason}
    assert ev.get_flag("local") is True  # local values survive a failed remote call
    assert any(reason in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fault", ["502", "504", "drop"])
def test_one_retry_on_transport_errors_and_gateway_statuses(server, started, fault):
    inst = started(server)
    if fault == "drop":
        server.drop_next(1, endpoint="flags")
    else:
        server.fail_next(1, int(fault), endpoint="flags")
    assert inst.get_feature_flag("needs-email", "user-1") is True
    assert len(flag_requests(server)) == 2


def test_a_second_failure_is_not_retried_again_and_times_out_quickly(server, started):
    inst = started(server, flags_request_timeout=0.2)
    server.delay(0.6, endpoint="flags")
    ev = inst.evaluate_flags("user-1", flag_keys=["needs-email"])
    assert ev.unresolved == {"needs-email": "timeout"}
    assert server.wait_for_requests(2, timeout=5, endpoint="flags")
    server.delay(0)
    server.fail_next(2, 502, endpoint="flags")
    ev = inst.evaluate_flags("user-1", flag_keys=["needs-email"])
    assert ev.unresolved == {"needs-email": "api_error_502"}


def test_distinct_id_comes_from_context(server, started):
    inst = started(server)
    with inst.context({"distinct_id": "ctx-user"}):
        ev = inst.evaluate_flags(person_properties={"email": "a@b.c"})
    assert ev.distinct_id == "ctx-user"
    assert ev.get_flag("needs-email") is True
    ev = inst.evaluate_flags(flag_keys=["local"])
    assert ev.keys() == [] and ev.unresolved == {"local": "missing_distinct_id"}
    assert flag_requests(server) == []


def test_wrong_argument_types_raise_type_error(server, started):
    inst = started(server)
    with pytest.raises(TypeError):
        inst.evaluate_flags(1.5)
    with pytest.raises(TypeError):
        inst.evaluate_flags("u", groups=["company"])
    with pytest.raises(TypeError):
        inst.evaluate_flags("u", person_properties="email")
    with pytest.raises(TypeError):
        inst.evaluate_flags("u", group_properties=3)
    with pytest.raises(TypeError):
        inst.evaluate_flags("u", flag_keys="local")
    with pytest.raises(TypeError):
        inst.evaluate_flags("u", flag_keys=[1])
    with pytest.raises(TypeError):
        inst.evaluate_flags("u", only_evaluate_locally="yes")
    with pytest.raises(TypeError):
        inst.get_feature_flag(None, "u")
    with pytest.raises(TypeError):
        inst.feature_enabled("local", "u", flag_keys=["x"])  # not an option of the helper
    # int and UUID ids are accepted, as the posthog package accepts them
    assert inst.get_feature_flag("local", 42) is True
    assert inst.get_feature_flag("local", uuid.uuid4()) is True


def test_posthog_style_helpers(server, started):
    inst = started(server)
    assert inst.feature_enabled("local", "u") is True
    assert inst.feature_enabled("off", "u") is False
    assert inst.feature_enabled("remote-only", "u") is True
    assert inst.feature_enabled("nope", "u") is None
    assert inst.get_feature_flag("remote-only", "u") == "variant-r"
    assert inst.get_feature_flag_payload("local", "u") == {"color": "blue"}
    assert inst.get_feature_flag_payload("off", "u") is None
    assert inst.get_all_flags("u", person_properties={"email": "a@b.c"}) == {
        "local": True,
        "needs-email": True,
        "off": False,
    }


def test_module_level_functions_pick_the_named_instance(server, started):
    inst = started(server)
    name = inst.name
    assert flag_api.feature_enabled("local", "u", instance=name) is True
    assert flag_api.get_feature_flag("remote-only", "u", instance=name) == "variant-r"
    assert flag_api.get_feature_flag_payload("local", "u", instance=name) == {"color": "blue"}
    assert flag_api.get_all_flags("u", only_evaluate_locally=True, instance=name) == {
        "local": True,
        "off": False,
    }
    assert flag_api.evaluate_flags("u", flag_keys=["local"], instance=name).keys() == ["local"]
    assert flag_api.reload_feature_flags(instance=name) is True
    # A name never started: the default, never raised (issue 12 #6).
    assert flag_api.evaluate_flags("u", instance=f"{name}-absent").keys() == []


# --- $feature_flag_called ---------------------------------------------------------------------


def test_feature_flag_called_properties_local_and_remote(server, started):
    inst = started(server)
    ev = inst.evaluate_flags("user-1", groups={"company": "acme"})
    assert ev.get_flag("local") is True
    assert ev.enabled("needs-email") is True
    ev.get_flag_payload("local")  # payload reads send nothing
    assert ev.get_flag("absent") is None
    events = {p["$feature_flag"]: p for p in called_events(inst, server)}
    assert set(events) == {"local", "needs-email", "absent"}
    local = events["local"]
    assert local["$feature_flag_response"] is True
    assert local["$feature/local"] is True
    assert local["locally_evaluated"] is True
    assert local["$feature_flag_id"] == 1
    assert local["$feature_flag_version"] == 4
    assert local["$feature_flag_reason"] == "condition_match"
    assert local["$feature_flag_payload"] == {"color": "blue"}
    assert local["$groups"] == {"company": "acme"}
    assert "$feature_flag_error" not in local
    remote = events["needs-email"]
    assert remote["locally_evaluated"] is False
    assert remote["$feature_flag_request_id"] == ev.request_id
    assert remote["$feature_flag_id"] == 1 and remote["$feature_flag_version"] == 1
    absent = events["absent"]
    assert absent["$feature_flag_response"] is None
    assert absent["$feature_flag_error"] == "flag_missing"
    raw = server.events(event="$feature_flag_called")[0]
    assert raw["distinct_id"] == "user-1"


def test_feature_flag_called_is_deduplicated_per_user_key_and_response(started):
    inst = started(test_mode=True, flags={"beta": True, "exp": "variant-a"})
    for _ in range(3):
        inst.get_feature_flag("beta", "u1")
        inst.feature_enabled("beta", "u1")
        inst.evaluate_flags("u1").enabled("beta")
    inst.get_feature_flag("beta", "u2")
    inst.get_feature_flag("exp", "u1")
    inst.get_feature_flag_payload("exp", "u3")
    inst.get_feature_flag("beta", "u4", send_feature_flag_events=False)
    events = [e for e in phactor.testing.events(inst.name) if e["event"] == "$feature_flag_called"]
    seen = [(e["distinct_id"], e["properties"]["$feature_flag"]) for e in events]
    assert sorted(seen) == [("u1", "beta"), ("u1", "exp"), ("u2", "beta")]


def test_feature_flag_called_cache_is_bounded(started):
    inst = started(test_mode=True, flags={"a": True, "b": True, "c": True},
                   feature_flag_called_cache_size=2)  # fmt: skip
    for key in ("a", "b", "c", "a"):  # "a" was evicted by "c", so it is reported again
        inst.get_feature_flag(key, "u1")
    inst.get_feature_flag("a", "u1")  # now "a" is recent
    events = [
        e["properties"]["$feature_flag"]
        for e in phactor.testing.events(inst.name)
        if e["event"] == "$feature_flag_called"
    ]
    assert events == ["a", "b", "c", "a"]


def test_a_new_response_is_reported_again(server, started):
    inst = started(server, personal_api_key=None)
    assert inst.get_feature_flag("remote-only", "u") == "variant-r"
    assert inst.get_feature_flag("remote-only", "u") == "variant-r"
    server.set_flags({"remote-only": "variant-s"})
    assert inst.get_feature_flag("remote-only", "u") == "variant-s"
    responses = [p["$feature_flag_response"] for p in called_events(inst, server)]
    assert responses == ["variant-r", "variant-s"]


# --- flags on events ------------------------------------------------------------------------


def test_snapshot_in_context_tags_later_events_without_requests(server, started):
    inst = started(server)
    ev = inst.evaluate_flags("user-1", person_properties={"email": "a@b.c"})
    requests_before = len(server.requests)
    with inst.context(ev):
        inst.capture("in_block", "user-1")
    inst.capture("after_block", "user-1")
    inst.set_context(ev.only(["off"]))
    inst.capture("with_off_only", "user-1")
    assert inst.flush(timeout=5)
    flags_and_definitions = [
        r for r in server.requests[requests_before:] if r.endpoint in ("flags", "definitions")
    ]
    assert flags_and_definitions == []
    props = server.events(event="in_block")[0]["properties"]
    assert props["$feature/local"] is True
    assert props["$feature/off"] is False
    assert props["$active_feature_flags"] == ["local", "needs-email"]
    assert "$feature/local" not in server.events(event="after_block")[0]["properties"]
    off_only = server.events(event="with_off_only")[0]["properties"]
    assert off_only["$feature/off"] is False and "$active_feature_flags" not in off_only
    assert server.events(event="$feature_flag_called") == []  # nothing was read


def test_send_feature_flags_is_local_once_definitions_are_loaded(server, started):
    inst = started(server)
    inst.capture("signed_up", "user-1", send_feature_flags=True)
    assert inst.flush(timeout=5)
    props = server.events(event="signed_up")[0]["properties"]
    assert props["$feature/local"] is True
    assert props["$feature/off"] is False
    assert "$feature/needs-email" not in props  # undecided locally; no request for it
    assert props["$active_feature_flags"] == ["local"]
    assert flag_requests(server) == []


def test_send_feature_flags_without_definitions_makes_one_request(server, started):
    inst = started(server, personal_api_key=None)
    inst.capture("signed_up", "user-1", send_feature_flags=True, groups={"company": "acme"})
    assert inst.flush(timeout=5)
    assert len(flag_requests(server)) == 1
    assert flag_requests(server)[0].body["groups"] == {"company": "acme"}
    props = server.events(event="signed_up")[0]["properties"]
    assert props["$feature/remote-only"] == "variant-r"
    assert props["$feature/local"] is False
    assert props["$active_feature_flags"] == ["needs-email", "remote-only"]


def test_send_feature_flags_survives_a_failing_server(server, started):
    inst = started(server, personal_api_key=None)
    server.fail_next(2, 503, endpoint="flags")
    assert inst.capture("signed_up", "user-1", send_feature_flags=True) is not None
    assert inst.flush(timeout=5)
    props = server.events(event="signed_up")[0]["properties"]
    assert not any(k.startswith("$feature") for k in props)


# --- test mode ------------------------------------------------------------------------------


def test_test_mode_flags_from_a_dict(started):
    inst = started(
        test_mode=True,
        flags={"beta": True, "exp": "variant-a", "gone": False,
               "rich": {"value": "v2", "payload": {"limit": 3}}},
    )  # fmt: skip
    assert "flags" in inst.children()
    ev = inst.evaluate_flags("u1")
    assert ev.get_flag("beta") is True
    assert ev.get_flag("exp") == "variant-a"
    assert ev.enabled("gone") is False
    assert ev.get_flag_payload("rich") == {"limit": 3}
    assert inst.get_all_flags("u1") == {
        "beta": True,
        "exp": "variant-a",
        "gone": False,
        "rich": "v2",
    }
    assert inst.evaluate_flags("u1", flag_keys=["beta", "nope"]).unresolved == {
        "nope": "flag_missing"
    }
    assert inst.reload_feature_flags() is True
    inst.capture("e", "u1", send_feature_flags=True)
    event = next(e for e in phactor.testing.events(inst.name) if e["event"] == "e")
    assert event["properties"]["$active_feature_flags"] == ["beta", "exp", "rich"]


def test_test_mode_flags_from_a_file_and_reload(started, tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(json.dumps({"beta": True}))
    inst = started(test_mode=True, flags=str(path))
    assert inst.get_feature_flag("beta", "u1") is True
    path.write_text(json.dumps({"beta": "now-a-variant"}))
    assert inst.reload_feature_flags() is True
    assert inst.get_feature_flag("beta", "u1") == "now-a-variant"
    path.write_text("{broken")
    assert inst.reload_feature_flags() is False
    assert inst.get_feature_flag("beta", "u1") == "now-a-variant"  # last good values kept


def test_test_mode_never_touches_the_network(server, started):
    inst = started(server, test_mode=True)
    ev = inst.evaluate_flags("u1", flag_keys=["beta"])
    assert ev.unresolved == {"beta": "test_mode"}
    assert inst.get_all_flags("u1") == {}
    assert "flags" not in inst.children()
    assert inst.reload_feature_flags() is False
    assert server.requests == []


def test_instances_are_isolated(started):
    one = started(test_mode=True, flags={"beta": True})
    two = started(test_mode=True, flags={"beta": "other"})
    assert one.get_feature_flag("beta", "u") is True
    assert two.get_feature_flag("beta", "u") == "other"
    assert one.get_feature_flag("beta", "u") is True
    for inst in (one, two):  # each instance deduplicates on its own
        events = [
            e for e in phactor.testing.events(inst.name) if e["event"] == "$feature_flag_called"
        ]
        assert len(events) == 1


def test_evaluations_are_immutable_snapshots(server, started):
    inst = started(server)
    ev = inst.evaluate_flags("user-1", only_evaluate_locally=True)
    assert isinstance(ev, FlagEvaluations)
    server.set_flag_definitions([OFF])
    assert inst.reload_feature_flags() is True
    assert ev.get_flag("local") is True  # taken before the swap: unchanged
    assert inst.evaluate_flags("user-1", only_evaluate_locally=True).keys() == ["off"]


def test_disabled_instance_answers_without_work(started):
    inst = started(disabled=True)
    assert inst.evaluate_flags("u").keys() == []
    assert inst.get_feature_flag("x", "u") is None
    assert inst.reload_feature_flags() is False
