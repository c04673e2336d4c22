"""A `before_send` hook that raises drops its event (counted `before_send_error`), never sends it
unscrubbed: the hook is where personal data is removed (issue 12 #1)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from conftest import StartInstance, assert_ledger
from hypothesis import given
from hypothesis import strategies as st

from phactor.devserver import DevServer

KEY = "phc_before_send_error"

_errors = st.sampled_from(
    [RuntimeError, ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError]
)
_secrets = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789@.", min_size=8, max_size=30)


def test_a_raising_hook_drops_the_event_and_counts_it(
    devserver: DevServer, start_instance: StartInstance, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(event: dict[str, Any]) -> dict[str, Any] | None:
        if event["event"] == "explode":
            event["properties"]["half_scrubbed"] = True
            raise RuntimeError("hook bug")
        return event

    inst = start_instance(
        api_key=KEY, host=devserver.url, before_send=hook, enable_error_tracking=False
    )
    with caplog.at_level(logging.WARNING, logger="phactor"):
        assert inst.capture("explode", "u1", {"email": "someone@example.com"}) is None
        assert inst.capture("normal", "u1") is not None
        assert inst.flush(timeout=5)
    assert [e["event"] for e in devserver.events()] == ["normal"]
    stats = assert_ledger(inst)
    assert stats["dropped"] == {"before_send_error": 1}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "before_send_error" in logged and "hook bug" in logged
    assert "someone@example.com" not in logged


def test_no_raising_hook_ever_lets_its_event_through(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    raised: list[str] = []

    def hook(event: dict[str, Any]) -> dict[str, Any] | None:
        kind = event["properties"].pop("raise", None)
        if kind is None:
            return event
        raised.append(event["uuid"])
        raise kind("scrubbing failed")

    inst = start_instance(
        api_key=KEY,
        host=devserver.url,
        before_send=hook,
        enable_error_tracking=False,
        flush_at=10_000,
        flush_interval=3600.0,
    )
    kept: list[str] = []

    @given(error=st.none() | _errors, secret=_secrets, distinct_id=st.integers(0, 10**6))
    def run(error: type[Exception] | None, secret: str, distinct_id: int) -> None:
        props: dict[str, Any] = {"secret": secret}
        if error is not None:
            props["raise"] = error
        uuid = inst.capture("e", distinct_id, props)
        assert (uuid is None) == (error is not None)
        if uuid is not None:
            kept.append(uuid)

    run()
    assert inst.flush(timeout=10)
    stored = {e["uuid"] for e in devserver.events()}
    assert stored == set(kept)
    assert not stored & set(raised)
    stats = assert_ledger(inst)
    assert stats["dropped"].get("before_send_error", 0) == len(raised)
