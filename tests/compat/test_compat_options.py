"""`phactor.compat.Posthog`'s constructor: posthog's options, positions and defaults, one table."""

from __future__ import annotations

import inspect
import logging
import re
from typing import Any

import posthog
import pytest
from hypothesis import given
from hypothesis import strategies as st

import phactor
from phactor.compat import Posthog
from phactor.compat.options import OPTIONS, bind_options, phactor_options

POSTHOG_PARAMS = [
    p for p in inspect.signature(posthog.Client.__init__).parameters.values() if p.name != "self"
]
TABLE = {option.name: option for option in OPTIONS}


def test_the_table_has_every_posthog_option_in_posthog_order_with_its_default() -> None:
    positional = [o.name for o in OPTIONS if not o.keyword_only]
    assert positional == [p.name for p in POSTHOG_PARAMS]
    for param in POSTHOG_PARAMS:
        if param.default is not inspect.Parameter.empty:
            assert TABLE[param.name].default == param.default, param.name
    for option in OPTIONS:
        if option.target is not None:
            assert option.target in phactor.Config.__dataclass_fields__ or option.target in (
                "disable_geoip",
                "enable_local_evaluation",
            ), option.name


def test_the_docs_list_every_option() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "migrating-from-posthog.md").read_text()
    for option in OPTIONS:
        assert f"`{option.name}`" in doc, option.name


@given(st.text(min_size=1, max_size=20).filter(lambda s: s.isidentifier() and s not in TABLE))
def test_an_option_that_is_not_posthogs_is_a_type_error(name: str) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        bind_options(("phc_key",), {name: 1})


def test_positional_arguments_take_posthogs_slots_and_clash_like_posthog() -> None:
    assert bind_options(("phc_key", "http://h", True), {}) == {
        "project_api_key": "phc_key",
        "host": "http://h",
        "debug": True,
    }
    with pytest.raises(TypeError, match="multiple values"):
        bind_options(("phc_key",), {"project_api_key": "phc_other"})
    with pytest.raises(TypeError, match="positional"):
        bind_options(tuple(range(len(POSTHOG_PARAMS) + 1)), {})
    with pytest.raises(TypeError):
        Posthog("phc_key", nonsense=True)


@given(
    st.sets(
        st.sampled_from([o.name for o in OPTIONS if o.name not in ("project_api_key", "api_key")])
    )
)
def test_posthog_defaults_given_explicitly_change_nothing(names: set[str]) -> None:
    """Any subset of options passed at posthog's default maps as if none was passed."""
    baseline, _ = phactor_options({"project_api_key": "phc_key"})
    given_ = {name: TABLE[name].default for name in names}
    options, ignored = phactor_options({"project_api_key": "phc_key", **given_})
    assert options == baseline
    assert ignored == []


def test_posthog_defaults_where_they_differ_from_phactors() -> None:
    options, _ = phactor_options({"project_api_key": "phc_key"})
    assert options == {
        "api_key": "phc_key",
        "host": "https://us.i.posthog.com",
        "gzip": False,
        "max_retries": 3,
        "request_timeout": 15.0,
        "enable_error_tracking": False,
    }


