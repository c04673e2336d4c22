"""Flags while PostHog is down: the `/flags` circuit breaker, the last-known-value cache,
`strict_local=True` and `stats()["flags"]`, against a real loopback DevServer in its fault modes
(down, slow, flapping)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from conftest import StartInstance, wait_until

import phactor
from phactor.devserver import DevServer

ON = {
    "id": 1,
    "key": "local-on",
    "active": True,
    "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]},
}
# Needs the server: experience continuity cannot be decided locally.
CONTINUITY = {
    "id": 2,
    "key": "sticky",
    "active": True,
    "ensure_experience_continuity": True,
    "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]},
}


@pytest.fixture
def started(start_instance: StartInstance, devserver: DevServer) -> Any:
    def start(**options: Any) -> phactor.Instance:
        config: dict[str, Any] = {
            "api_key": "phc_outage",
            "host": devserver.url,
            "enable_error_tracking": False,
            "flags_request_timeout": 0.3,
            "retry_max_delay": 60.0,  # a cool-down longer than any test here
        }
        config.update(options)
        return start_instance(**config)

    return start


def _in_thread(work: Any, timeout: float) -> Any:
    """Run `work()` on a thread, joined with `timeout`: a call that hangs fails, not stalls."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as error:  # re-raised on the test thread
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"did not finish within {timeout} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _open_breaker(inst: phactor.Instance) -> None:
    for n in range(5):
        inst.get_feature_flag("remote", f"opener-{n}", send_feature_flag_events=False)
        if inst.stats()["flags"]["breaker"] == "open":
            return
    raise AssertionError("the /flags breaker never opened")


@pytest.mark.parametrize("fault", ["down", "slow"])
def test_100_calls_with_flags_down_are_fast_and_answer_from_the_last_known_values(
    devserver: DevServer, started: Any, fault: str
) -> None:
    devserver.set_flags({"remote": "variant-a"})
    inst = started()
    for n in range(50):  # users 0..49 have a last known value
        assert inst.get_feature_flag("remote", f"user-{n}") == "variant-a"
    if fault == "down":
        devserver.set_mode("down")
    else:
        devserver.delay(30.0, endpoint="flags")  # far past flags_request_timeout
    _open_breaker(inst)
    # 50 answered, then the two failed calls that opened the breaker, each with its one retry.
    assert devserver.wait_for_arrivals(54, endpoint="flags")

    def hundred_calls() -> tuple[list[Any], float]:
        started_at = time.perf_counter()
        values = [inst.get_feature_flag("remote", f"user-{n}") for n in range(100)]
        return values, time.perf_counter() - started_at

    # Before the breaker, each call waited for its request (and one retry): tens of seconds.
    values, elapsed = _in_thread(hundred_calls, timeout=20.0)
    assert elapsed < 1.0, f"100 calls took {elapsed:.2f} s with the breaker open"
    assert values[:50] == ["variant-a"] * 50  # from the cache
    assert values[50:] == [None] * 50  # no value ever seen: None, as before
    # At most one probe (a call: its request and one retry) went to the server.
    assert not devserver.wait_for_arrivals(57, timeout=0.2, endpoint="flags")
    figures = inst.stats()["flags"]
    assert figures["breaker"] == "open"
    assert figures["remote_failures"] >= 2
    assert figures["remote_requests"] >= 52
    devserver.reset_faults()


def test_a_cached_value_says_so_in_its_reason_and_on_feature_flag_called(
    devserver: DevServer, started: Any
) -> None:
    devserver.set_flags({"remote": True})
    inst = started()
    assert inst.get_feature_flag("remote", "u1", send_feature_flag_events=False) is True
    devserver.set_mode("error", status=503)
    _open_breaker(inst)
    result = inst.get_feature_flag_result("remote", "u1")
    assert result is not None and result.enabled and result.reason == "last_known_value"
    evaluations = inst.evaluate_flags("u1", flag_keys=["remote", "never-seen"])
    assert evaluations.is_enabled("remote")
    assert evaluations.unresolved == {"never-seen": "breaker_open"}
    devserver.reset_faults()
    assert inst.flush(timeout=5)
    called = [
        e["properties"]
        for e in devserver.events()
        if e["event"] == "$feature_flag_called" and e["distinct_id"] == "u1"
    ]
    assert called and called[-1]["$feature_flag_reason"] == "last_known_value"
    assert called[-1]["$feature_flag_response"] is True


def test_flapping_flags_the_breaker_probes_after_its_cool_down_and_closes(
    devserver: DevServer, started: Any
) -> None:
    devserver.set_flags({"remote": "on-server"})
    inst = started(retry_max_delay=0.5)  # cool-down at most MIN_COOL_DOWN (1 s)
    assert inst.get_feature_flag("remote", "u") == "on-server"
    devserver.fail_next(2, status=500, endpoint="flags")
    _open_breaker(inst)
    before = devserver.request_count("flags")
    # Open: answered at once from the cache, no request.
    assert inst.get_feature_flag_result("remote", "u").reason == "last_known_value"
    assert devserver.request_count("flags") == before
    # After the cool-down one probe goes; the server answers again, so the breaker closes.
    assert wait_until(
        lambda: inst.get_feature_flag_result("remote", "u").reason != "last_known_value",
        timeout=5.0,
    )
    assert inst.stats()["flags"]["breaker"] == "closed"
    # And flapping again opens it again.
    devserver.fail_next(4, status=502, endpoint="flags")  # 502: retried once inside a call
    _open_breaker(inst)
    assert inst.get_feature_flag("remote", "u") == "on-server"


