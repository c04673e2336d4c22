"""Config: validated at start (ConfigError naming the option), env fallbacks, frozen, masked."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import string
import time
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from conftest import StartInstance, assert_ledger, wait_until
from hypothesis import given
from hypothesis import strategies as st

import phactor
from phactor.config import DEFAULT_HOST, Config, mask
from phactor.devserver import DevServer
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


def test_no_api_key_outside_test_mode_gives_a_disabled_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A setup slip must not take the app down (issue 12 #6; tests/lifecycle/test_setup_slips.py).
    monkeypatch.delenv("POSTHOG_API_KEY", raising=False)
    assert Config.build().disabled is True
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


# --- every option is bounded (issue 10 #12) ---------------------------------------------------

INF, NAN = float("inf"), float("nan")

#: (option, value) pairs a real deployment might pass by mistake; each must be refused at start.
ABSURD = [
    *((o, v) for o in ("flush_interval", "request_timeout", "shutdown_timeout") for v in (INF, NAN)),
    *(
        (o, v)
        for o in (
            "retry_base_delay",
            "retry_max_delay",
            "max_seconds",
            "poll_interval",
            "flags_request_timeout",
            "exception_rate_limit_per_second",
        )
        for v in (INF, NAN, -INF)
    ),
    ("flush_interval", 1e-9),
    ("flush_interval", 10**400),  # an int too large for a float
    ("shutdown_timeout", 1e12),
    ("senders", 1_000_000),
    ("flush_at", 10**9),
    ("max_queue_size", 10**12),
    ("max_batch_bytes", 2**62),
    ("max_event_bytes", 2**62),
    ("max_retries", 10**9),
    ("max_restarts", 10**9),
    ("feature_flag_called_cache_size", 10**12),
    ("exception_rate_limit_burst", 10**12),
    ("exception_backlog", 10**12),
    ("capture_level", 10**6),
    ("host", "http://"),
    ("host", "https://"),
    ("host", "http://exa mple.com"),
    ("host", "http://example.com\n/x"),
    ("host", "http://ex\tample.com"),
    ("host", "http://[::1"),
    ("host", "http://::1]"),
    ("host", "http://example.com:99999"),
    ("host", "http://example.com:0"),
    ("host", "http://example.com:port"),
    ("host", "http://example.com/?a=1"),
    ("host", "http://example.com/#x"),
    ("host", "example.com"),
    ("host", "http://" + "a" * 3000 + ".com"),
    ("verify", "/no/such/ca-bundle.pem"),
    ("verify", ""),
    ("verify", 1),
    ("flags", "/no/such/flags.json"),
    ("flags", ""),
    ("in_app_modules", iter(["app"])),
    ("in_app_modules", ["app", ""]),
    ("in_app_modules", ["a"] * 1001),
    ("api_key", "phc key"),
    ("api_key", "phc_\nkey"),
    ("api_key", "k" * 2000),
]


@pytest.mark.parametrize(("option", "value"), ABSURD, ids=lambda v: repr(v)[:40])
def test_absurd_values_are_refused_naming_the_option(option: str, value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.build(**{"api_key": "phc_k", option: value})
    assert caught.value.option == option
    assert repr(option) in str(caught.value)


def test_sane_real_values_pass(tmp_path: Any) -> None:
    """What the posthog package defaults to and what real apps and our tests pass."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    flags = tmp_path / "flags.json"
    flags.write_text("{}")
    sane = [
        {"host": "http://127.0.0.1:8000"},
        {"host": "http://[::1]:8000/"},
        {"host": "https://eu.i.posthog.com"},
        {"host": "https://analytics.example.com/ingest/"},  # a reverse proxy under a path
        {"host": "http://posthog:8000"},
        {"host": " https://us.i.posthog.com \n"},  # from an env file
        {"flush_interval": 0.5, "flush_at": 100, "max_queue_size": 10_000, "max_retries": 3},
        {"flush_interval": 0.001, "poll_interval": 0.05, "request_timeout": 0.3},
        {"flush_interval": 86_400, "poll_interval": 3600, "request_timeout": 60},
        {"senders": 64, "max_restarts": 100, "max_seconds": 5, "shutdown_timeout": 0},
        {"retry_base_delay": 0, "retry_max_delay": 0, "exception_rate_limit_per_second": 0},
        {"feature_flag_called_cache_size": 0, "capture_level": "warning", "in_app_modules": "app"},
        {"in_app_modules": ["app", "lib.core"], "capture_level": logging.INFO},
        {"verify": False},
        {"verify": str(bundle)},
        {"verify": bundle},
        {"verify": str(tmp_path)},  # a CA directory (c_rehash)
        {"flags": str(flags), "test_mode": True},
        {"flags": flags, "test_mode": True},
        {"flags": {"beta": True}, "test_mode": True},
        {"personal_api_key": "phx_" + "a" * 43},
        {"flush_interval": Fraction(1, 2), "exception_rate_limit_per_second": Fraction(1, 3)},
    ]
    for options in sane:
        config = Config.build(api_key="phc_k", **options)
        for name, value in options.items():
            assert getattr(config, name) is not None, (name, value)


