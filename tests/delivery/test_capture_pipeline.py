"""capture() -> Batcher -> Senders -> a real loopback endpoint: batching, delivery, ledger."""

from __future__ import annotations

import datetime as dt
import threading
import uuid as uuid_module
from typing import Any

import pytest
from conftest import assert_ledger, wait_until
from hypothesis import given
from hypothesis import strategies as st

import phactor
from phactor.devserver import DevServer

KEY = "phc_pipeline"


def test_two_instances_two_servers_each_event_once_at_the_right_one(instance_name: str) -> None:
    with DevServer() as server_a, DevServer() as server_b:
        a = phactor.start(f"{instance_name}-a", api_key="phc_a", host=server_a.url, flush_at=7)
        b = phactor.start(f"{instance_name}-b", api_key="phc_b", host=server_b.url, flush_at=11)
        sent_a: list[str | None] = []
        sent_b: list[str | None] = []

        def produce(n: int) -> None:
            for i in range(100):
                sent_a.append(phactor.capture("ev_a", f"a{n}-{i}", instance=a.name))
                sent_b.append(b.capture("ev_b", f"b{n}-{i}", {"n": n}))

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert a.flush(timeout=10) and b.flush(timeout=10)
        assert server_a.wait_for(400) and server_b.wait_for(400)

        for server, uuids, key, name in (
            (server_a, sent_a, "phc_a", "ev_a"),
            (server_b, sent_b, "phc_b", "ev_b"),
        ):
            counts = server.uuid_counts()
            assert None not in uuids
            assert set(counts) == set(uuids)
            assert set(counts.values()) == {1}
            assert server.count() == server.count(api_key=key) == 400
            assert server.count(event=name) == 400
            assert {r.path for r in server.requests} == {"/batch/"}
        assert assert_ledger(a)["sent"] == 400
        assert assert_ledger(b)["sent"] == 400
        a.stop(timeout=5)
        b.stop(timeout=5)