def test_one_failure_does_not_open_the_breaker(devserver: DevServer, started: Any) -> None:
    devserver.set_flags({"remote": True})
    inst = started()
    devserver.fail_next(1, status=500, endpoint="flags")
    assert inst.get_feature_flag("remote", "u") is None  # no value known: None
    assert inst.stats()["flags"]["breaker"] == "closed"
    assert inst.get_feature_flag("remote", "u") is True


def test_the_cache_can_be_turned_off_and_ages_out(devserver: DevServer, started: Any) -> None:
    devserver.set_flags({"remote": True})
    off = started(flags_cache_size=0)
    aged = started(flags_cache_ttl=0.0)
    for inst in (off, aged):
        assert inst.get_feature_flag("remote", "u") is True
    devserver.set_mode("error", status=500)
    for inst in (off, aged):
        _open_breaker(inst)
        assert inst.get_feature_flag("remote", "u") is None
    devserver.reset_faults()


def test_strict_local_never_calls_flags_and_logs_each_flag_once(
    devserver: DevServer, started: Any, caplog: pytest.LogCaptureFixture
) -> None:
    devserver.set_flags({"sticky": True, "remote": True})
    devserver.set_flag_definitions([ON, CONTINUITY])
    inst = started(personal_api_key="phx_personal", strict_local=True)
    assert inst.reload_feature_flags(timeout=5)
    with caplog.at_level("WARNING", logger="phactor.flags"):
        for _ in range(3):
            assert inst.get_feature_flag("local-on", "u") is True
            assert inst.get_feature_flag("sticky", "u") is None
            evaluations = inst.evaluate_flags("u")
            assert evaluations.unresolved == {"sticky": "ensure_experience_continuity"}
    assert devserver.request_count("flags") == 0
    lines = [r.getMessage() for r in caplog.records if "flag_needs_server" in r.getMessage()]
    assert len(lines) == 1 and "sticky" in lines[0] and "ensure_experience_continuity" in lines[0]


def test_strict_local_without_definitions_is_none_with_a_reason(
    devserver: DevServer, started: Any
) -> None:
    devserver.set_flags({"remote": True})
    inst = started(strict_local=True)
    assert inst.get_feature_flag("remote", "u") is None
    assert inst.evaluate_flags("u", flag_keys=["remote"]).unresolved == {
        "remote": "definitions_not_loaded"
    }
    assert devserver.request_count("flags") == 0


def test_stats_flags_figures(devserver: DevServer, started: Any) -> None:
    devserver.set_flag_definitions([ON])
    devserver.set_flags({"remote": True})
    inst = started(personal_api_key="phx_personal")
    assert inst.reload_feature_flags(timeout=5)
    figures = inst.stats()["flags"]
    assert set(figures) == {
        "definitions_loaded_at",
        "definitions_etag_age_s",
        "remote_requests",
        "remote_failures",
        "breaker",
    }
    assert abs(figures["definitions_loaded_at"] - time.time()) < 60
    assert 0 <= figures["definitions_etag_age_s"] < 60
    assert (figures["remote_requests"], figures["remote_failures"]) == (0, 0)
    assert figures["breaker"] == "closed"
    inst.get_feature_flag("remote", "u")
    assert inst.stats()["flags"]["remote_requests"] == 1
    # The delivery ledger is unchanged by the new key.
    stats = inst.stats()
    assert (
        stats["captured"]
        == stats["sent"] + sum(stats["dropped"].values()) + stats["queued"] + stats["in_flight"]
    )


def test_stats_flags_before_any_flag_call(started: Any) -> None:
    figures = started().stats()["flags"]
    assert figures["breaker"] == "closed" and figures["remote_requests"] == 0
    assert figures["definitions_loaded_at"] is None


def test_a_last_known_value_is_per_user_and_groups(devserver: DevServer, started: Any) -> None:
    # A group flag's value depends on the group: company "b" must not be answered with what the
    # server said for company "a" (nor a call without groups with what it said within one).
    devserver.set_flags({"remote": "variant-a"})
    inst = started()
    assert inst.get_feature_flag("remote", "u", groups={"company": "a", "team": "x"}) == "variant-a"
    devserver.set_mode("down")
    _open_breaker(inst)
    same = inst.get_feature_flag("remote", "u", groups={"team": "x", "company": "a"})
    assert same == "variant-a"  # the same groups, in any order: from the cache
    assert inst.get_feature_flag("remote", "u", groups={"company": "b", "team": "x"}) is None
    assert inst.get_feature_flag("remote", "u") is None
    devserver.reset_faults()
