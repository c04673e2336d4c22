"""`import phactor.compat.posthog as posthog`: module settings, then module functions."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest

import phactor
import phactor.compat.posthog as posthog
from phactor.compat import Posthog
from phactor.devserver import DevServer


@pytest.fixture
def module_settings() -> Iterator[None]:
    """Restore the module's settings and drop its client after the test."""
    saved = {name: getattr(posthog, name) for name in ("api_key", "host", "sync_mode", "send")}
    yield
    posthog.shutdown()
    for name, value in saved.items():
        setattr(posthog, name, value)


def test_every_client_method_has_a_module_function() -> None:
    methods = {
        name
        for name, _ in inspect.getmembers(Posthog, inspect.isfunction)
        if not name.startswith("_")
    }
    assert methods <= set(posthog.__all__)
    for name in methods:
        assert callable(getattr(posthog, name)), name


def test_module_settings_then_module_calls(devserver: DevServer, module_settings: Any) -> None:
    posthog.api_key = "phc_module"
    posthog.host = devserver.url
    posthog.sync_mode = True
    assert posthog.capture("signed_up", distinct_id="u1", properties={"plan": "pro"})
    assert posthog.set(distinct_id="u1", properties={"name": "Ann"})
    assert posthog.alias("u1", "u1-alias")
    posthog.flush()
    stored = devserver.events()
    assert [e["event"] for e in stored] == ["signed_up", "$set", "$create_alias"]
    assert stored[0]["raw"]["properties"]["plan"] == "pro"
    assert {e["api_key"] for e in stored} == {"phc_module"}
    client = posthog.setup()
    assert client is posthog.default_client and client.name == posthog.INSTANCE_NAME
    assert client.instance.config.sync_mode is True

    posthog.shutdown()
    assert posthog.INSTANCE_NAME not in phactor.instances()
    # The next call builds a new client from the settings as they are now.
    posthog.send = False
    assert posthog.capture("after", distinct_id="u1")
    assert posthog.setup() is not client and posthog.setup().instance.config.test_mode


def test_without_an_api_key_the_module_client_is_disabled(module_settings: Any) -> None:
    posthog.api_key = None
    assert posthog.capture("nothing", distinct_id="u1") is None
    assert posthog.setup().disabled
