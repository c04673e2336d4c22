"""test_mode, disabled, sync_mode and debug."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import assert_ledger

import phactor
import phactor.testing
from phactor.devserver import DevServer


def test_test_mode_keeps_events_and_never_touches_the_network(
    devserver: DevServer, instance_name: str
) -> None:
    inst = phactor.start(instance_name, test_mode=True, host=devserver.url, flush_at=3)
    uuids = [inst.capture("e", f"u{i}", {"i": i}) for i in range(7)]
    inst.identify("u1", {"email": "a@example.com"})
    events = phactor.testing.events(instance_name)
    # Two Senders deliver batches side by side: compare as sets, not by order.
    assert {e["uuid"] for e in events if e["event"] == "e"} == set(uuids)
    assert [e["event"] for e in events].count("$identify") == 1
    assert {e["properties"]["i"] for e in events if e["event"] == "e"} == set(range(7))
    assert all(
        set(e) >= {"event", "distinct_id", "properties", "timestamp", "uuid"} for e in events
    )
    phactor.testing.clear(instance_name)
    assert phactor.testing.events(instance_name) == []
    inst.capture("after_clear", "u1")
    assert [e["event"] for e in phactor.testing.events(instance_name)] == ["after_clear"]
    inst.stop(timeout=2)
    assert devserver.request_count("any") == 0
    assert assert_ledger(inst)["sent"] == 9


def test_testing_helpers_refuse_a_real_instance(devserver: DevServer, instance_name: str) -> None:
    phactor.start(instance_name, api_key="phc_k", host=devserver.url)
    with pytest.raises(ValueError):
        phactor.testing.events(instance_name)
    with pytest.raises(phactor.NotStarted):
        phactor.testing.events(f"{instance_name}-missing")


def test_disabled_is_a_cheap_no_op_without_threads(instance_name: str) -> None:
    before = {t.ident for t in threading.enumerate()}
    inst = phactor.start(instance_name, disabled=True)
    assert inst.capture("e", "u1") is None
    assert inst.bare_capture("e", "u1") is None
    assert inst.identify("u1", {"a": 1}) is None
    assert inst.set("u1", {"a": 1}) is None
    assert inst.set_once("u1", {"a": 1}) is None
    assert inst.alias("u1", "u2") is None
    assert inst.group_identify("company", "acme", {"a": 1}) is None
    assert phactor.capture("e", "u1", instance=instance_name) is None
    assert inst.capture("e") is None  # not even a missing-id drop
    assert inst.flush(timeout=1) is True
    assert inst.queue_length() == 0
    assert inst.children() == {}
    assert {t.ident for t in threading.enumerate()} - before == set()
    assert inst.stats()["captured"] == 0
    assert inst.stop(timeout=1)


def test_sync_mode_delivers_before_capture_returns(
    devserver: DevServer, instance_name: str
) -> None:
    inst = phactor.start(instance_name, api_key="phc_sync", host=devserver.url, sync_mode=True)
    for n in range(1, 4):
        uuid = inst.capture("e", f"u{n}")
        assert devserver.count() == n  # no waiting: it is already stored
        assert devserver.events()[-1]["uuid"] == uuid
    stats = assert_ledger(inst)
    assert stats["sent"] == 3 and stats["queued"] == 0


def test_sync_mode_never_sends_twice_while_the_timer_ticks(
    devserver: DevServer, instance_name: str
) -> None:
    inst = phactor.start(
        instance_name, api_key="phc_sync", host=devserver.url, sync_mode=True, flush_interval=0.05
    )
    devserver.delay(0.3)  # every sync send outlives several flush ticks
    uuids = [inst.capture("e", f"u{i}") for i in range(2)]
    devserver.delay(0)
    assert inst.flush(timeout=5)
    assert_ledger(inst)
    assert devserver.uuid_counts() == dict.fromkeys(uuids, 1)


DEBUG_SCRIPT = textwrap.dedent(
    """
    import sys
    import phactor
    inst = phactor.start(api_key="phc_secret_key_ABCDEFGHIJ", host=sys.argv[1], debug=True)
    quiet = phactor.start("quiet", api_key="phc_quiet_key_ABCDEFGHIJ", host=sys.argv[1])
    inst.capture("e", "u1")
    inst.identify(None)
    quiet.identify(None)
    inst.flush(timeout=5)
    phactor.stop(timeout=5)
    phactor.stop("quiet", timeout=5)
    """
)


def test_debug_prints_to_stderr_with_the_key_masked(devserver: DevServer) -> None:
    result = subprocess.run(
        [sys.executable, "-c", DEBUG_SCRIPT, devserver.url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert "started" in err
    assert "missing_distinct_id" in err
    assert "phc_sec***" in err
    assert "ABCDEFGHIJ" not in err + result.stdout  # neither key, in full, anywhere
    assert "'quiet'" not in err  # debug is per instance
    assert devserver.count() == 1


def test_no_console_output_without_debug(devserver: DevServer) -> None:
    script = DEBUG_SCRIPT.replace("debug=True", "debug=False")
    result = subprocess.run(
        [sys.executable, "-c", script, devserver.url], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""
