"""The FlagEvaluator against a real loopback server: background load, polling, ETag, failures."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import StartInstance, wait_until

import phactor
from phactor.devserver import DevServer

PERSONAL_KEY = "phx_personal_test_key"

ROLLED_OUT = {
    "id": 1,
    "key": "rolled-out",
    "active": True,
    "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]},
}
SECOND = {
    "id": 2,
    "key": "second",
    "active": True,
    "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]},
}


@pytest.fixture
def server() -> Iterator[DevServer]:
    s = DevServer(flag_definitions=[ROLLED_OUT], personal_api_key=PERSONAL_KEY).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def started(start_instance: StartInstance) -> Any:
    def start(server: DevServer, **options: Any) -> phactor.Instance:
        config = {
            "api_key": "phc_test",
            "host": server.url,
            "personal_api_key": PERSONAL_KEY,
            "enable_error_tracking": False,
            "poll_interval": 60.0,
        }
        config.update(options)
        return start_instance(**config)

    return start


def local_keys(inst: phactor.Instance) -> list[str]:
    return inst.evaluate_flags("user-1", only_evaluate_locally=True).keys()


def definition_requests(server: DevServer) -> list[Any]:
    return [r for r in server.requests if r.endpoint == "definitions"]


def test_definitions_load_in_the_background_at_start(server, started):
    server.delay(1.0, endpoint="definitions")
    inst = started(server)
    # start() returned while the definitions request is still held by the server.
    assert inst.children()["flags"] is True
    assert local_keys(inst) == []
    assert wait_until(lambda: local_keys(inst) == ["rolled-out"], timeout=5)
    first = definition_requests(server)[0]
    assert first.path == "/flags/definitions"
    assert first.headers["authorization"] == f"Bearer {PERSONAL_KEY}"
    assert first.query["token"] == "phc_test"
    assert "send_cohorts" in first.query


def test_polling_uses_etag_and_picks_up_changes(server, started):
    inst = started(server, poll_interval=0.2)
    assert server.wait_for_requests(3, timeout=5, endpoint="definitions")
    requests = definition_requests(server)
    assert "if-none-match" not in requests[0].headers
    assert requests[0].status == 200
    assert all(r.status == 304 and r.headers.get("if-none-match") for r in requests[1:3])
    assert local_keys(inst) == ["rolled-out"]

    server.set_flag_definitions([ROLLED_OUT, SECOND])
    assert wait_until(lambda: local_keys(inst) == ["rolled-out", "second"], timeout=5)


def test_reload_blocks_until_loaded(server, started):
    server.delay(0.3, endpoint="definitions")
    inst = started(server)
    assert inst.reload_feature_flags() is True
    assert local_keys(inst) == ["rolled-out"]
    server.set_flag_definitions([SECOND])
    assert inst.reload_feature_flags() is True
    assert local_keys(inst) == ["second"]  # swapped whole, never merged


def test_401_clears_definitions_with_a_clear_log_line(server, started, caplog):
    inst = started(server)
    assert inst.reload_feature_flags() is True
    server.fail_next(1, 401, endpoint="definitions")
    with caplog.at_level(logging.ERROR, logger="phactor.flags"):
        assert inst.reload_feature_flags() is False
    assert local_keys(inst) == []
    ev = inst.evaluate_flags("user-1", flag_keys=["rolled-out"], only_evaluate_locally=True)
    assert ev.unresolved == {"rolled-out": "definitions_not_loaded"}
    lines = [
        r.getMessage() for r in caplog.records if "flag_definitions_unauthorized" in r.getMessage()
    ]
    assert len(lines) == 1
    assert "personal_api_key rejected" in lines[0] and "cleared" in lines[0]
    assert PERSONAL_KEY not in lines[0]
    # The ETag went with the definitions: the next load is a full one.
    assert inst.reload_feature_flags() is True
    assert "if-none-match" not in definition_requests(server)[-1].headers
    assert local_keys(inst) == ["rolled-out"]


def test_402_clears_too(server, started):
    inst = started(server)
    assert inst.reload_feature_flags() is True
    server.fail_next(1, 402, endpoint="definitions")
    assert inst.reload_feature_flags() is False
    assert local_keys(inst) == []


@pytest.mark.parametrize("fault", ["500", "drop", "not_json", "no_flags_list"])
def test_other_errors_keep_the_last_good_set(server, started, fault):
    inst = started(server)
    assert inst.reload_feature_flags() is True
    server.set_flag_definitions([SECOND])  # new ETag, so the faulty answer is not a 304
    if fault == "500":
        server.fail_next(1, 500, endpoint="definitions")
    elif fault == "drop":
        server.drop_next(1, endpoint="definitions")
    elif fault == "not_json":
        server.fail_next(1, 200, body="{not json", endpoint="definitions")
    else:
        server.fail_next(1, 200, body='{"flags": {"a": 1}}', endpoint="definitions")
    assert inst.reload_feature_flags() is False
    assert local_keys(inst) == ["rolled-out"]
    assert inst.reload_feature_flags() is True
    assert local_keys(inst) == ["second"]


def test_404_falls_back_to_the_legacy_path_and_stays_there(server, started):
    server.fail_next(1, 404, endpoint="definitions")
    inst = started(server)
    assert inst.reload_feature_flags() is True
    assert local_keys(inst) == ["rolled-out"]
    paths = [r.path for r in definition_requests(server)]
    assert paths[:2] == ["/flags/definitions", "/api/feature_flag/local_evaluation/"]
    assert all(p == "/api/feature_flag/local_evaluation/" for p in paths[1:])
    assert len(paths) >= 3  # reload after the background load, still on the legacy path


def test_a_crashed_evaluator_restarts_without_dropping_definitions(server, started):
    inst = started(server)
    assert inst.reload_feature_flags() is True
    server.set_mode("down")  # the new incarnation cannot fetch them again
    before = server.request_count("definitions")
    inst._crash_child("flags")
    assert local_keys(inst) == ["rolled-out"]
    # The new incarnation tries to load at once (and fails against the down server).
    assert server.wait_for_requests(before + 1, timeout=5, endpoint="definitions")
    assert wait_until(lambda: inst.children().get("flags") is True)
    assert inst.stats()["restarts"] >= 1
    assert local_keys(inst) == ["rolled-out"]
    server.set_mode("up")
    assert inst.reload_feature_flags() is True


def test_malformed_definitions_only_affect_that_flag(server, started):
    bad_operator = {
        "id": 3,
        "key": "bad-operator",
        "active": True,
        "filters": {
            "groups": [
                {
                    "properties": [{"key": "x", "value": 1, "operator": "nope", "type": "person"}],
                    "rollout_percentage": 100,
                }
            ]
        },
    }
    server.set_flag_definitions([bad_operator, "not a flag", {"key": "no-filters"}, ROLLED_OUT])
    inst = started(server)
    assert inst.reload_feature_flags() is True
    ev = inst.evaluate_flags("user-1", person_properties={"x": 1}, only_evaluate_locally=True)
    assert ev.get_flag("rolled-out") is True
    assert ev.get_flag("bad-operator") is None
    assert "bad-operator" in ev.unresolved
    assert inst.children()["flags"] is True


def test_no_evaluator_without_personal_key_or_test_flags(server, started, instance_name):
    inst = started(server, personal_api_key=None)
    assert "flags" not in inst.children()
    assert inst.reload_feature_flags() is False
    assert server.request_count("definitions") == 0
    test = phactor.start(f"{instance_name}-tm", test_mode=True, enable_error_tracking=False)
    try:
        assert "flags" not in test.children()
    finally:
        test.stop(timeout=2)


def test_stop_cancels_polling(server, started):
    inst = started(server, poll_interval=0.1)
    assert server.wait_for_requests(2, timeout=5, endpoint="definitions")
    inst.stop(timeout=2)
    after_stop = server.request_count("definitions")
    # Several poll intervals later, nothing more arrived (bounded wait on a condition that
    # must stay false).
    assert not server.wait_for_requests(after_stop + 1, timeout=0.5, endpoint="definitions")


def test_a_value_past_the_int_string_limit_only_affects_its_flag(server, started, caplog):
    # A semver or relative date with more digits than sys.get_int_max_str_digits() used to raise
    # ValueError while compiling, failing the whole load: every flag lost local evaluation.
    huge = "9" * (sys.get_int_max_str_digits() + 1)

    def gated(key: str, operator: str, value: str) -> dict[str, Any]:
        prop = {"key": "v", "value": value, "operator": operator, "type": "person"}
        return {
            "id": 9,
            "key": key,
            "active": True,
            "filters": {"groups": [{"properties": [prop], "rollout_percentage": 100}]},
        }

    server.set_flag_definitions(
        [
            gated("huge-semver", "semver_gt", huge),
            gated("huge-date", "is_date_after", f"-{huge}d"),
            ROLLED_OUT,
            SECOND,
        ]
    )
    inst = started(server)
    with caplog.at_level(logging.WARNING):
        assert inst.reload_feature_flags() is True
    ev = inst.evaluate_flags("user-1", person_properties={"v": "1.2.3"}, only_evaluate_locally=True)
    assert ev.get_flag("rolled-out") is True and ev.get_flag("second") is True
    assert ev.unresolved == {
        "huge-semver": "invalid_filter_value:v",
        "huge-date": "invalid_filter_value:v",
    }
    assert "flag_load_failed" not in caplog.text
    assert inst.children()["flags"] is True
