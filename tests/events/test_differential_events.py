"""Differential: the same calls through the `posthog` package (the reference) and phactor,
each posting to its own DevServer, must give the same wire shape.

Where phactor deliberately differs (checked below, not hidden):
- `$lib` is "phactor" (posthog: "posthog-python"), `$lib_version` is ours.
- `uuid` is a UUIDv7 (time-ordered); posthog sends v4.
- `timestamp` is ISO-8601 UTC with milliseconds and `Z`; posthog sends microseconds `+00:00`.
- posthog's system context (`$is_server`, `$os*`, `$python_*`) is sent with the same values,
  on every event (posthog puts it on `capture` events only, not on `$set`, `$create_alias`, ...).
- `group_identify` without a distinct_id: phactor sends `$<group_type>_<group_key>`; posthog a
  random personless uuid.
- `identify` (`$identify` with `properties.$set`) has no counterpart in posthog 7 (removed there);
  phactor's follows the posthog-node / protocol shape and is checked on its own.
"""

from __future__ import annotations

import re
import uuid as uuid_module
from collections.abc import Callable, Iterator
from typing import Any

import posthog
import pytest

import phactor
from phactor.devserver import DevServer

RUNTIME_PROPERTIES = {
    "$is_server",
    "$os",
    "$os_distro",
    "$os_version",
    "$python_runtime",
    "$python_version",
}
PHACTOR_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

Call = tuple[Callable[[Any], Any], Callable[[phactor.Instance], Any]]

CASES: dict[str, Call] = {
    "capture": (
        lambda c: c.capture(
            "clicked", distinct_id="u1", properties={"a": 1, "nested": {"b": [1, 2]}}
        ),
        lambda p: p.capture("clicked", "u1", {"a": 1, "nested": {"b": [1, 2]}}),
    ),
    "capture_groups": (
        lambda c: c.capture("clicked", distinct_id="u1", groups={"company": "acme"}),
        lambda p: p.capture("clicked", "u1", groups={"company": "acme"}),
    ),
    "set": (
        lambda c: c.set(distinct_id="u1", properties={"name": "Ann"}),
        lambda p: p.set("u1", {"name": "Ann"}),
    ),
    "set_once": (
        lambda c: c.set_once(distinct_id="u1", properties={"first_seen": "2026-01-01"}),
        lambda p: p.set_once("u1", {"first_seen": "2026-01-01"}),
    ),
    "alias": (
        # posthog.alias(previous_id, distinct_id) sends the event as `previous_id`.
        lambda c: c.alias("u1", "u1-alias"),
        lambda p: p.alias("u1", "u1-alias"),
    ),
    "group_identify": (
        lambda c: c.group_identify("company", "acme", {"size": 5}, distinct_id="u1"),
        lambda p: p.group_identify("company", "acme", {"size": 5}, distinct_id="u1"),
    ),
}


@pytest.fixture(scope="module")
def reference_events() -> Iterator[dict[str, dict[str, Any]]]:
    """Each case sent once through the posthog package, to a loopback DevServer."""
    with DevServer() as server:
        client = posthog.Client("phc_reference", host=server.url, sync_mode=True)
        try:
            results: dict[str, dict[str, Any]] = {}
            for name, (reference, _) in CASES.items():
                server.clear()
                reference(client)
                assert server.wait_for(1), name
                (stored,) = server.events()
                results[name] = {"raw": stored["raw"], "path": server.requests[0].path}
        finally:
            client.shutdown()
        yield results


@pytest.mark.parametrize("case", list(CASES))
def test_same_wire_shape_as_posthog(
    case: str, reference_events: dict[str, dict[str, Any]], devserver: DevServer, instance_name: str
) -> None:
    expected = reference_events[case]["raw"]
    inst = phactor.start(instance_name, api_key="phc_ours", host=devserver.url, sync_mode=True)
    CASES[case][1](inst)
    assert devserver.wait_for(1)
    (stored,) = devserver.events()
    ours = stored["raw"]
    assert devserver.requests[0].path == reference_events[case]["path"] == "/batch/"

    assert ours["event"] == expected["event"]
    assert ours["distinct_id"] == expected["distinct_id"]
    assert set(ours) == set(expected)  # same top-level keys: $set / $set_once sit beside properties
    for key in ("$set", "$set_once"):
        assert ours.get(key) == expected.get(key)

    ours_props, their_props = ours["properties"], expected["properties"]
    assert set(ours_props) - RUNTIME_PROPERTIES == set(their_props) - RUNTIME_PROPERTIES
    assert RUNTIME_PROPERTIES - {"$os_distro"} <= set(ours_props)
    for key, value in their_props.items():
        if key in ("$lib", "$lib_version"):
            continue
        # $groups, $group_*, alias, user properties, and the runtime properties' values
        assert ours_props[key] == value, key

    # The deliberate differences, pinned so a change is noticed.
    assert their_props["$lib"] == "posthog-python" and ours_props["$lib"] == "phactor"
    assert ours_props["$lib_version"] == phactor.__version__
    assert uuid_module.UUID(ours["uuid"]).version == 7
    assert uuid_module.UUID(expected["uuid"]).version == 4
    assert PHACTOR_TS.match(ours["timestamp"])


def test_group_identify_without_distinct_id(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(instance_name, api_key="phc_ours", host=devserver.url, sync_mode=True)
    inst.group_identify("company", "acme", {"size": 5})
    (stored,) = devserver.events()
    assert stored["distinct_id"] == "$company_acme"
    assert stored["properties"]["$group_set"] == {"size": 5}


def test_identify_shape(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(instance_name, api_key="phc_ours", host=devserver.url, sync_mode=True)
    inst.identify("u1", {"email": "ann@example.com"})
    (stored,) = devserver.events()
    raw = stored["raw"]
    assert raw["event"] == "$identify" and raw["distinct_id"] == "u1"
    assert raw["properties"]["$set"] == {"email": "ann@example.com"}
    assert "$set" not in raw  # inside properties for $identify, unlike the $set event
