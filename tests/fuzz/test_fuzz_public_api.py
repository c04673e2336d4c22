"""Fuzz the public event, context and delivery API with generated hostile arguments.

Every call returns within a bound, raises only TypeError/ValueError (NotStarted for an unknown
`instance=`), leaves nothing counted when it raises, and keeps
`captured == sent + sum(dropped) + queue_length() + in_flight`; what a call accepted arrives (the
test-mode record, or a real loopback server) and what it did not accept is a counted drop.

Tests marked xfail cover defects being fixed on other branches or filed for the lead (the reason
says which); they run (strict=False) so their fixes turn them green.
"""

from __future__ import annotations

import datetime as dt
import inspect
import random
import uuid as uuid_module
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from conftest import StartInstance, stored_uuids
from fuzz_support import (
    RaisingBool,
    RaisingEq,
    RaisingStr,
    bounded,
    datetimes,
    event_names,
    fuzz_timeout,
    json_hostile_values,
    ledger,
    open_defect,
    property_maps,
    run_script,
    safe_text,
    surrogate_text,
    valid_distinct_ids,
    wrong_types,
)
from hypothesis import assume, given
from hypothesis import strategies as st

import phactor
import phactor.testing
from phactor.devserver import DevServer

pytestmark = fuzz_timeout

timestamps = st.one_of(
    st.none(),
    datetimes,
    datetimes.map(lambda d: d.isoformat()),
    st.dates(min_value=dt.date(1000, 1, 2)),
    safe_text,
    wrong_types,
)
uuids = st.one_of(st.none(), st.uuids(), st.uuids().map(str), safe_text, wrong_types)
groups = st.one_of(
    st.none(),
    st.dictionaries(safe_text, valid_distinct_ids | json_hostile_values, max_size=3),
    wrong_types,
)
properties = st.one_of(st.none(), property_maps, wrong_types)


