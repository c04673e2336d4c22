"""Context in contextvars: per thread, per asyncio task, per instance; scoping and precedence."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import phactor
import phactor.testing


@pytest.fixture
def inst(instance_name: str) -> phactor.Instance:
    return phactor.start(
        instance_name, test_mode=True, global_properties={"layer": "global", "g": 1}
    )


def sent(inst: phactor.Instance) -> list[dict[str, Any]]:
    return phactor.testing.events(inst.name)


def run_in_thread(fn: Any) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as error:  # surfaced in the test thread
            box["error"] = error

    t = threading.Thread(target=target)
    t.start()
    t.join(10)
    assert not t.is_alive()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_new_thread_starts_empty(inst: phactor.Instance) -> None:
    inst.set_context({"distinct_id": "main-user", "request": "r1"})
    assert run_in_thread(inst.get_context) == {}
    # A thread's context stays in that thread.
    run_in_thread(lambda: inst.set_context({"from_thread": True}))
    assert inst.get_context() == {"distinct_id": "main-user", "request": "r1"}
    # A capture from a new thread does not pick the main thread's distinct_id up: personless.
    assert run_in_thread(lambda: inst.capture("no_id")) is not None
    assert _personless(sent(inst)[-1])


def test_asyncio_task_context_does_not_leak(inst: phactor.Instance) -> None:
    async def child(n: int, started: asyncio.Event, release: asyncio.Event) -> dict[str, Any]:
        inst.set_context({"task": n})
        started.set()
        await release.wait()  # siblings set theirs meanwhile
        inst.capture("in_task", f"user-{n}")
        return inst.get_context()

    async def main() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        inst.set_context({"parent": True})
        release = asyncio.Event()
        starts = [asyncio.Event() for _ in range(3)]
        tasks = [asyncio.create_task(child(n, starts[n], release)) for n in range(3)]
        for started in starts:
            await started.wait()
        release.set()
        results = await asyncio.gather(*tasks)
        return results, inst.get_context()

    results, parent_after = asyncio.run(main())
    # A task starts with a copy of its creator's context, and what it sets stays inside it.
    assert results == [{"parent": True, "task": n} for n in range(3)]
    assert parent_after == {"parent": True}
    by_user = {e["distinct_id"]: e["properties"]["task"] for e in sent(inst)}
    assert by_user == {"user-0": 0, "user-1": 1, "user-2": 2}


def test_with_context_restores_on_exit_and_on_error(inst: phactor.Instance) -> None:
    inst.set_context({"a": 1})
    with inst.context({"a": 2, "b": 3}):
        assert inst.get_context() == {"a": 2, "b": 3}
        with phactor.context({"c": 4}, instance=inst.name):
            assert inst.get_context() == {"a": 2, "b": 3, "c": 4}
        assert inst.get_context() == {"a": 2, "b": 3}
    assert inst.get_context() == {"a": 1}
    with pytest.raises(RuntimeError), inst.context({"a": 99}):
        raise RuntimeError("boom")
    assert inst.get_context() == {"a": 1}
    with inst.context({"only": "signup"}, event="signed_up"):
        assert inst.get_event_context("signed_up") == {"only": "signup"}
    assert inst.get_event_context("signed_up") == {}


def test_event_scoped_context_only_applies_to_that_event(inst: phactor.Instance) -> None:
    inst.set_event_context("checkout", {"cart": "c1"})
    phactor.set_event_context("checkout", {"currency": "EUR"}, instance=inst.name)
    assert phactor.get_event_context("checkout", instance=inst.name) == {
        "cart": "c1",
        "currency": "EUR",
    }
    inst.capture("checkout", "u1")
    inst.capture("pageview", "u1")
    events = {e["event"]: e["properties"] for e in sent(inst)}
    assert events["checkout"]["cart"] == "c1"
    assert events["checkout"]["currency"] == "EUR"
    assert "cart" not in events["pageview"]
    assert "currency" not in events["pageview"]


def test_precedence_global_context_event_call(inst: phactor.Instance) -> None:
    inst.set_context({"layer": "context", "c": 1})
    inst.set_event_context("e", {"layer": "event", "s": 1})
    inst.capture("e", "u1")
    inst.capture("e", "u1", {"layer": "call"})
    inst.capture("other", "u1")
    first, second, third = sent(inst)
    assert first["properties"]["layer"] == "event"
    assert second["properties"]["layer"] == "call"
    assert third["properties"]["layer"] == "context"
    for e in (first, second, third):
        assert e["properties"]["g"] == 1  # global_properties always underneath
        assert e["properties"]["c"] == 1
    with inst.context({"layer": "ignored"}):
        pass
    inst.bare_capture("bare", "u1")
    (bare,) = sent(inst)[3:]
    assert bare["properties"]["layer"] == "global"  # bare_capture ignores context
    assert "c" not in bare["properties"]


def test_distinct_id_precedence(inst: phactor.Instance) -> None:
    inst.set_context({"distinct_id": "from-context"})
    inst.capture("e", "from-arg", {"distinct_id": "from-props"})
    inst.capture("e", None, {"distinct_id": "from-props"})
    inst.capture("e")
    assert [e["distinct_id"] for e in sent(inst)] == ["from-arg", "from-props", "from-context"]
    # The id is not also left behind as an ordinary property.
    assert all("distinct_id" not in e["properties"] for e in sent(inst))


def test_distinct_id_missing_everywhere_sends_personless_events(inst: phactor.Instance) -> None:
    assert inst.capture("e") is not None
    assert inst.capture("e", "") is not None
    assert inst.stats()["dropped"] == {}
    assert all(_personless(e) for e in sent(inst))


def _personless(event: dict[str, Any]) -> bool:
    """Sent as the posthog package sends an event without distinct_id (fresh id, no person)."""
    return (
        event["properties"].get("$process_person_profile") is False
        and len(event["distinct_id"]) == 36
    )


def test_context_is_per_instance(instance_name: str) -> None:
    a = phactor.start(f"{instance_name}-a", test_mode=True)
    b = phactor.start(f"{instance_name}-b", test_mode=True)
    a.set_context({"who": "a", "distinct_id": "user-a"})
    assert b.get_context() == {}
    assert b.capture("e") is not None
    assert a.capture("e") is not None
    assert sent(a)[0]["properties"]["who"] == "a"
    (b_event,) = phactor.testing.events(b.name)
    assert _personless(b_event) and "who" not in b_event["properties"]


def test_context_rejects_non_mappings(inst: phactor.Instance) -> None:
    with pytest.raises(TypeError):
        inst.set_context(["a"])
    with pytest.raises(TypeError):
        inst.set_event_context("", {"a": 1})
    with pytest.raises(TypeError):
        inst.set_event_context("e", "nope")
    assert inst.get_context() == {}


def test_get_context_returns_a_copy(inst: phactor.Instance) -> None:
    inst.set_context({"a": 1})
    inst.get_context()["a"] = 2
    inst.get_event_context("e")["x"] = 1
    assert inst.get_context() == {"a": 1}
    assert inst.get_event_context("e") == {}


def test_a_restarted_name_starts_with_empty_context(instance_name: str) -> None:
    first = phactor.start(instance_name, test_mode=True)
    first.set_context({"distinct_id": "stale-user"})
    first.set_event_context("e", {"stale": True})
    first.stop(timeout=2)
    second = phactor.start(instance_name, test_mode=True)
    assert second.get_context() == {}
    assert second.get_event_context("e") == {}
    assert second.capture("e") is not None
    (event,) = phactor.testing.events(second.name)
    assert _personless(event)  # the old instance's distinct_id is gone