def test_flush_at_sends_without_flush(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(
        instance_name, api_key=KEY, host=devserver.url, flush_at=10, flush_interval=3600.0
    )
    for i in range(9):
        inst.capture("e", f"u{i}")
    assert inst.queue_length() == 9
    assert devserver.count() == 0
    inst.capture("e", "u9")
    assert devserver.wait_for(10)
    assert wait_until(lambda: inst.stats()["sent"] == 10)
    assert devserver.request_count() == 1
    assert_ledger(inst)


def test_flush_interval_sends_a_partial_batch(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(
        instance_name, api_key=KEY, host=devserver.url, flush_at=1000, flush_interval=0.1
    )
    inst.capture("e", "u1")
    assert devserver.wait_for(1)
    assert_ledger(inst)


def test_flush_blocks_until_delivered(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(
        instance_name, api_key=KEY, host=devserver.url, flush_at=1000, flush_interval=3600.0
    )
    devserver.delay(0.1)
    for i in range(25):
        inst.capture("e", f"u{i}")
    assert inst.flush(timeout=10)
    assert devserver.count() == 25  # already stored when flush() returns
    stats = assert_ledger(inst)
    assert stats["sent"] == 25 and stats["queued"] == stats["in_flight"] == 0


def test_flush_timeout_returns_false(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(instance_name, api_key=KEY, host=devserver.url, flush_interval=3600.0)
    devserver.delay(0.5)
    inst.capture("e", "u1")
    assert inst.flush(timeout=0.05) is False
    assert_ledger(inst)
    devserver.delay(0)


def test_wire_format(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(instance_name, api_key=KEY, host=devserver.url)
    uuid = inst.capture("signed_up", "u1", {"plan": "pro"}, groups={"company": "acme"})
    assert inst.flush(timeout=5)
    (request,) = devserver.requests
    assert request.method == "POST" and request.path == "/batch/"
    assert request.api_key == KEY
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["user-agent"].startswith("phactor/")
    (stored,) = devserver.events()
    raw = stored["raw"]
    assert raw["uuid"] == uuid
    assert set(raw) == {"event", "distinct_id", "properties", "timestamp", "uuid"}
    assert raw["properties"]["$groups"] == {"company": "acme"}
    assert raw["properties"]["$lib"] == "phactor"


def test_senders_keep_their_connection_alive(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(instance_name, api_key=KEY, host=devserver.url, senders=1, flush_at=5)
    for i in range(30):
        inst.capture("e", f"u{i}")
    assert inst.flush(timeout=5)
    assert devserver.request_count() >= 2
    assert len({r.peer for r in devserver.requests}) == 1


def test_queue_full_drops_and_counts(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(
        instance_name,
        api_key=KEY,
        host=devserver.url,
        max_queue_size=5,
        flush_at=10_000,
        flush_interval=3600.0,
    )
    results = [inst.capture("e", f"u{i}") for i in range(8)]
    assert results[:5] == [r for r in results[:5] if r]
    assert results[5:] == [None, None, None]
    assert inst.stats()["dropped"] == {"queue_full": 3}
    assert_ledger(inst)
    assert inst.flush(timeout=5)
    assert devserver.count() == 5


@pytest.mark.parametrize(("status", "reason"), [(401, "unauthorized"), (400, "rejected")])
def test_failed_post_is_counted_and_reported(
    devserver: DevServer, instance_name: str, status: int, reason: str
) -> None:
    errors: list[tuple[Any, list[dict[str, Any]]]] = []
    inst = phactor.start(
        instance_name,
        api_key=KEY,
        host=devserver.url,
        on_error=lambda error, events: errors.append((error, events)),
    )
    devserver.fail_next(1, status=status)
    uuid = inst.capture("e", "u1")
    assert inst.flush(timeout=5)
    stats = assert_ledger(inst)
    assert stats["dropped"] == {reason: 1}
    ((error, events),) = errors
    assert error.reason == reason and error.status == status
    assert [e["uuid"] for e in events] == [uuid]
    # The next batch goes through normally.
    inst.capture("e", "u2")
    assert inst.flush(timeout=5)
    assert devserver.wait_for(1)
    assert assert_ledger(inst)["sent"] == 1


def test_before_send_modify_drop_and_raise(devserver: DevServer, instance_name: str) -> None:
    def hook(message: dict[str, Any]) -> dict[str, Any] | None:
        name = message["event"]
        if name == "drop_me":
            return None
        if name == "explode":
            message["properties"]["half_done"] = True
            raise RuntimeError("hook bug")
        message["properties"]["hooked"] = True
        return message

    inst = phactor.start(instance_name, api_key=KEY, host=devserver.url, before_send=hook)
    assert inst.capture("drop_me", "u1") is None
    # A raising hook drops its event (see tests/events/test_before_send_error.py).
    assert inst.capture("explode", "u1", {"a": 1}) is None
    modified = inst.capture("normal", "u1")
    assert modified
    assert inst.flush(timeout=5)
    by_event = {e["event"]: e["properties"] for e in devserver.events()}
    assert set(by_event) == {"normal"}
    assert by_event["normal"]["hooked"] is True
    stats = assert_ledger(inst)
    assert stats["dropped"] == {"before_send": 1, "before_send_error": 1}


def test_event_too_large(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(instance_name, api_key=KEY, host=devserver.url, max_event_bytes=1024)
    assert inst.capture("big", "u1", {"blob": "x" * 2000}) is None
    assert inst.capture("small", "u1", {"blob": "x" * 10}) is not None
    assert inst.flush(timeout=5)
    assert devserver.count() == 1
    stats = assert_ledger(inst)
    assert stats["dropped"] == {"event_too_large": 1}


def test_stop_drains_the_queue(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(
        instance_name, api_key=KEY, host=devserver.url, flush_at=10_000, flush_interval=3600.0
    )
    for i in range(40):
        inst.capture("e", f"u{i}")
    assert inst.stop(timeout=5)
    assert devserver.count() == 40
    final = assert_ledger(inst)
    assert final["sent"] == 40 and final["queued"] == 0


def test_stop_past_deadline_counts_what_was_left(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(
        instance_name,
        api_key=KEY,
        host=devserver.url,
        senders=1,
        flush_at=5,
        flush_interval=3600.0,
        retry_base_delay=0.05,
    )
    devserver.set_mode("error", status=503)  # every attempt is retried, never delivered
    for i in range(20):
        inst.capture("e", f"u{i}")
    assert inst.stop(timeout=0.5) is False
    final = assert_ledger(inst)
    # Nothing may stay "queued" or "in flight" in the figures of a stopped instance.
    assert final["queued"] == 0 and final["in_flight"] == 0
    assert final["dropped"].get("shutdown") == 20
    devserver.reset_faults()


# --- what before_send returns is checked like capture()'s own arguments -----------------------

DELETE = object()  # a field the hook removes


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("distinct_id", DELETE),
        ("distinct_id", ""),
        ("distinct_id", {"id": 1}),
        ("distinct_id", True),
        ("event", DELETE),
        ("event", ""),
        ("event", 5),
        ("uuid", "not-a-uuid"),
        ("uuid", 12),
        ("properties", ["a"]),
        ("properties", None),
        ("timestamp", "yesterday"),
        (None, ["not", "a", "dict"]),
        (None, "a str"),
    ],
)
def test_an_invalid_before_send_result_drops_only_that_event(
    devserver: DevServer, instance_name: str, field: str | None, value: Any
) -> None:
    def hook(message: dict[str, Any]) -> Any:
        if message["properties"]["n"] != 37:
            return message
        if field is None:
            return value
        if value is DELETE:
            del message[field]
        else:
            message[field] = value
        return message

    inst = phactor.start(
        instance_name, api_key=KEY, host=devserver.url, before_send=hook, flush_at=100
    )
    uuids = [inst.capture("e", "u1", {"n": n}) for n in range(100)]
    assert inst.flush(timeout=5)
    # Before: the server refused the whole batch of 100 for the one bad event (or, for a result
    # that is not a dict, the unhooked event was sent as if the hook had kept it).
    assert sorted(e["properties"]["n"] for e in devserver.events()) == [
        n for n in range(100) if n != 37
    ]
    assert uuids[37] is None and all(u for n, u in enumerate(uuids) if n != 37)
    stats = assert_ledger(inst)
    assert stats["dropped"] == {"before_send_invalid": 1} and stats["sent"] == 99


def test_before_send_result_is_normalised_like_capture_arguments(
    devserver: DevServer, instance_name: str
) -> None:
    fixed = uuid_module.UUID(int=7)

    def hook(message: dict[str, Any]) -> Any:
        n = message["properties"]["n"]
        if n == 0:
            message["distinct_id"] = 42  # an int id, as capture() takes it
        elif n == 1:
            del message["uuid"]  # the uuid it was built with
        elif n == 2:
            message["uuid"] = fixed
            message["timestamp"] = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        return message

    inst = phactor.start(instance_name, api_key=KEY, host=devserver.url, before_send=hook)
    uuids = [inst.capture("e", "u1", {"n": n}) for n in range(3)]
    assert inst.flush(timeout=5)
    by_n = {e["properties"]["n"]: e for e in devserver.events()}
    assert by_n[0]["distinct_id"] == "42"
    assert by_n[1]["uuid"] == uuids[1]
    assert by_n[2]["uuid"] == uuids[2] == str(fixed)
    assert by_n[2]["timestamp"] == "2026-01-02T03:04:05.000Z"
    assert assert_ledger(inst)["sent"] == 3


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=40),
    st.uuids(),
    st.uuids().map(str),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(DELETE),
)
changes = st.dictionaries(
    st.sampled_from(["event", "distinct_id", "uuid", "properties", "timestamp", "$set"]),
    anything,
    max_size=3,
)


def test_whatever_before_send_returns_never_loses_the_batch(
    devserver: DevServer, instance_name: str
) -> None:
    current: dict[str, Any] = {}

    def hook(message: dict[str, Any]) -> Any:
        if message["event"] != "hooked":
            return message
        for field, value in current.items():
            if value is DELETE:
                message.pop(field, None)
            else:
                message[field] = value
        return message

    inst = phactor.start(instance_name, api_key=KEY, host=devserver.url, before_send=hook)

    @given(change=changes)
    def check(change: dict[str, Any]) -> None:
        current.clear()
        current.update(change)
        devserver.clear()
        before = inst.stats()["dropped"].get("before_send_invalid", 0)
        hooked = inst.capture("hooked", "u1")
        plain = inst.capture("plain", "u1")
        assert inst.flush(timeout=5)
        stats = assert_ledger(inst)
        arrived = {e["uuid"] for e in devserver.events()}
        # The plain event always arrives: a bad hook result never takes its batch down with it.
        assert plain in arrived
        assert set(stats["dropped"]) <= {"before_send_invalid"}
        invalid = stats["dropped"].get("before_send_invalid", 0) - before
        assert (hooked is None) == (invalid == 1)
        assert len(arrived) == 2 - invalid

    check()
