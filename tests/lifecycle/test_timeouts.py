"""The `timeout` argument of stop() and flush(): a bad value is refused before anything happens."""

from __future__ import annotations

import math
import threading
import time
from fractions import Fraction
from typing import Any

import pytest
from conftest import StartInstance, assert_ledger
from hypothesis import given
from hypothesis import strategies as st

import phactor
from phactor.devserver import DevServer

#: Not a number of seconds: TypeError.
WRONG_TYPE = ["5", b"5", True, False, object(), [5], 1j]
#: A number, but not a duration: ValueError.
WRONG_VALUE = [math.nan, -1, -0.001, -math.inf]


def _bounded(call: Any, seconds: float = 10.0) -> Any:
    """Run `call` in a thread; fail (instead of hanging the suite) when it does not return."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{call} did not return within {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.mark.parametrize("how", ["instance", "module"])
def test_stop_with_a_bad_timeout_leaves_the_instance_running_and_a_later_stop_delivers(
    devserver: DevServer, start_instance: StartInstance, how: str
) -> None:
    inst = start_instance(api_key="phc_k", host=devserver.url, flush_interval=3600.0)
    name = inst.name
    captured = 0
    cases = [(bad, TypeError) for bad in WRONG_TYPE] + [(bad, ValueError) for bad in WRONG_VALUE]
    for bad, expected in cases:
        inst.capture("before", "u")
        captured += 1
        with pytest.raises(expected, match="timeout"):
            if how == "instance":
                inst.stop(bad)
            else:
                phactor.stop(name, timeout=bad)
        assert name in phactor.instances()
        assert phactor.instance(name) is inst and inst.running
    inst.capture("after", "u")
    captured += 1
    assert _bounded(lambda: phactor.stop(name, timeout=5.0))
    assert devserver.count() == captured
    stats = assert_ledger(inst)
    assert stats["sent"] == captured


def test_flush_with_a_bad_timeout_raises_at_the_call_and_changes_nothing(
    start_instance: StartInstance,
) -> None:
    inst = start_instance(test_mode=True, flush_interval=3600.0)
    inst.capture("queued", "u")
    before = inst.stats()

    @given(
        bad=st.one_of(
            st.floats(max_value=-1e-300),
            st.just(math.nan),
            st.text(),
            st.binary(),
            st.booleans(),
            st.builds(object),
            st.lists(st.integers(), max_size=2),
        )
    )
    def check(bad: Any) -> None:
        with pytest.raises((TypeError, ValueError), match="timeout"):
            inst.flush(bad)
        with pytest.raises((TypeError, ValueError), match="timeout"):
            phactor.flush(bad, instance=inst.name)
        assert inst.stats() == before
        assert inst.running

    check()
    assert _bounded(lambda: inst.flush(5.0))
    assert inst.stats()["sent"] == 1


def test_stop_with_inf_waits_without_deadline_and_delivers(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    inst = start_instance(api_key="phc_k", host=devserver.url, flush_interval=3600.0)
    for i in range(50):
        inst.capture("e", f"u{i}")
    began = time.monotonic()
    assert _bounded(lambda: inst.stop(math.inf))
    assert time.monotonic() - began < 5.0
    assert devserver.count() == 50
    assert not inst.running and inst.name not in phactor.instances()


def test_flush_with_inf_is_flush_without_a_timeout(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    inst = start_instance(api_key="phc_k", host=devserver.url, flush_interval=3600.0)
    inst.capture("e", "u")
    assert _bounded(lambda: inst.flush(math.inf))
    assert _bounded(lambda: inst.flush(10**30))  # past what a thread can wait: no deadline
    assert _bounded(lambda: inst.flush(Fraction(5)))  # any real number of seconds
    assert devserver.count() == 1


def test_stop_with_inf_against_a_dead_endpoint_still_ends(start_instance: StartInstance) -> None:
    """No deadline is not 'for ever': retries run out, the rest is counted `shutdown`."""
    with DevServer() as server:
        url = server.url
    inst = start_instance(
        api_key="phc_k",
        host=url,  # nothing listens there any more
        flush_interval=3600.0,
        max_retries=1,
        retry_base_delay=0.01,
        retry_max_delay=0.01,
        request_timeout=1.0,
    )
    inst.capture("e", "u")
    assert _bounded(lambda: inst.stop(math.inf)) is False
    stats = assert_ledger(inst)
    assert stats["queued"] == stats["in_flight"] == 0
    assert sum(stats["dropped"].values()) == 1