def test_env_values_go_through_the_same_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, option, bad in [
        ("POSTHOG_HOST", "host", "http://"),
        ("POSTHOG_HOST", "host", "https://exa mple.com"),
        ("POSTHOG_API_KEY", "api_key", "phc_with space"),
    ]:
        monkeypatch.setenv("POSTHOG_API_KEY", "phc_env")
        monkeypatch.setenv(variable, bad)
        with pytest.raises(ConfigError) as caught:
            Config.build()
        assert caught.value.option == option
        assert variable in str(caught.value)
        monkeypatch.delenv(variable)
    monkeypatch.setenv("POSTHOG_HOST", "http://127.0.0.1:9/")
    assert Config.build(api_key="phc_k").host == "http://127.0.0.1:9"


class _RaisingRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr is broken")


class _RaisingMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("getitem is broken")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("iter is broken")

    def __len__(self) -> int:
        return 1


#: Values of every kind a caller could pass for any option.
ANY_VALUE = st.one_of(
    st.floats(),  # incl. inf, -inf, nan, negative, huge, subnormal
    st.integers(),
    st.integers(-5, 70),  # around the small bounds (senders, levels, counts)
    st.sampled_from([0, 1, 255, 256, 1023, 1024, 10**7, 64 * 2**20, 2**63, 10**400]),
    st.sampled_from([0.0, 0.001, 0.0009, 0.01, 0.009, 600.0, 600.1, 3600.0, 86_400.0, 86_401.0]),
    st.text(max_size=20),
    st.sampled_from(["http://", "https://x", "http://[::1]:1", "http://[::1", ".", "/", "app"]),
    st.binary(max_size=20),
    st.none(),
    st.booleans(),
    st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    st.builds(object),
    st.builds(_RaisingRepr),
    st.builds(_RaisingMapping),
)

OPTIONS = sorted(f.name for f in dataclasses.fields(Config))

#: The documented ranges of the numeric options (docs/configuration.md).
NUMERIC_BOUNDS = {
    "flush_at": (1, 100_000),
    "flush_interval": (0.001, 86_400),
    "max_queue_size": (1, 10_000_000),
    "max_batch_bytes": (1024, 64 * 2**20),
    "max_event_bytes": (256, 64 * 2**20),
    "senders": (1, 64),
    "request_timeout": (0.001, 600),
    "max_retries": (0, 1000),
    "retry_base_delay": (0, 3600),
    "retry_max_delay": (0, 86_400),
    "max_restarts": (0, 10_000),
    "max_seconds": (0.001, 86_400),
    "shutdown_timeout": (0, 3600),
    "poll_interval": (0.01, 86_400),
    "flags_request_timeout": (0.001, 600),
    "feature_flag_called_cache_size": (0, 10_000_000),
    "flags_cache_size": (0, 10_000_000),
    "flags_cache_ttl": (0, 30 * 86_400),
    "capture_level": (0, 100),
    "exception_rate_limit_burst": (1, 1_000_000),
    "exception_rate_limit_per_second": (0, 1_000_000),
    "exception_backlog": (1, 1_000_000),
}


