"""The pure event-building module, and odd property values through the whole test-mode pipeline."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import re
import uuid as uuid_module
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import phactor
import phactor.testing
from phactor import encoding as enc
from phactor import events as ev

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_new_uuid_is_v7_and_time_ordered() -> None:
    ids = [ev.new_uuid() for _ in range(200)]
    assert len(set(ids)) == 200
    for value in ids:
        parsed = uuid_module.UUID(value)
        assert parsed.version == 7
        assert parsed.variant == uuid_module.RFC_4122
    # The 48-bit ms prefix never goes backwards within a process.
    prefixes = [v.replace("-", "")[:12] for v in ids]
    assert prefixes == sorted(prefixes)


def test_new_uuid4_is_random_v4() -> None:
    ids = [ev.new_uuid4() for _ in range(500)]
    assert len(set(ids)) == 500
    for value in ids:
        parsed = uuid_module.UUID(value)
        assert (parsed.version, parsed.variant) == (4, uuid_module.RFC_4122)
        assert str(parsed) == value
    # Random, not time-ordered: the leading digits of consecutive ids do not follow each other.
    assert len({v[:4] for v in ids}) > 100


def test_now_iso_is_utc_with_milliseconds() -> None:
    assert ISO_MS.match(ev.now_iso())


@given(st.integers(0, 2**48 - 1), st.integers(0, 2**76 - 1))
def test_stamp_is_a_v7_uuid_and_the_timestamp_of_the_same_millisecond(ms: int, bits: int) -> None:
    # One clock reading for both (capture()'s fast path): any millisecond, any random bits.
    ns = ms * 1_000_000 + 999_999
    with (
        mock.patch.object(ev, "_time_ns", return_value=ns),
        mock.patch.object(ev, "_random_bits", return_value=bits),
    ):
        value, iso = ev.stamp()
        again = ev.stamp()
    parsed = uuid_module.UUID(value)
    assert str(parsed) == value
    assert (parsed.version, parsed.variant) == (7, uuid_module.RFC_4122)
    assert parsed.int >> 80 == ms
    assert (parsed.int >> 64) & 0xFFF == bits >> 64  # rand_a: 12 random bits
    assert parsed.int & (2**62 - 1) == bits & (2**62 - 1)  # rand_b: 62 random bits
    assert again == (value, iso)  # the cached texts of the millisecond
    if ms < 253402300800000:  # before year 10000 (what ISO-8601 writes in 4 digits)
        expected = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).replace(
            microsecond=(ms % 1000) * 1000
        )
        assert ISO_MS.match(iso)
        assert iso == ev.format_timestamp(expected)


def test_stamp_uuids_are_unique_and_time_ordered() -> None:
    stamps = [ev.stamp() for _ in range(500)]
    values = [v for v, _ in stamps]
    assert len(set(values)) == 500
    assert [v[:13] for v in values] == sorted(v[:13] for v in values)
    assert [t for _, t in stamps] == sorted(t for _, t in stamps)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2026, 1, 2, 3, 4, 5, 678901), "2026-01-02T03:04:05.678Z"),
        (
            dt.datetime(2026, 1, 2, 5, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2026-01-02T03:04:05.000Z",
        ),
        (dt.date(2026, 1, 2), "2026-01-02T00:00:00.000Z"),
        ("2026-01-02T03:04:05+00:00", "2026-01-02T03:04:05.000Z"),
    ],
)
def test_format_timestamp(value: Any, expected: str) -> None:
    assert ev.format_timestamp(value) == expected


def test_format_timestamp_rejects_bad_input() -> None:
    with pytest.raises(TypeError):
        ev.format_timestamp(12345)
    with pytest.raises(ValueError):
        ev.format_timestamp("yesterday")


def test_normalize_uuid() -> None:
    u = uuid_module.uuid4()
    assert ev.normalize_uuid(u) == str(u)
    assert ev.normalize_uuid(str(u).upper()) == str(u)
    with pytest.raises(ValueError):
        ev.normalize_uuid("nope")
    with pytest.raises(TypeError):
        ev.normalize_uuid(5)


def test_build_event_shape() -> None:
    message = ev.build_event(
        "clicked",
        "u1",
        {"a": 1},
        timestamp="2026-01-01T00:00:00.000Z",
        uuid="0192f0c4-0000-7000-8000-000000000000",
        groups={"company": "acme"},
        top_level={"$set": {"name": "x"}},
    )
    assert set(message) == {"event", "distinct_id", "properties", "timestamp", "uuid", "$set"}
    props = message["properties"]
    assert props["$lib"] == "phactor"
    assert props["$lib_version"] == phactor.__version__
    assert props["$groups"] == {"company": "acme"}
    assert props["a"] == 1


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    when: dt.date


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:  # hypothesis prints failing examples with repr()
        return "Unprintable()"


def test_json_safe_conversions() -> None:
    data = {
        "dt": dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC),
        "date": dt.date(2026, 1, 1),
        "time": dt.time(1, 2, 3),
        "dec": Decimal("1.5"),
        "nan_dec": Decimal("NaN"),
        "uuid": uuid_module.UUID(int=1),
        "set": {1},
        "frozen": frozenset({"a"}),
        "bytes": b"hi\xff",
        "enum": Colour.RED,
        "dc": Point(1, dt.date(2026, 1, 1)),
        "path": PurePosixPath("/tmp/x"),
        "huge": 2**100,
        "nan": float("nan"),
        "bad": Unprintable(),
        (1, 2): "tuple key",
    }
    decoded = json.loads(enc.encode({"properties": data}))["properties"]
    assert decoded["date"] == "2026-01-01"
    assert decoded["dec"] == 1.5
    assert decoded["nan_dec"] == "NaN"
    assert decoded["uuid"] == str(uuid_module.UUID(int=1))
    assert decoded["set"] == [1]
    assert decoded["bytes"].startswith("hi")
    assert decoded["enum"] == "red"
    assert decoded["dc"]["x"] == 1
    assert decoded["path"] == "/tmp/x"
    assert decoded["huge"] == str(2**100)
    assert decoded["nan"] is None
    assert decoded["bad"].startswith("<unrepresentable")
    assert decoded["(1, 2)"] == "tuple key"


def test_encode_survives_cycles() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    assert json.loads(enc.encode({"properties": cyclic}))


# --- hypothesis: odd values through the whole test-mode pipeline ---------------------------

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**130), max_value=2**130),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
    st.times(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.uuids(),
    st.sampled_from([Colour.RED, Path("a/b"), PurePosixPath("/x"), Unprintable(), object()]),
    st.builds(Point, st.integers(), st.dates()),
    st.frozensets(st.integers(), max_size=3),
    st.sets(st.text(max_size=5), max_size=3),
)
weird_keys = st.one_of(
    st.text(max_size=10),
    st.integers(),
    st.none(),
    st.tuples(st.integers(), st.integers()),
    st.just(Unprintable()),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(weird_keys, inner, max_size=4),
    ),
    max_leaves=12,
)
properties = st.dictionaries(st.text(max_size=12), values, max_size=6)


def test_odd_property_values_never_raise_and_arrive(instance_name: str) -> None:
    inst = phactor.start(instance_name, test_mode=True, flush_at=50)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(props=properties)
    def check(props: dict[str, Any]) -> None:
        phactor.testing.clear(instance_name)
        event_uuid = inst.capture("odd", "user-1", props)
        assert event_uuid is not None
        sent = phactor.testing.events(instance_name)
        assert [e["uuid"] for e in sent] == [event_uuid]
        # Strict JSON (no NaN/Infinity literals) round-trips.
        text = orjson.dumps(sent[0]).decode()
        assert json.loads(text)["properties"]["$lib"] == "phactor"

    check()
    stats = inst.stats()
    assert stats["sent"] == stats["captured"]
    assert stats["dropped"] == {}


def test_checked_event_accepts_what_capture_accepts_and_names_what_is_wrong() -> None:
    built = ev.build_event(
        "e", "u1", {}, timestamp="2026-01-01T00:00:00.000Z", uuid=ev.new_uuid()
    )
    assert ev.checked_event(dict(built), built) == built
    assert ev.checked_event({**built, "distinct_id": 7}, built)["distinct_id"] == "7"
    assert ev.checked_event({**built, "uuid": None}, built)["uuid"] == built["uuid"]
    assert "timestamp" not in ev.checked_event({**built, "timestamp": None}, built)
    upper = str(uuid_module.UUID(int=5)).upper()
    assert ev.checked_event({**built, "uuid": upper}, built)["uuid"] == str(uuid_module.UUID(int=5))
    for bad, words in [
        ([built], "result must be a dict, got list"),
        ({**built, "event": ""}, "event must be a non-empty str, got an empty str"),
        ({**built, "distinct_id": None}, "distinct_id must be a non-empty str, got None"),
        ({**built, "distinct_id": False}, "got bool"),
        ({**built, "uuid": "x"}, "uuid must be a UUID"),
        ({**built, "properties": "x"}, "properties must be a dict, got str"),
        ({**built, "timestamp": 5}, "timestamp must be ISO-8601, got int"),
    ]:
        with pytest.raises(ValueError, match=words):
            ev.checked_event(bad, built)
