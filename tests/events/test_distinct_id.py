"""distinct_id: `str`, `int` and `uuid.UUID` are sent as text, anything else is a TypeError at the
call (issue 12 #4); no distinct_id at all sends a personless event, as the posthog package does
(issue 12 #5); only identify/set/set_once drop it as `missing_distinct_id`."""

from __future__ import annotations

import uuid as uuid_module
from typing import Any

import posthog
import pytest
from conftest import StartInstance, assert_ledger
from hypothesis import given
from hypothesis import strategies as st

import phactor
from phactor.devserver import DevServer

KEY = "phc_distinct_id"


class _Weird:
    def __str__(self) -> str:
        return "weird"


wrong_ids = st.one_of(
    st.floats(allow_nan=False),
    st.booleans(),
    st.binary(min_size=1, max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(_Weird),
    st.builds(object),
)
good_ids = st.one_of(st.text(min_size=1, max_size=20), st.integers(-(2**63), 2**63 - 1), st.uuids())

CALLS: dict[str, Any] = {
    "capture": lambda t, d: t.capture("e", d),
    "capture_properties": lambda t, d: t.capture("e", None, {"distinct_id": d}),
    "bare_capture": lambda t, d: t.bare_capture("e", d),
    "identify": lambda t, d: t.identify(d, {"a": 1}),
    "set": lambda t, d: t.set(d, {"a": 1}),
    "set_once": lambda t, d: t.set_once(d, {"a": 1}),
    "alias": lambda t, d: t.alias(d, "other"),
    "alias_second": lambda t, d: t.alias("first", d),
    "group_identify": lambda t, d: t.group_identify("company", "acme", {}, d),
}


def test_a_distinct_id_of_a_wrong_type_is_a_type_error_everywhere(
    start_test_mode: StartInstance,
) -> None:
    inst = start_test_mode(enable_error_tracking=False)

    @given(call=st.sampled_from(sorted(CALLS)), distinct_id=wrong_ids, module=st.booleans())
    def run(call: str, distinct_id: Any, module: bool) -> None:
        before = inst.stats()["captured"]
        target: Any = inst
        if module:
            target = _Module(inst.name)
        with pytest.raises(TypeError, match=r"distinct_id|alias"):
            CALLS[call](target, distinct_id)
        assert inst.stats()["captured"] == before

    run()


def test_a_context_distinct_id_of_a_wrong_type_is_a_type_error(
    start_test_mode: StartInstance,
) -> None:
    inst = start_test_mode(enable_error_tracking=False)
    with inst.context({"distinct_id": 3.5}), pytest.raises(TypeError, match="distinct_id"):
        inst.capture("e")
    assert inst.stats()["captured"] == 0


def test_str_int_and_uuid_distinct_ids_are_sent_as_text(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    inst = start_instance(
        api_key=KEY,
        host=devserver.url,
        enable_error_tracking=False,
        flush_at=10_000,
        flush_interval=3600.0,
    )
    sent: dict[str, str] = {}

    @given(
        call=st.sampled_from(["capture", "bare_capture", "set", "capture_properties"]),
        distinct_id=good_ids,
    )
    def run(call: str, distinct_id: Any) -> None:
        uuid = CALLS[call](inst, distinct_id)
        assert uuid is not None
        sent[uuid] = str(distinct_id)

    run()
    assert inst.flush(timeout=10)
    stored = {e["uuid"]: e["distinct_id"] for e in devserver.events()}
    assert stored == sent
    assert_ledger(inst)


class _Module:
    """The module-level functions bound to one instance name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, function: str) -> Any:
        fn = getattr(phactor, function)
        return lambda *args, **kwargs: fn(*args, instance=self.name, **kwargs)


# --- personless events --------------------------------------------------------------------------


def _posthog_personless(server: DevServer) -> dict[str, Any]:
    client = posthog.Client("phc_reference", host=server.url, sync_mode=True)
    try:
        client.capture("anonymous_thing", properties={"a": 1})
    finally:
        client.shutdown()
    assert server.wait_for(1)
    (event,) = server.events()
    return event["raw"]


def test_no_distinct_id_sends_a_personless_event_as_posthog_does(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    with DevServer() as reference_server:
        expected = _posthog_personless(reference_server)
    inst = start_instance(
        api_key=KEY, host=devserver.url, sync_mode=True, enable_error_tracking=False
    )
    assert inst.capture("anonymous_thing", properties={"a": 1}) is not None
    assert inst.capture("anonymous_thing", "", {"a": 1}) is not None  # empty: no id either
    first, second = (e["raw"] for e in devserver.events())
    for ours in (first, second):
        assert uuid_module.UUID(ours["distinct_id"])
        assert uuid_module.UUID(expected["distinct_id"])
        for key in ("$process_person_profile", "a"):
            assert ours["properties"][key] == expected["properties"][key], key
    assert expected["properties"]["$process_person_profile"] is False
    assert first["distinct_id"] != second["distinct_id"]  # a fresh id each time
    assert assert_ledger(inst)["dropped"] == {}


def test_a_caller_set_process_person_profile_is_kept(start_test_mode: StartInstance) -> None:
    inst = start_test_mode(enable_error_tracking=False)
    inst.capture("e", properties={"$process_person_profile": True})
    (event,) = phactor.testing.events(inst.name)
    assert event["properties"]["$process_person_profile"] is True


@pytest.mark.parametrize("call", ["identify", "set", "set_once"])
def test_person_calls_without_distinct_id_are_dropped_missing_distinct_id(
    start_test_mode: StartInstance, call: str
) -> None:
    inst = start_test_mode(enable_error_tracking=False)
    assert getattr(inst, call)(None, {"a": 1}) is None
    stats = assert_ledger(inst)
    assert stats["dropped"] == {"missing_distinct_id": 1}