def test_every_numeric_option_has_documented_bounds() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    section = doc.split("## Accepted values", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1]: line for line in section.splitlines() if line.startswith("| `")}
    for option in OPTIONS:
        row = next((r for names, r in rows.items() if f"`{option}`" in names), None)
        assert row is not None, f"{option} has no row under 'Accepted values'"
        if option in NUMERIC_BOUNDS:
            low, high = NUMERIC_BOUNDS[option]
            assert f" {low} to {high}" in row, row


@pytest.mark.parametrize("option", OPTIONS)
@given(value=ANY_VALUE)
def test_any_value_of_any_option_is_refused_by_name_or_in_range(option: str, value: Any) -> None:
    try:
        config = Config.build(**{"api_key": "phc_k", "test_mode": True, option: value})
    except ConfigError as error:
        assert error.option == option
        assert repr(option) in str(error)
        return
    built = getattr(config, option)
    if option in NUMERIC_BOUNDS:
        low, high = NUMERIC_BOUNDS[option]
        assert low <= built <= high
        assert math.isfinite(built)
    repr(config)  # never raises


_example_names = itertools.count()


def _edges(option: str, url: str) -> list[Any]:
    """Values at and just past the edges of what `option` accepts."""
    if option in NUMERIC_BOUNDS:
        low, high = NUMERIC_BOUNDS[option]
        return [low, high, low - 1, high + 1]
    valid: dict[str, list[Any]] = {
        "api_key": ["phc_" + "k" * 43, " phc_k "],
        "personal_api_key": ["phx_" + "k" * 43, None],
        "host": [url, url + "/", "http://[::1]:9", "https://h.example:443/p/"],
        "verify": [True, False, __file__, str(Path(__file__).parent)],
        "flags": [{"beta": True, "exp": "variant"}, {}, None],
        "global_properties": [{"app": "web"}, None],
        "in_app_modules": ["app", ["app", "lib"], ()],
        "before_send": [None, lambda event: event, lambda event: None],
        "on_error": [None, print],
        "capture_level": ["warning", "CRITICAL", 0, 100],
    }
    return valid.get(option, [True, False])


def _edge_values(option: str, url: str) -> st.SearchStrategy[Any]:
    """The edges, and values inside a numeric range (so that instances do start)."""
    edges = st.sampled_from(_edges(option, url))
    if option not in NUMERIC_BOUNDS:
        return edges
    low, high = NUMERIC_BOUNDS[option]
    inside = st.floats(low, high) if isinstance(low, float) else st.integers(low, high)
    return st.one_of(edges, inside)


def _start_refused_or_working(option: str, value: Any, url: str) -> None:
    """start() with `option=value`: ConfigError naming the option (and nothing else), or an
    instance that captures, flushes and stops promptly with its ledger balanced."""
    name = f"config-fuzz-{next(_example_names)}"
    options = {"api_key": "phc_k", "test_mode": True, "host": url, option: value}
    try:
        inst = phactor.start(name, **options)
    except ConfigError as error:
        assert error.option == option
        assert name not in phactor.instances()
        return
    if option in NUMERIC_BOUNDS:
        low, high = NUMERIC_BOUNDS[option]
        assert low <= getattr(inst.config, option) <= high
    try:
        inst.capture("fuzzed", "user-1", {"n": 1})
        assert inst.flush(timeout=5.0)
        assert_ledger(inst)
    finally:
        began = time.monotonic()
        inst.stop(timeout=5.0)
        assert time.monotonic() - began < 5.0
    stats = assert_ledger(inst)
    if not inst.config.disabled:
        assert stats["captured"] == 1
        assert stats["queued"] == stats["in_flight"] == 0


def test_every_option_at_its_edges_is_refused_by_name_or_gives_a_working_instance() -> None:
    hostile = [INF, NAN, -1, "", b"", None, object()]
    with DevServer() as server:
        for option in OPTIONS:
            for value in _edges(option, server.url) + hostile:
                _start_refused_or_working(option, value, server.url)
        # None of them broke the timer thread all instances share (flush_interval=inf did).
        inst = phactor.start("config-fuzz-timer", test_mode=True, flush_interval=0.01)
        try:
            inst.capture("timed", "user-1")
            assert wait_until(lambda: inst.stats()["sent"] == 1)
        finally:
            inst.stop(timeout=5.0)


