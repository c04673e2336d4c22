"""Tests for phactor.flags.evaluations.FlagEvaluations."""

from __future__ import annotations

import threading

import pytest

from phactor.flags import FlagEvaluations, FlagResult


def snapshot(on_access=None) -> FlagEvaluations:
    return FlagEvaluations(
        {
            "on": FlagResult("on", True, '{"a": [1, 2]}', flag_id=1, version=2),
            "off": FlagResult("off", False, '"off-payload"'),
            "exp": FlagResult("exp", "variant-b", "not json"),
        },
        {"later": "missing_property:email"},
        distinct_id="user-1",
        groups={"company": "acme"},
        on_access=on_access,
    )


def test_reads():
    ev = snapshot()
    assert ev.enabled("on") is True
    assert ev.enabled("off") is False
    assert ev.enabled("exp") is True
    assert ev.enabled("absent") is False
    assert ev.enabled("absent", default=True) is True
    assert ev.enabled("off", default=True) is False  # a value always wins over the default
    assert ev.get_flag("exp") == "variant-b"
    assert ev.get_flag("off") is False
    assert ev.get_flag("later") is None
    assert ev.keys() == ["on", "off", "exp"]
    assert dict(ev.unresolved) == {"later": "missing_property:email"}


def test_payloads_are_decoded_and_do_not_count_as_access():
    calls = []
    ev = snapshot(lambda key, result, snap: calls.append(key))
    assert ev.get_flag_payload("on") == {"a": [1, 2]}
    assert ev.get_flag_payload("off") == "off-payload"
    assert ev.get_flag_payload("exp") is None  # invalid JSON reads as no payload
    assert ev.get_flag_payload("absent") is None
    assert calls == []
    assert ev.only_accessed().keys() == []


def test_hook_sees_every_value_read():
    calls = []
    ev = snapshot(
        lambda key, result, snap: calls.append(
            (key, result.value if result else None, snap.distinct_id)
        )
    )
    ev.enabled("on")
    ev.get_flag("exp")
    ev.get_flag("absent")
    assert calls == [
        ("on", True, "user-1"),
        ("exp", "variant-b", "user-1"),
        ("absent", None, "user-1"),
    ]


def test_a_failing_hook_never_reaches_the_caller():
    def boom(key, result, snap):
        raise RuntimeError("hook failed")

    assert snapshot(boom).enabled("on") is True


def test_only_accessed_and_only():
    ev = snapshot()
    ev.enabled("off")
    ev.get_flag("exp")
    ev.get_flag("absent")
    accessed = ev.only_accessed()
    assert sorted(accessed.keys()) == ["exp", "off"]
    assert accessed.only_accessed().keys() == accessed.keys()  # access history is carried over
    picked = ev.only(["on", "later", "absent"])
    assert picked.keys() == ["on"]
    assert dict(picked.unresolved) == {"later": "missing_property:email"}
    assert ev.keys() == ["on", "off", "exp"]  # the original is unchanged
    with pytest.raises(TypeError):
        ev.only("on")


def test_event_properties():
    assert snapshot().event_properties() == {
        "$feature/on": True,
        "$feature/off": False,
        "$feature/exp": "variant-b",
        "$active_feature_flags": ["exp", "on"],
    }
    assert FlagEvaluations({"x": FlagResult("x", False)}).event_properties() == {
        "$feature/x": False
    }


def test_immutable_views():
    ev = snapshot()
    with pytest.raises(TypeError):
        ev.unresolved["x"] = "y"  # type: ignore[index]
    with pytest.raises(TypeError):
        ev.results["x"] = FlagResult("x", True)  # type: ignore[index]


def test_access_tracking_is_thread_safe():
    ev = FlagEvaluations({f"k{i}": FlagResult(f"k{i}", True) for i in range(200)})
    start = threading.Barrier(5)

    def reader(offset: int) -> None:
        start.wait()
        for i in range(offset, 200, 4):
            ev.enabled(f"k{i}")

    def snapshotter() -> None:
        start.wait()
        for _ in range(200):
            ev.only_accessed()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)] + [
        threading.Thread(target=snapshotter)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ev.only_accessed().keys()) == 200


def test_wrong_key_type_raises():
    with pytest.raises(TypeError):
        snapshot().enabled(1)  # type: ignore[arg-type]
