"""Fuzz configuration and lifecycle: every option of `start()`, instance names, `stop(timeout)`.

`Config.build` (what `start()` validates with) gets a generated value for each option: it
returns a Config or raises ConfigError naming that option, nothing else, within a bound.
`start()` with generated names and options either starts a usable instance or raises
TypeError/ConfigError; `stop(timeout)` returns a bool within its bound.
"""

from __future__ import annotations

import dataclasses
import decimal
import math
import pathlib
from typing import Any

from fuzz_support import (
    HOSTILE_TYPES,
    RaisingStr,
    bounded,
    fuzz_timeout,
    ledger,
    open_defect,
    safe_text,
    surrogate_text,
    wrong_types,
)
from hypothesis import given
from hypothesis import strategies as st

import phactor
from phactor.config import Config

pytestmark = fuzz_timeout

OPTIONS = sorted(f.name for f in dataclasses.fields(Config))
SECONDS_OPTIONS = [
    "flush_interval",
    "request_timeout",
    "retry_base_delay",
    "retry_max_delay",
    "max_seconds",
    "shutdown_timeout",
    "poll_interval",
    "flags_request_timeout",
    "exception_rate_limit_per_second",
]

option_values = st.one_of(
    wrong_types,
    safe_text,
    st.sampled_from(["http://", "https://x", "http://[::1]:1", "ERROR", "debug", " ", "phc_x"]),
    st.integers(-(10**300), 10**300),
    st.floats(),
    st.decimals(allow_nan=True),
    st.lists(safe_text, max_size=3),
    st.dictionaries(safe_text, safe_text | st.integers(), max_size=3),
    st.builds(pathlib.Path, safe_text),
    st.just(print),
    st.just(lambda event: event),
)


def build(option: str, value: Any) -> Config:
    base: dict[str, Any] = {"api_key": "phc_fuzz"} if option == "test_mode" else {"test_mode": True}
    return Config.build(**{**base, option: value})


def test_every_option_takes_any_value_or_names_itself_in_a_config_error() -> None:
    @given(option=st.sampled_from([*OPTIONS, "no_such_option", "flushAt"]), value=option_values)
    def run(option: str, value: Any) -> None:
        config, error = bounded(build, option, value)
        if error is None:
            assert isinstance(config, Config)
            return
        assert isinstance(error, phactor.ConfigError), repr(error)
        assert error.option == option
        assert option in str(error)

    run()


def test_start_with_generated_names_and_options(instance_name: str) -> None:
    names = st.one_of(
        st.just(""),
        safe_text.map(lambda s: f"{instance_name}-{s}"),
        wrong_types.filter(lambda v: not isinstance(v, str)),
    )
    options = st.fixed_dictionaries(
        {},
        optional={
            "flush_at": st.integers(-2, 1000) | wrong_types,
            "flush_interval": st.floats(0.01, 60) | wrong_types,
            "max_queue_size": st.integers(-2, 10**6) | wrong_types,
            "senders": st.integers(-1, 3) | wrong_types,
            "global_properties": st.dictionaries(safe_text, safe_text, max_size=3) | wrong_types,
            "capture_level": st.sampled_from(["ERROR", "warning", 10, -1, "nope"]),
            "in_app_modules": st.lists(safe_text, max_size=2) | wrong_types,
            "enable_error_tracking": st.booleans() | wrong_types,
            "sync_mode": st.booleans(),
        },
    )

    @given(name=names, opts=options)
    def run(name: Any, opts: dict[str, Any]) -> None:
        inst, error = bounded(phactor.start, name, test_mode=True, **opts)
        if error is not None:
            assert isinstance(error, TypeError | phactor.ConfigError), repr(error)
            assert not isinstance(name, str) or name not in phactor.instances()
            return
        try:
            assert phactor.instance(name) is inst
            uid, error = bounded(inst.capture, "e", "u")
            assert error is None and uid is not None
            flushed, _ = bounded(inst.flush, 5.0)
            assert flushed is True
            ledger(inst)
        finally:
            stopped, error = bounded(inst.stop, 2.0)
        assert error is None and stopped is True
        assert name not in phactor.instances()

    run()