def test_any_value_at_start_is_refused_by_name_or_gives_a_working_instance() -> None:
    with DevServer() as server:

        @given(option=st.sampled_from(OPTIONS), data=st.data())
        def check(option: str, data: st.DataObject) -> None:
            edge = data.draw(st.booleans())
            value = data.draw(_edge_values(option, server.url) if edge else ANY_VALUE)
            _start_refused_or_working(option, value, server.url)

        check()


# --- keys never leak through an error or a repr (issue 10 #15) --------------------------------

# "Zq9" + random: any of it in a message can only come from the rejected value.
SECRET_TAIL = st.text(alphabet=string.ascii_letters + string.digits, min_size=5, max_size=40).map(
    lambda tail: "Zq9" + tail
)


@given(
    option=st.sampled_from(["api_key", "personal_api_key"]),
    tail=SECRET_TAIL,
    form=st.sampled_from(["bytes", "spaced", "newline", "long", "list"]),
)
def test_a_rejected_key_never_appears_in_the_error(option: str, tail: str, form: str) -> None:
    key = f"phx_{tail}"
    value: Any = {
        "bytes": key.encode(),
        "spaced": f"{key} {key}",
        "newline": f"{key}\n",
        "long": key * (1 + 1024 // len(key)),
        "list": [key],
    }[form]
    if form == "newline":
        value = f"phx_\n{tail}"
    with pytest.raises(ConfigError) as caught:
        Config.build(**{"api_key": "phc_k", option: value})
    assert caught.value.option == option
    assert tail not in str(caught.value)
    assert tail not in repr(caught.value)


def test_a_numeric_key_never_appears_in_the_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.build(api_key=12345678901)
    assert "12345678901" not in str(caught.value)
    assert "int" in str(caught.value)


def test_a_host_password_never_appears_in_an_error_or_the_repr() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.build(api_key="phc_k", host="https://user:hunter2secret@exa mple.com")
    assert "hunter2secret" not in str(caught.value)
    config = Config.build(api_key="phc_k", host="https://user:hunter2secret@example.com")
    assert config.host == "https://user:hunter2secret@example.com"
    assert "hunter2secret" not in repr(config)


def test_a_value_whose_repr_raises_still_gives_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.build(api_key="phc_k", flush_at=_RaisingRepr())
    assert "_RaisingRepr" in str(caught.value)
    with pytest.raises(ConfigError):
        Config.build(api_key="phc_k", global_properties=_RaisingMapping())


def test_a_huge_rejected_value_is_cut_in_the_message() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.build(api_key="phc_k", flush_at="x" * 1_000_000)
    assert len(str(caught.value)) < 500


def test_a_key_passed_as_the_instance_name_is_refused_and_never_echoed() -> None:
    """posthog's `Posthog("phc_...")` habit: phactor.start("phc_...") would name an instance
    after the key (and log it in every line)."""
    with pytest.raises(ValueError, match="api_key") as caught:
        phactor.start("phc_Zq9secretsecret", test_mode=True)
    assert "Zq9secretsecret" not in str(caught.value)
    with pytest.raises(TypeError) as wrong_type:
        phactor.start(b"phx_Zq9secretsecret", test_mode=True)  # type: ignore[arg-type]
    assert "Zq9secretsecret" not in str(wrong_type.value)
    assert not any(name.startswith(("phc_", "phx_")) for name in phactor.instances())


def test_the_start_log_line_masks_a_host_password(
    start_instance: StartInstance, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="phactor"):
        inst = start_instance(test_mode=True, host="http://user:Zq9hostpass@127.0.0.1:9")
    assert inst.config.host == "http://user:Zq9hostpass@127.0.0.1:9"
    assert "started" in caplog.text
    assert "user:***@127.0.0.1:9" in caplog.text
    assert "Zq9hostpass" not in caplog.text