def test_each_option_reaches_its_phactor_option(start_instance: Any) -> None:
    def before(event: dict[str, Any]) -> dict[str, Any]:
        return event

    client = Posthog(
        "phc_key",
        host="http://127.0.0.1:9",
        flush_at=7,
        flush_interval=0.5,
        max_queue_size=99,
        gzip=True,
        max_retries=1,
        timeout=4,
        thread=3,
        poll_interval=45,
        personal_api_key="phx_personal_key",
        feature_flags_request_timeout_seconds=2,
        super_properties={"app": "web"},
        enable_exception_autocapture=True,
        before_send=before,
        in_app_modules=["myapp"],
        send=False,
    )
    try:
        config = client.instance.config
        assert (config.flush_at, config.flush_interval, config.max_queue_size) == (7, 0.5, 99)
        assert (config.gzip, config.max_retries, config.request_timeout) == (True, 1, 4.0)
        assert (config.senders, config.poll_interval, config.flags_request_timeout) == (3, 45, 2)
        assert config.personal_api_key == "phx_personal_key"
        assert dict(config.global_properties) == {"app": "web"}
        assert config.enable_error_tracking is True and config.before_send is before
        assert config.in_app_modules == ("myapp",) and config.test_mode is True
    finally:
        client.shutdown()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "https://us.i.posthog.com"),
        ("  ", "https://us.i.posthog.com"),
        ("https://us.posthog.com/", "https://us.i.posthog.com"),
        ("https://app.posthog.com", "https://us.i.posthog.com"),
        ("https://eu.posthog.com", "https://eu.i.posthog.com"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ],
)
def test_hosts_map_as_posthog_maps_them(given: str | None, expected: str) -> None:
    from posthog.request import determine_server_host

    options, _ = phactor_options({"project_api_key": "phc_key", "host": given})
    assert options["host"] == expected == determine_server_host(given)


def test_secret_key_wins_over_personal_api_key_and_api_key_names_the_project_key() -> None:
    options, _ = phactor_options(
        {"api_key": "phc_key", "personal_api_key": "phx_old", "secret_key": "phx_new"}
    )
    assert options["personal_api_key"] == "phx_new" and options["api_key"] == "phc_key"
    with pytest.raises(TypeError, match="both"):
        bind_options(("phc_key",), {"api_key": "phc_other"})


@pytest.mark.parametrize("key", [None, "", "   "])
def test_no_project_key_gives_a_disabled_client_as_posthog(key: str | None) -> None:
    client = Posthog(key)
    try:
        assert client.disabled and client.instance.config.disabled
        assert client.capture("e", distinct_id="u1") is None
    finally:
        client.shutdown()


def test_an_option_without_meaning_is_accepted_and_logged_once_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from phactor.compat import client as compat_client

    compat_client._logged_ignored.discard("historical_migration")
    with caplog.at_level(logging.DEBUG, logger="phactor.compat"):
        first = Posthog("phc_key", host="http://127.0.0.1:9", historical_migration=True, send=False)
        second = Posthog(
            "phc_key", host="http://127.0.0.1:9", historical_migration=True, send=False
        )
    try:
        lines = [r for r in caplog.records if "historical_migration" in r.getMessage()]
        assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    finally:
        first.shutdown()
        second.shutdown()


def test_the_attributes_the_ai_wrappers_read() -> None:
    client = Posthog("phc_key", privacy_mode=True, enable_full_ai_capture=True, send=False)
    try:
        assert client.privacy_mode is True and client.enable_full_ai_capture is True
        assert client.api_key == "phc_key"
    finally:
        client.shutdown()


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("timeout", -1, "'timeout (phactor: request_timeout)'"),
        ("thread", 0, "'thread (phactor: senders)'"),
        ("super_properties", "not a mapping", "'super_properties (phactor: global_properties)'"),
        ("flush_at", 0, "'flush_at'"),
    ],
)
def test_a_bad_value_names_the_posthog_option(option: str, value: Any, named: str) -> None:
    with pytest.raises(phactor.ConfigError, match=re.escape(named)):
        Posthog("phc_key", host="http://127.0.0.1:9", **{option: value})
    assert not [n for n in phactor.instances() if n.startswith("posthog-")]


def test_the_environment_is_not_read_as_posthog_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTHOG_API_KEY", "phc_from_env")
    monkeypatch.setenv("POSTHOG_HOST", "http://127.0.0.1:9")
    keyless, client = Posthog(None), Posthog("phc_key", send=False)
    try:
        assert keyless.disabled and keyless.api_key is None
        assert client.instance.config.host == "https://us.i.posthog.com"
    finally:
        keyless.shutdown()
        client.shutdown()
