"""Callbacks phactor runs on the app's thread are not the app's errors: what they log is not
captured (before_send during capture(); the send, on_error included, in sync_mode)."""

from __future__ import annotations

import logging
from typing import Any

import phactor
import phactor.testing
from phactor.devserver import DevServer

log = logging.getLogger("app.callbacks")


def _log_an_exception() -> None:
    try:
        raise RuntimeError("inside a phactor callback")
    except RuntimeError:
        log.exception("callback failed")


def test_before_send_logging_an_exception_is_not_captured(instance_name: str):
    def before_send(event: dict[str, Any]) -> dict[str, Any]:
        if event["event"] == "signed_up":
            _log_an_exception()
        return event

    phactor.start(instance_name, test_mode=True, before_send=before_send)
    phactor.capture("signed_up", "u1", instance=instance_name)
    _log_an_exception()  # the same call outside a callback is captured: the guard is specific
    events = phactor.testing.events(instance_name)
    assert [e["event"] for e in events].count("$exception") == 1
    assert [e["event"] for e in events].count("signed_up") == 1


def test_sync_mode_on_error_logging_an_exception_is_not_captured(
    devserver: DevServer, instance_name: str
):
    errors: list[Any] = []

    def on_error(error: Any, events: list[dict[str, Any]]) -> None:
        errors.append(error)
        _log_an_exception()

    devserver.fail_next(1, 400)
    inst = phactor.start(
        instance_name, api_key="phc_guard", host=devserver.url, sync_mode=True, on_error=on_error
    )
    inst.capture("rejected_event", "u1")  # 400 -> on_error on this thread, which logs
    assert len(errors) == 1
    inst.capture("accepted_event", "u1")
    assert inst.flush(5)
    assert [e["event"] for e in devserver.events()] == ["accepted_event"]
    assert inst.stats()["dropped"] == {"rejected": 1}
