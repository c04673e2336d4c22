"""A setup slip never takes the app down (issue 12 #6): no api key starts the instance disabled
with one warning; capture-family and flag calls on a name never started return None (a flag
helper its default) with one warning per name; stop() of an unknown name returns False."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
from conftest import StartInstance
from hypothesis import given
from hypothesis import strategies as st

import phactor

CALLS: dict[str, tuple[tuple[Any, ...], Any]] = {
    "capture": (("e", "u1"), None),
    "bare_capture": (("e", "u1"), None),
    "identify": (("u1", {}), None),
    "set": (("u1", {"a": 1}), None),
    "set_once": (("u1", {"a": 1}), None),
    "alias": (("u1", "u2"), None),
    "group_identify": (("company", "acme"), None),
    "capture_exception": ((ValueError("x"), "u1"), None),
    "feature_enabled": (("flag", "u1"), None),
    "get_feature_flag": (("flag", "u1"), None),
    "get_feature_flag_payload": (("flag", "u1"), None),
    "get_all_flags": (("u1",), {}),
    "get_all_flags_and_payloads": (("u1",), {"featureFlags": {}, "featureFlagPayloads": {}}),
    "get_feature_flag_result": (("flag", "u1"), None),
    "reload_feature_flags": ((), False),
}


def _warnings(caplog: pytest.LogCaptureFixture, what: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if what in r.getMessage()]


@pytest.mark.parametrize("function", sorted(CALLS))
def test_a_call_on_a_name_never_started_returns_its_default(
    function: str, instance_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    args, default = CALLS[function]
    name = f"{instance_name}-never"
    with caplog.at_level(logging.WARNING, logger="phactor"):
        for _ in range(3):
            assert getattr(phactor, function)(*args, instance=name) == default
    warned = [r for r in _warnings(caplog, "instance_not_started") if name in r.getMessage()]
    assert len(warned) == 1
    with pytest.raises(phactor.NotStarted):
        phactor.instance(name)


def test_evaluate_flags_on_a_name_never_started_is_empty(instance_name: str) -> None:
    flags = phactor.evaluate_flags("u1", instance=f"{instance_name}-never")
    assert flags.keys() == [] and flags.get_flag("f") is None


def test_stop_of_a_name_that_is_not_running_returns_false(instance_name: str) -> None:
    @given(name=st.text(max_size=20))
    def run(name: str) -> None:
        if name in phactor.instances():
            return
        assert phactor.stop(name) is False

    run()
    with pytest.raises(ValueError):
        phactor.stop(f"{instance_name}-never", timeout=-1)


def test_start_without_api_key_starts_disabled_with_one_warning(
    start_instance: StartInstance, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POSTHOG_API_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="phactor"):
        inst = start_instance()
        assert inst.config.disabled is True
        assert inst.capture("e", "u1") is None
        assert phactor.capture("e", "u1", instance=inst.name) is None
        assert inst.get_feature_flag("f", "u1") is None
    assert len(_warnings(caplog, "api_key_missing")) == 1
    assert inst.stats()["captured"] == 0


def test_asked_for_disabled_or_already_started_logs_no_missing_key(
    start_instance: StartInstance, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # start() says api_key_missing (config.py is below the logging module), only when the key
    # is what disabled the instance, and only for an instance that did start.
    monkeypatch.delenv("POSTHOG_API_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="phactor"):
        inst = start_instance(disabled=True)
        assert inst.config.disabled is True
        with pytest.raises(phactor.AlreadyStarted):
            phactor.start(inst.name)
    assert _warnings(caplog, "api_key_missing") == []


def test_a_malformed_api_key_still_raises_config_error(start_instance: StartInstance) -> None:
    with pytest.raises(phactor.ConfigError, match="api_key"):
        start_instance(api_key=3)


def test_an_app_without_key_runs_to_its_end() -> None:
    """The slip end to end, in a fresh interpreter: start, capture, flags, stop, exit 0."""
    script = (
        "import phactor\n"
        "phactor.capture('before_start', 'u1')\n"
        "phactor.start()\n"
        "assert phactor.capture('e', 'u1') is None\n"
        "assert phactor.feature_enabled('f', 'u1') is None\n"
        "assert phactor.stop() is True\n"
        "assert phactor.stop() is False\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "POSTHOG_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