def test_stop_returns_a_bool_or_refuses_a_negative_timeout_before_acting(instance_name: str) -> None:
    @given(
        timeout=st.none()
        | st.floats(min_value=0, max_value=2)
        | st.integers(0, 2)
        | st.floats(min_value=-1e9, max_value=0),
        module=st.booleans(),
        queued=st.integers(0, 20),
    )
    def run(timeout: Any, module: bool, queued: int) -> None:
        inst = phactor.start(instance_name, test_mode=True, enable_error_tracking=False)
        for i in range(queued):
            inst.capture("e", f"u{i}")
        if module:
            value, error = bounded(phactor.stop, instance_name, timeout)
        else:
            value, error = bounded(inst.stop, timeout)
        if timeout is not None and timeout < 0:
            # Refused before anything happens: the instance keeps running with its queue.
            assert isinstance(error, ValueError), repr(error)
            assert phactor.instance(instance_name) is inst
            assert inst.queue_length() == queued
            value, error = bounded(inst.stop, 2.0)
        assert error is None and type(value) is bool
        assert instance_name not in phactor.instances()
        ledger(inst)

    run()


# --- known defects, fuzzed ----------------------------------------------------------------------


def test_absurd_option_values_raise_config_error() -> None:
    absurd_seconds = st.sampled_from([math.inf, -math.inf, math.nan, 10**400, 1e300])

    @given(
        case=st.one_of(
            st.tuples(st.sampled_from(SECONDS_OPTIONS), absurd_seconds),
            st.tuples(st.just("senders"), st.integers(10**5, 10**12)),
            st.tuples(st.just("flush_interval"), st.floats(min_value=1e-12, max_value=1e-7)),
            st.tuples(
                st.just("host"),
                st.sampled_from(["http://", "https://", "http://a b", "http://[", "https://[::1"]),
            ),
        )
    )
    def run(case: tuple[str, Any]) -> None:
        option, value = case
        _, error = bounded(build, option, value)
        assert isinstance(error, phactor.ConfigError) and error.option == option

    run()


def test_a_value_without_a_usable_repr_still_gives_a_config_error() -> None:
    @given(
        option=st.sampled_from([o for o in OPTIONS if o != "test_mode"]),
        value=st.sampled_from([RaisingStr(), 10**5000, decimal.Decimal(10) ** 5000]),
    )
    def run(option: str, value: Any) -> None:
        _, error = bounded(build, option, value)
        assert isinstance(error, phactor.ConfigError) and error.option == option

    run()


def test_stop_with_a_bad_timeout_raises_before_acting(instance_name: str) -> None:
    # inf and 1e300 are good timeouts (no deadline): test_stop_returns_a_bool_... has them.
    @given(
        timeout=st.sampled_from(["5", b"5", [], math.nan, -1, -math.inf, object()]),
        module=st.booleans(),
    )
    def run(timeout: Any, module: bool) -> None:
        inst = phactor.start(instance_name, test_mode=True, enable_error_tracking=False)
        try:
            if module:
                _, error = bounded(phactor.stop, instance_name, timeout)
            else:
                _, error = bounded(inst.stop, timeout)
            assert isinstance(error, TypeError | ValueError)
            assert phactor.instance(instance_name) is inst, "unregistered yet still running"
        finally:
            inst.stop(1.0)

    run()


def test_stop_of_a_name_that_is_not_running_returns_false() -> None:
    @open_defect
    @given(name=safe_text | surrogate_text)
    def run(name: str) -> None:
        if name in phactor.instances():
            return
        value, error = bounded(phactor.stop, name)
        assert error is None and value is False

    run()


def test_every_option_rejects_each_hostile_type_with_a_config_error() -> None:
    # The random draw above found `spool_sync` comparing a value whose __eq__ raises before
    # checking its type (RuntimeError escaped); this sweep tries every pair, every run.
    for option in OPTIONS:
        for make in HOSTILE_TYPES:
            value = make() if isinstance(make, type) else make
            _config, error = bounded(build, option, value)
            if error is not None:
                assert isinstance(error, phactor.ConfigError), (option, repr(error))
                assert error.option == option
