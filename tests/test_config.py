"""Config: validated at start (ConfigError naming the option), env fallbacks, frozen, masked."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import phactor
from phactor.config import DEFAULT_HOST, Config, mask
from phactor.errors import ConfigError


def test_defaults_match_the_issue() -> None:
    config = Config.build(api_key="phc_k")
    assert config.host == DEFAULT_HOST == "https://us.i.posthog.com"
    assert config.flush_at == 100
    assert config.flush_interval == 5.0
    assert config.max_queue_size == 10_000
    assert config.senders == 2
    assert config.max_restarts == 3
    assert config.max_seconds == 5.0
    assert config.shutdown_timeout == 10.0
    assert config.exception_backlog == 1000
    assert not (config.test_mode or config.disabled or config.sync_mode or config.debug)


def test_unknown_option_names_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.build(api_key="phc_k", flush_att=5)
    assert caught.value.option == "flush_att"
    assert "flush_att" in str(caught.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("flush_at", 0),
        ("flush_at", "10"),
        ("flush_at", True),
        ("flush_interval", 0),
        ("flush_interval", float("nan")),
        ("max_queue_size", -1),
        ("max_event_bytes", 10),
        ("senders", 0),
        ("host", "ftp://x"),
        ("host", 5),
        ("api_key", ""),
        ("api_key", 123),
        ("test_mode", "yes"),
        ("debug", 1),
        ("global_properties", {1: "x"}),
        ("global_properties", ["a"]),
        ("before_send", "not callable"),
        ("max_restarts", -1),
        ("max_seconds", 0),
        ("shutdown_timeout", -1),
        ("exception_backlog", 0),
        ("exception_backlog", "1000"),
    ],
)
def test_wrong_type_or_range_names_the_option(option: str, value: Any) -> None:
    options = {"api_key": "phc_k", option: value}
    with pytest.raises(ConfigError) as caught:
        Config.build(**options)
    assert caught.value.option == option
    assert repr(option) in str(caught.value)
    assert caught.value.expected in str(caught.value)


def test_config_error_is_a_value_error_and_a_phactor_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, phactor.PhactorError)
    assert phactor.ConfigError is ConfigError


def test_start_validates_before_anything_runs(instance_name: str) -> None:
    with pytest.raises(ConfigError):
        phactor.start(instance_name, api_key="phc_k", senders=0)
    assert instance_name not in phactor.instances()


def test_api_key_required_unless_test_mode_or_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTHOG_API_KEY", raising=False)
    with pytest.raises(ConfigError) as caught:
        Config.build()
    assert caught.value.option == "api_key"
    assert Config.build(test_mode=True).api_key is None
    assert Config.build(disabled=True).api_key is None


def test_env_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTHOG_API_KEY", "phc_from_env")
    monkeypatch.setenv("POSTHOG_HOST", "http://127.0.0.1:9/")
    config = Config.build()
    assert config.api_key == "phc_from_env"
    assert config.host == "http://127.0.0.1:9"  # trailing slash normalised
    explicit = Config.build(api_key="phc_arg", host="https://eu.i.posthog.com")
    assert explicit.api_key == "phc_arg"
    assert explicit.host == "https://eu.i.posthog.com"


def test_config_is_frozen_including_global_properties(instance_name: str) -> None:
    source = {"app": "web"}
    inst = phactor.start(instance_name, test_mode=True, global_properties=source)
    config = inst.config
    assert config is phactor.config(instance=instance_name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.flush_at = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.global_properties["app"] = "other"  # type: ignore[index]
    source["app"] = "changed later"
    assert config.global_properties["app"] == "web"


def test_repr_and_mask_never_show_the_key() -> None:
    config = Config.build(api_key="phc_supersecretkey_0123456789")
    assert "supersecretkey" not in repr(config)
    assert config.masked_api_key().startswith("phc_sup")
    assert "0123456789" not in config.masked_api_key()
    assert mask(None) == "<none>"
    assert mask("short") == "***"
