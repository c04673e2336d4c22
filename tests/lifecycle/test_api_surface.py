"""The public API contract: names, signatures, errors and bad input."""

from __future__ import annotations

import datetime as dt
import inspect
import uuid as uuid_module

import pytest
from conftest import assert_ledger

import phactor
import phactor.errors
import phactor.testing

LIFECYCLE = ["start", "instance", "instances", "stop"]
EVENT_FUNCTIONS = [
    "capture",
    "bare_capture",
    "identify",
    "set",
    "set_once",
    "alias",
    "group_identify",
]
CONTEXT_FUNCTIONS = [
    "set_context",
    "get_context",
    "set_event_context",
    "get_event_context",
    "context",
]
DELIVERY_FUNCTIONS = ["flush", "queue_length", "config", "stats"]


def test_top_level_names() -> None:
    for name in LIFECYCLE + EVENT_FUNCTIONS + CONTEXT_FUNCTIONS + DELIVERY_FUNCTIONS:
        assert callable(getattr(phactor, name)), name
        assert getattr(phactor, name).__doc__, name
    assert isinstance(phactor.__version__, str) and phactor.__version__
    for error in ("PhactorError", "ConfigError", "NotStarted", "AlreadyStarted"):
        assert getattr(phactor, error) is getattr(phactor.errors, error)
        assert issubclass(getattr(phactor, error), phactor.PhactorError)
    assert callable(phactor.testing.events) and callable(phactor.testing.clear)


def test_module_functions_take_instance_keyword() -> None:
    for name in EVENT_FUNCTIONS + CONTEXT_FUNCTIONS + DELIVERY_FUNCTIONS:
        parameter = inspect.signature(getattr(phactor, name)).parameters.get("instance")
        assert parameter is not None, name
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, name
        assert parameter.default == "default", name


def test_instance_carries_every_function_as_a_method() -> None:
    for name in EVENT_FUNCTIONS + CONTEXT_FUNCTIONS + ["flush", "queue_length", "stats"]:
        method = getattr(phactor.Instance, name)
        assert callable(method) and method.__doc__, name
        assert "instance" not in inspect.signature(method).parameters, name
    for name in ("stop", "children"):
        assert callable(getattr(phactor.Instance, name))
    assert isinstance(inspect.getattr_static(phactor.Instance, "config"), property)


def test_capture_signature() -> None:
    params = inspect.signature(phactor.capture).parameters
    assert list(params)[:3] == ["event", "distinct_id", "properties"]
    for keyword in ("timestamp", "uuid", "groups", "send_feature_flags"):
        assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["send_feature_flags"].default is False


def test_lifecycle(instance_name: str) -> None:
    with pytest.raises(phactor.NotStarted):
        phactor.instance(instance_name)
    # A capture on a name never started is a setup slip: None, never raised (issue 12 #6).
    assert phactor.capture("e", "u1", instance=instance_name) is None
    inst = phactor.start(instance_name, test_mode=True)
    assert phactor.instance(instance_name) is inst
    assert inst.name == instance_name
    assert instance_name in phactor.instances()
    with pytest.raises(phactor.AlreadyStarted):
        phactor.start(instance_name, test_mode=True)
    assert phactor.instance(instance_name) is inst  # the running one is untouched
    assert phactor.stop(instance_name, timeout=2)
    assert instance_name not in phactor.instances()
    with pytest.raises(phactor.NotStarted):
        phactor.flush(instance=instance_name)
    with pytest.raises(TypeError):
        phactor.start("", test_mode=True)


def test_default_instance_and_module_functions() -> None:
    inst = phactor.start(test_mode=True)
    assert inst.name == "default"
    assert phactor.config() is inst.config
    uuid = phactor.capture("e", "u1", {"a": 1})
    phactor.set_context({"k": "v"})
    assert phactor.get_context() == {"k": "v"}
    with phactor.context({"k": "w"}):
        assert phactor.get_context() == {"k": "w"}
    phactor.set_context({})  # merging nothing changes nothing
    assert phactor.get_context() == {"k": "v"}
    assert phactor.flush(timeout=5)
    assert phactor.queue_length() == 0
    assert phactor.stats()["sent"] == 1
    assert [e["uuid"] for e in phactor.testing.events()] == [uuid]
    assert phactor.stop(timeout=2)


def test_capture_returns_the_uuid_and_honours_timestamp_and_uuid(instance_name: str) -> None:
    inst = phactor.start(instance_name, test_mode=True)
    given = uuid_module.uuid4()
    returned = inst.capture("e", "u1", timestamp=dt.datetime(2026, 1, 2, 3, 4, 5), uuid=given)
    assert returned == str(given)
    (event,) = phactor.testing.events(instance_name)
    assert event["uuid"] == str(given)
    assert event["timestamp"] == "2026-01-02T03:04:05.000Z"
    assert event["distinct_id"] == "u1"
    assert isinstance(inst.capture("e", 42), str)
    assert phactor.testing.events(instance_name)[-1]["distinct_id"] == "42"


@pytest.mark.parametrize(
    "call",
    [
        lambda i: i.capture("", "u1"),
        lambda i: i.capture(None, "u1"),
        lambda i: i.capture(5, "u1"),
        lambda i: i.capture("e", "u1", ["not", "a", "mapping"]),
        lambda i: i.capture("e", "u1", "string"),
        lambda i: i.capture("e", "u1", groups=["x"]),
        lambda i: i.capture("e", "u1", timestamp=12345),
        lambda i: i.capture("e", "u1", uuid=12345),
        lambda i: i.bare_capture("", "u1"),
        lambda i: i.identify("u1", ["x"]),
        lambda i: i.set("u1", "x"),
        lambda i: i.set_once("u1", 3),
        lambda i: i.alias("u1", None),
        lambda i: i.group_identify("", "acme"),
        lambda i: i.group_identify("company", None),
    ],
)
def test_wrong_types_raise_type_error_and_leave_no_trace(instance_name: str, call) -> None:
    inst = phactor.start(instance_name, test_mode=True)
    with pytest.raises(TypeError):
        call(inst)
    stats = assert_ledger(inst)
    assert stats["captured"] == 0


def test_bad_uuid_string_is_a_value_error(instance_name: str) -> None:
    inst = phactor.start(instance_name, test_mode=True)
    with pytest.raises(ValueError):
        inst.capture("e", "u1", uuid="not-a-uuid")
    assert inst.stats()["captured"] == 0


def test_missing_distinct_id_returns_none_and_counts(instance_name: str) -> None:
    # capture() without one sends a personless event (tests/events/test_distinct_id.py).
    inst = phactor.start(instance_name, test_mode=True)
    assert inst.identify(None) is None
    assert inst.set(None, {"other": 1}) is None
    assert phactor.set_once("", {}, instance=instance_name) is None
    stats = assert_ledger(inst)
    assert stats["dropped"] == {"missing_distinct_id": 3}
    assert phactor.testing.events(instance_name) == []


def test_stats_keys(instance_name: str) -> None:
    inst = phactor.start(instance_name, test_mode=True)
    stats = inst.stats()
    for key in ("captured", "sent", "dropped", "retries", "restarts", "in_flight", "queued"):
        assert key in stats
    assert isinstance(stats["dropped"], dict)