def captured_call(inst: phactor.Instance, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Call a capture-family function under the contract; the uuid when it was accepted."""
    before = ledger(inst)
    value, error = bounded(fn, *args, **kw)
    after = ledger(inst)
    if error is not None:
        # Argument checks come first: a TypeError/ValueError leaves no counted event behind.
        assert after["captured"] == before["captured"], (error, before, after)
        return None
    if value is None:
        dropped = sum(after["dropped"].values()) - sum(before["dropped"].values())
        assert dropped >= 1, ("returned None without a counted drop", before, after)
        return None
    assert isinstance(value, str)
    uuid_module.UUID(value)
    return value


def assert_all_arrived(inst: phactor.Instance, accepted: list[str]) -> None:
    events = phactor.testing.events(inst.name)
    seen = {e["uuid"] for e in events}
    missing = [u for u in accepted if u not in seen]
    assert not missing, f"{len(missing)} accepted events never arrived"
    for event in events:
        assert type(event["event"]) is str and event["event"]
        assert type(event["distinct_id"]) is str and event["distinct_id"]
        assert isinstance(event["properties"], dict)
    ledger(inst)


@pytest.fixture
def inst(start_test_mode: StartInstance) -> phactor.Instance:
    # One instance per test; hypothesis' examples share it (start cost), cleared between tests.
    return start_test_mode(enable_error_tracking=False, max_queue_size=100_000)


# --- capture / bare_capture -------------------------------------------------------------------


def test_capture_with_generated_arguments(inst: phactor.Instance) -> None:
    accepted: list[str] = []

    @given(
        function=st.sampled_from(["capture", "bare_capture", "module"]),
        event=event_names | st.just("") | wrong_types,
        distinct_id=st.none() | valid_distinct_ids,
        props=properties,
        timestamp=timestamps,
        event_uuid=uuids,
        group_map=groups,
        send_feature_flags=st.booleans(),
    )
    def run(
        function: str,
        event: Any,
        distinct_id: Any,
        props: Any,
        timestamp: Any,
        event_uuid: Any,
        group_map: Any,
        send_feature_flags: bool,
    ) -> None:
        if function == "module":
            fn: Callable[..., Any] = phactor.capture
            extra = {"instance": inst.name}
        else:
            fn, extra = getattr(inst, function), {}
        value = captured_call(
            inst,
            fn,
            event,
            distinct_id,
            props,
            timestamp=timestamp,
            uuid=event_uuid,
            groups=group_map,
            send_feature_flags=send_feature_flags,
            **extra,
        )
        if value is not None:
            accepted.append(value)

    run()
    assert_all_arrived(inst, accepted)


def test_capture_keeps_every_property_value_json_safe(inst: phactor.Instance) -> None:
    """A value of any JSON-hostile kind (no cycle, no surrogate) is sent, with its keys as text."""

    # "distinct_id" in properties is the event's distinct_id, taken out of them by design.
    keys = safe_text.filter(lambda key: key != "distinct_id")

    @given(props=st.dictionaries(keys, json_hostile_values, min_size=1, max_size=4))
    def run(props: dict[str, Any]) -> None:
        phactor.testing.clear(inst.name)
        value = captured_call(inst, inst.capture, "fuzzed", "user-1", props)
        assert value is not None  # nothing here is too large or otherwise droppable
        (event,) = phactor.testing.events(inst.name)
        assert event["uuid"] == value
        assert set(props) <= set(event["properties"])

    run()


# --- identify, set, set_once, alias, group_identify -------------------------------------------


def test_person_and_group_calls_with_generated_arguments(inst: phactor.Instance) -> None:
    accepted: list[str] = []
    ids = st.none() | valid_distinct_ids | st.just("")

    @given(
        call=st.sampled_from(["identify", "set", "set_once", "alias", "group_identify"]),
        first=ids | event_names,
        second=st.none() | valid_distinct_ids | property_maps | wrong_types,
        props=properties,
        timestamp=timestamps,
        event_uuid=uuids,
        module=st.booleans(),
    )
    def run(
        call: str,
        first: Any,
        second: Any,
        props: Any,
        timestamp: Any,
        event_uuid: Any,
        module: bool,
    ) -> None:
        # A map (its keys may repr() badly) as an alias/group key: the xfail test at the end.
        assume(call not in ("alias", "group_identify") or not isinstance(second, dict))
        fn = getattr(phactor if module else inst, call)
        kw: dict[str, Any] = {"timestamp": timestamp, "uuid": event_uuid}
        if module:
            kw["instance"] = inst.name
        if call in ("identify", "set", "set_once"):
            args: tuple[Any, ...] = (first, second)
        elif call == "alias":
            args = (first, second)
        else:
            args = (first, second, props)
        value = captured_call(inst, fn, *args, **kw)
        if value is not None:
            accepted.append(value)

    run()
    assert_all_arrived(inst, accepted)


# --- context ------------------------------------------------------------------------------------


def test_context_functions_with_generated_arguments(inst: phactor.Instance) -> None:
    """Context calls take any Mapping (else TypeError); what they set reaches the next capture."""

    @given(
        props=property_maps | wrong_types,
        event=st.none() | event_names | wrong_types,
        how=st.sampled_from(["set", "with", "module"]),
    )
    def run(props: Any, event: Any, how: str) -> None:
        phactor.testing.clear(inst.name)

        def in_a_fresh_thread() -> tuple[dict[str, Any], str | None]:
            # bounded() runs this in a new thread: a fresh, empty context every example.
            if how == "with":
                with inst.context(props, event):
                    got = inst.get_event_context(event) if event is not None else inst.get_context()
                    return got, inst.capture(event if isinstance(event, str) else "e", "u")
            if event is None:
                if how == "module":
                    phactor.set_context(props, instance=inst.name)
                    got = phactor.get_context(instance=inst.name)
                else:
                    inst.set_context(props)
                    got = inst.get_context()
            else:
                if how == "module":
                    phactor.set_event_context(event, props, instance=inst.name)
                    got = phactor.get_event_context(event, instance=inst.name)
                else:
                    inst.set_event_context(event, props)
                    got = inst.get_event_context(event)
            return got, inst.capture(event if isinstance(event, str) else "e", "u")

        before = ledger(inst)
        value, error = bounded(in_a_fresh_thread)
        if error is not None:
            assert ledger(inst)["captured"] == before["captured"]
            return
        got, event_uuid = value
        assert list(got) == list(props)
        for key in props:
            assert got[key] is props[key]
        assert event_uuid is not None
        (sent,) = phactor.testing.events(inst.name)
        assert sent["uuid"] == event_uuid
        ledger(inst)

    run()


def test_get_event_context_with_any_name_answers_or_raises_type_error(
    inst: phactor.Instance,
) -> None:
    @given(event=event_names | wrong_types)
    def run(event: Any) -> None:
        value, error = bounded(inst.get_event_context, event)
        if type(event) is str:
            assert error is None and value == {}
        else:
            assert isinstance(error, TypeError)

    run()


# --- delivery -----------------------------------------------------------------------------------

# Timeouts a caller may pass. inf and huge values are xfailed below (OverflowError today).
finite_timeouts = st.one_of(
    st.none(),
    st.floats(min_value=-1e9, max_value=3.0, allow_nan=False),
    st.just(float("nan")),
    st.integers(min_value=-(10**6), max_value=3),
)


def test_flush_queue_length_stats_with_generated_arguments(inst: phactor.Instance) -> None:
    @given(timeout=finite_timeouts | wrong_types, module=st.booleans(), n=st.integers(0, 5))
    def run(timeout: Any, module: bool, n: int) -> None:
        for i in range(n):
            inst.capture("e", f"u{i}")
        if module:
            value, error = bounded(phactor.flush, timeout, instance=inst.name)
        else:
            value, error = bounded(inst.flush, timeout)
        assert error is not None or type(value) is bool
        length, _ = bounded(inst.queue_length)
        assert type(length) is int and length >= 0
        stats, _ = bounded(phactor.stats, instance=inst.name)
        assert {"captured", "sent", "dropped", "queued", "in_flight"} <= set(stats)
        ledger(inst)

    run()
    assert inst.flush(5.0)
    assert ledger(inst)["queued"] == 0


def test_flush_with_an_infinite_or_huge_timeout_returns(start_test_mode: StartInstance) -> None:
    inst = start_test_mode()  # error tracking on (the default): flush() drains its actor first

    @given(timeout=st.floats(min_value=1e9) | st.just(float("inf")))
    def run(timeout: float) -> None:
        inst.capture("e", "u")
        value, error = bounded(inst.flush, timeout)
        assert error is None and value is True

    run()


# --- instance= and unknown keywords -------------------------------------------------------------

MODULE_CALLS: dict[str, tuple[Any, ...]] = {
    "capture": ("e", "u"),
    "bare_capture": ("e", "u"),
    "identify": ("u",),
    "set": ("u", {}),
    "set_once": ("u", {}),
    "alias": ("u", "v"),
    "group_identify": ("t", "k"),
    "capture_exception": (ValueError("x"),),
    "set_context": ({},),
    "get_context": (),
    "set_event_context": ("e", {}),
    "get_event_context": ("e",),
    "flush": (1.0,),
    "queue_length": (),
    "stats": (),
    "config": (),
    "evaluate_flags": ("u",),
    "feature_enabled": ("k", "u"),
    "get_feature_flag": ("k", "u"),
    "get_feature_flag_payload": ("k", "u"),
    "get_all_flags": ("u",),
    "get_all_flags_and_payloads": ("u",),
    "get_feature_flag_result": ("k", "u"),
    "reload_feature_flags": (),
}


SETUP_SLIP_SAFE = {
    "capture",
    "bare_capture",
    "identify",
    "set",
    "set_once",
    "alias",
    "group_identify",
    "capture_exception",
    "evaluate_flags",
    "feature_enabled",
    "get_feature_flag",
    "get_feature_flag_payload",
    "get_all_flags",
    "get_all_flags_and_payloads",
    "get_feature_flag_result",
    "reload_feature_flags",
}


def test_instance_keyword_of_any_kind_raises_only_documented_errors() -> None:
    # Realistic wrong names; an object whose repr/hash raises as a name is not fuzzed here
    # (NotStarted's message repr()s it: reported, not a defect worth a fix).
    names = st.none() | st.integers() | st.binary(max_size=4) | st.lists(st.integers(), max_size=1)

    @given(name=safe_text | names, function=st.sampled_from(sorted(MODULE_CALLS)))
    def run(name: Any, function: str) -> None:
        fn = getattr(phactor, function)
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                fn(*MODULE_CALLS[function], instance=name)
            except phactor.NotStarted as error:
                box["not_started"] = error

        _, error = bounded(call)
        # Unhashable names: TypeError. Unknown names: capture-family and flag calls answer
        # their default (issue 12 #6), the others raise NotStarted.
        if function in SETUP_SLIP_SAFE:
            assert "not_started" not in box
        else:
            assert error is not None or "not_started" in box

    run()


KNOWN_SWALLOWERS = {"identify", "set", "set_once", "alias", "group_identify"}


@pytest.mark.parametrize("function", sorted(set(MODULE_CALLS) - KNOWN_SWALLOWERS))
def test_unknown_keywords_raise_type_error(start_test_mode: StartInstance, function: str) -> None:
    inst = start_test_mode(enable_error_tracking=False)
    before = ledger(inst)
    for target, extra in ((phactor, {"instance": inst.name}), (inst, {})):
        fn = getattr(target, function)
        _, error = bounded(fn, *MODULE_CALLS[function], unknown_fuzz_option=1, **extra)
        assert isinstance(error, TypeError), (target, function)
    assert ledger(inst)["captured"] == before["captured"]


@pytest.mark.parametrize("function", sorted(KNOWN_SWALLOWERS))
def test_unknown_keywords_of_person_calls_raise_type_error(
    start_test_mode: StartInstance, function: str
) -> None:
    inst = start_test_mode(enable_error_tracking=False)
    fn = getattr(inst, function)
    _, error = bounded(fn, *MODULE_CALLS[function], unknown_fuzz_option=1)
    assert isinstance(error, TypeError)


def test_every_public_function_is_fuzzed() -> None:
    """A function added to the public API must be added to the fuzz calls above."""
    lifecycle = {"start", "stop", "instance", "instances", "context"}
    public = {
        name
        for name in phactor.__all__
        if inspect.isfunction(getattr(phactor, name, None)) and name not in lifecycle
    }
    assert public <= set(MODULE_CALLS), public - set(MODULE_CALLS)


# --- known defects, fuzzed ----------------------------------------------------------------------


def test_distinct_id_of_a_wrong_type_raises_type_error(inst: phactor.Instance) -> None:
    @open_defect
    @given(
        call=st.sampled_from(
            ["capture", "capture_prop", "identify", "set", "set_once", "capture_exception"]
        ),
        distinct_id=st.one_of(
            st.floats(),
            st.binary(min_size=1),
            st.lists(st.integers(), max_size=2),
            st.dictionaries(safe_text, st.integers(), max_size=2),
            st.builds(RaisingStr),
            st.builds(RaisingEq),
            st.builds(RaisingBool),
            st.builds(object),
        ),
    )
    def run(call: str, distinct_id: Any) -> None:
        if call == "capture":
            args: tuple[Any, ...] = ("e", distinct_id)
        elif call == "capture_prop":  # properties["distinct_id"] stands in for the argument
            call, args = "capture", ("e", None, {"distinct_id": distinct_id})
        elif call == "capture_exception":
            args = (ValueError("x"), distinct_id)
        else:
            args = (distinct_id, {})
        before = ledger(inst)
        _, error = bounded(getattr(inst, call), *args)
        assert isinstance(error, TypeError)
        assert ledger(inst)["captured"] == before["captured"]

    run()


def test_send_feature_flags_of_a_wrong_type_raises_type_error(inst: phactor.Instance) -> None:
    @given(flag=wrong_types.filter(lambda v: type(v) is not bool))
    def run(flag: Any) -> None:
        _, error = bounded(inst.capture, "e", "u", send_feature_flags=flag)
        assert isinstance(error, TypeError)

    run()


def test_lone_surrogates_anywhere_are_replaced_and_sent(inst: phactor.Instance) -> None:
    @given(
        event=surrogate_text,
        distinct_id=surrogate_text,
        key=surrogate_text,
        value=surrogate_text | st.lists(surrogate_text, max_size=3),
    )
    def run(event: str, distinct_id: str, key: str, value: Any) -> None:
        phactor.testing.clear(inst.name)
        accepted = captured_call(inst, inst.capture, event, distinct_id, {key: value})
        assert accepted is not None
        (sent,) = phactor.testing.events(inst.name)
        sent["event"].encode("utf-8")  # U+FFFD in place of each lone surrogate
        sent["distinct_id"].encode("utf-8")

    run()


def test_any_datetime_timestamp_is_accepted_or_refused_with_value_error(
    inst: phactor.Instance,
) -> None:
    @given(
        stamp=st.datetimes(timezones=st.none() | st.timezones())
        | st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
    )
    def run(stamp: Any) -> None:
        phactor.testing.clear(inst.name)
        value = captured_call(inst, inst.capture, "e", "u", timestamp=stamp)
        if value is not None:
            (sent,) = phactor.testing.events(inst.name)
            dt.datetime.fromisoformat(sent["timestamp"])
            assert len(sent["timestamp"]) == len("2026-01-01T00:00:00.000Z")

    run()


def test_ints_of_any_size_are_sent_or_counted(inst: phactor.Instance) -> None:
    @given(digits=st.integers(4000, 20_000), nested=st.booleans())
    def run(digits: int, nested: bool) -> None:
        big = 10**digits
        value = captured_call(inst, inst.capture, "e", "u", {"n": [big] if nested else big})
        assert value is not None

    run()


CYCLES_IN_A_CHILD = """
import phactor, phactor.testing, faulthandler
from hypothesis import given, settings, strategies as st
import conftest  # the suite's hypothesis profiles
from fuzz_support import CHILD_BOUND
from fuzz_support import cyclic_graph

faulthandler.dump_traceback_later(CHILD_BOUND, exit=True)  # a hang ends the child (the parent fails)
inst = phactor.start("fuzz", test_mode=True, enable_error_tracking=False)
spec = st.lists(
    st.tuples(st.booleans(), st.lists(st.integers(0, 50), min_size=1, max_size=3)),
    min_size=1, max_size=6,
)

@given(spec=spec, in_list=st.booleans())
def run(spec, in_list):
    graph = cyclic_graph(spec)
    uid = inst.capture("e", "u", {"graph": [graph] if in_list else graph})
    assert uid is not None
    stats = inst.stats()
    assert stats["captured"] == stats["sent"] + sum(stats["dropped"].values()) + stats["queued"] + stats["in_flight"]

run()
assert inst.flush(10)
inst.stop(5)
"""


def test_cyclic_property_graphs_are_cut_and_sent() -> None:
    # In a child bounded in time and memory: today the first cyclic example runs for ever.
    run_script(CYCLES_IN_A_CHILD)


DAG_IN_A_CHILD = """
import time, phactor
inst = phactor.start("fuzz", test_mode=True, enable_error_tracking=False)
node = {}
for _ in range(40):  # 41 containers, no cycle: each level references the one below twice
    node = {"left": node, "right": node}
start = time.monotonic()
uid = inst.capture("e", "u", {"dag": node})
took = time.monotonic() - start
print("capture returned", uid, "after", took, "s", inst.stats()["dropped"])
assert took < 5, took
"""


def test_a_shared_acyclic_value_is_encoded_in_bounded_time_and_memory() -> None:
    run_script(DAG_IN_A_CHILD, timeout=30, memory_mb=1024)


# --- a real server: what was accepted arrives, exactly once -----------------------------------


def test_accepted_events_arrive_at_a_real_server(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    inst = start_instance(
        api_key="phc_fuzz",
        host=devserver.url,
        enable_error_tracking=False,
        flush_at=20,
        flush_interval=0.05,
        max_event_bytes=64 * 1024,
    )
    accepted: list[str] = []

    @given(
        event=event_names,
        distinct_id=valid_distinct_ids,
        props=st.none() | property_maps,
        group_map=st.none() | st.dictionaries(safe_text, valid_distinct_ids, max_size=2),
    )
    def run(event: str, distinct_id: Any, props: Any, group_map: Any) -> None:
        value = captured_call(inst, inst.capture, event, distinct_id, props, groups=group_map)
        if value is not None:
            accepted.append(value)

    run()
    assert inst.flush(10.0)
    stats = ledger(inst)
    assert stats["sent"] == len(accepted), stats
    stored = stored_uuids(devserver)
    # Counted per uuid: hypothesis seeds the global `random` per example, and phactor's uuids
    # come from it (see the xfail test below), so two examples may share one.
    wanted = Counter(accepted)
    wrong = {u: (stored[u], n) for u, n in wanted.items() if stored[u] != n}
    assert not wrong, f"accepted events missing or duplicated (stored, accepted): {wrong}"
    assert sum(stored.values()) == len(accepted)


def test_before_send_results_of_any_shape_cost_only_their_own_event(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    bad_results: list[Any] = []

    def hook(event: dict[str, Any]) -> Any:
        if event["event"] == "bad":
            return bad_results[-1]
        return event

    inst = start_instance(
        api_key="phc_fuzz",
        host=devserver.url,
        enable_error_tracking=False,
        before_send=hook,
        flush_at=1000,
        flush_interval=60.0,
    )

    @given(
        result=st.fixed_dictionaries(
            {},
            optional={
                "event": event_names | wrong_types | st.just(""),
                "distinct_id": valid_distinct_ids | wrong_types | st.just(""),
                "uuid": st.uuids().map(str) | safe_text | wrong_types,
                "properties": property_maps | wrong_types,
                "timestamp": safe_text | wrong_types,
            },
        )
    )
    def run(result: dict[str, Any]) -> None:
        devserver.clear()
        bad_results.append(result)
        good = [inst.capture("good", f"u{i}") for i in range(3)]
        before = ledger(inst)
        _, error = bounded(inst.capture, "bad", "u")
        assert error is None
        good += [inst.capture("good", f"v{i}") for i in range(3)]
        assert inst.flush(10.0)
        stats = ledger(inst)
        stored = stored_uuids(devserver)
        assert all(stored[u] == 1 for u in good), "a valid event was lost with the bad one"
        assert stats["sent"] + sum(stats["dropped"].values()) >= before["captured"]

    run()


def test_event_uuids_do_not_depend_on_the_apps_random_state(inst: phactor.Instance) -> None:
    @given(seed=st.integers())
    def run(seed: int) -> None:
        uuids = set()
        for _ in range(5):
            random.seed(seed)
            uuids.add(inst.capture("e", "u"))
        assert len(uuids) == 5, "captures after the same seed share a uuid"
        random.seed(seed)
        expected = random.random()
        random.seed(seed)
        inst.capture("e", "u")
        assert random.random() == expected, "capture() consumed the app's random numbers"

    run()


@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("capture", (RaisingStr(), "u")),
        ("bare_capture", (RaisingStr(), "u")),
        ("alias", ("u", RaisingStr())),
        ("alias", (RaisingStr(), "u")),
        ("group_identify", (RaisingStr(), "k")),
        ("group_identify", ("t", RaisingStr())),
    ],
)
def test_a_wrong_argument_whose_repr_raises_gives_a_type_error(
    inst: phactor.Instance, function: str, args: tuple[Any, ...]
) -> None:
    _, error = bounded(getattr(inst, function), *args)
    assert isinstance(error, TypeError)


def test_testing_helpers_with_generated_arguments(inst: phactor.Instance) -> None:
    names = safe_text | st.none() | st.integers() | st.lists(st.integers(), max_size=1)

    def answered(call: Callable[[], Any]) -> tuple[bool, BaseException | None]:
        """(NotStarted raised, other TypeError/ValueError raised)."""
        box: dict[str, Any] = {}

        def guarded() -> None:
            try:
                call()
            except phactor.NotStarted:
                box["not_started"] = True

        _, error = bounded(guarded)
        return "not_started" in box, error

    @given(name=names | st.just(inst.name), flush=st.booleans() | st.none() | st.integers())
    def run(name: Any, flush: Any) -> None:
        for call in (
            lambda: phactor.testing.events(name, flush=flush),
            lambda: phactor.testing.clear(name),
        ):
            not_started, error = answered(call)
            if name == inst.name:
                assert error is None and not not_started
            else:
                assert error is not None or not_started

    run()
