"""The supervision tree: restarts without loss, restart intensity, children, stopping one name."""

from __future__ import annotations

import logging

import pytest
from conftest import assert_ledger, wait_until

import phactor
from phactor.devserver import DevServer

KEY = "phc_supervision"
# Nothing leaves on its own: only flush() (or a full batch) sends.
HOLD = {"flush_at": 10_000, "flush_interval": 3600.0}


def restarted(inst: phactor.Instance, n: int) -> bool:
    children = inst.children()
    return inst.stats()["restarts"] >= n and bool(children) and all(children.values())


def test_children_reports_each_child_alive(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(instance_name, api_key=KEY, host=devserver.url, senders=3)
    children = inst.children()
    # The first Sender and the Batcher start with the tree; the spare Senders start on demand
    # and are listed once started (docs/architecture.md).
    assert {"sender-0", "batcher"} <= set(children)
    assert not any(name.startswith("sender-") for name in set(children) - {"sender-0"})
    assert all(children.values()), children


def test_crashed_batcher_restarts_with_queue_intact(
    devserver: DevServer, instance_name: str
) -> None:
    inst = phactor.start(instance_name, api_key=KEY, host=devserver.url, **HOLD)
    uuids = {inst.capture("queued", f"user-{i}") for i in range(50)}
    assert inst.queue_length() == 50
    inst._crash_child("batcher")
    assert wait_until(lambda: restarted(inst, 1)), inst.stats()
    assert inst.queue_length() == 50
    assert devserver.count() == 0
    assert_ledger(inst)
    assert inst.flush(timeout=10)
    assert devserver.wait_for(50)
    assert set(devserver.uuid_counts()) == uuids
    assert set(devserver.uuid_counts().values()) == {1}
    stats = assert_ledger(inst)
    assert stats["sent"] == 50 and stats["restarts"] == 1


def test_restarted_batcher_keeps_its_timer(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(
        instance_name, api_key=KEY, host=devserver.url, flush_at=10_000, flush_interval=0.2
    )
    inst._crash_child("batcher")
    assert wait_until(lambda: restarted(inst, 1))
    inst.capture("after_restart", "u1")
    # No flush(): only the new incarnation's interval timer can send it.
    assert devserver.wait_for(1, timeout=5)
    assert_ledger(inst)


def test_batch_stuck_in_a_dead_sender_is_reclaimed(
    devserver: DevServer, instance_name: str
) -> None:
    inst = phactor.start(
        instance_name,
        api_key=KEY,
        host=devserver.url,
        senders=1,
        flush_at=5,
        flush_interval=3600.0,
    )
    devserver.delay(0.4)
    first = {inst.capture("first", f"u{i}") for i in range(5)}
    # Batch A is in flight: its Send sits in sender-0's inbox ahead of the crash.
    assert wait_until(lambda: inst.stats()["in_flight"] == 5)
    second = {inst.capture("second", f"u{i}") for i in range(5)}
    inst._crash_child("sender-0")
    # When A settles, B goes to sender-0 (the dying incarnation, behind the Crash, or the new
    # one): either way it must arrive, exactly once.
    assert wait_until(lambda: restarted(inst, 1), timeout=10)
    devserver.delay(0)
    assert inst.flush(timeout=10)
    assert devserver.wait_for(10)
    counts = devserver.uuid_counts()
    assert set(counts) == first | second
    assert set(counts.values()) == {1}
    stats = assert_ledger(inst)
    assert stats["sent"] == 10 and stats["in_flight"] == 0


def test_no_event_lost_across_sender_crashes_during_a_stream(
    devserver: DevServer, instance_name: str
) -> None:
    inst = phactor.start(
        instance_name,
        api_key=KEY,
        host=devserver.url,
        senders=2,
        flush_at=7,
        flush_interval=0.05,
        max_restarts=100,
        max_seconds=5,
    )
    devserver.delay(0.01)
    uuids: list[str | None] = []
    crashes = 10
    for n in range(1, crashes + 1):
        uuids += [inst.capture("stream", f"user-{i % 13}", {"i": i}) for i in range(60)]
        # sender-1 is a spare, started on demand: the backlog above starts it.
        target = f"sender-{n % 2}"
        assert wait_until(lambda target=target: inst.children().get(target) is True), target
        inst._crash_child(target)
        # Keep capturing while the Sender dies and comes back.
        uuids += [inst.capture("stream", f"user-{i % 13}", {"i": i}) for i in range(60)]
        assert wait_until(lambda n=n: restarted(inst, n), timeout=10), inst.stats()
        assert_ledger(inst)
    assert None not in uuids and len(set(uuids)) == 1200
    assert inst.flush(timeout=15)
    assert devserver.wait_for(1200, timeout=10)
    counts = devserver.uuid_counts()
    assert set(counts) == set(uuids)
    assert max(counts.values()) == 1  # nothing sent twice either
    stats = assert_ledger(inst)
    assert stats["sent"] == 1200 and stats["dropped"] == {}
    assert stats["restarts"] == crashes


def test_restart_intensity_exceeded_stops_the_tree_cleanly(
    devserver: DevServer, instance_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="phactor")
    other = phactor.start(f"{instance_name}-other", api_key="phc_other", host=devserver.url)
    inst = phactor.start(
        instance_name, api_key=KEY, host=devserver.url, max_restarts=1, max_seconds=5, **HOLD
    )
    inst.capture("before", "u1")
    inst._crash_child("batcher")
    assert wait_until(lambda: restarted(inst, 1))
    assert inst.running
    inst._crash_child("batcher")
    assert wait_until(lambda: not inst.running)
    assert wait_until(lambda: inst.children() == {})

    # Logged, with the reason.
    assert any("restart_intensity_exceeded" in r.getMessage() for r in caplog.records)
    # The host app is fine: calls return None, counted, never raise.
    assert inst.capture("after", "u1") is None
    assert phactor.capture("after", "u1", instance=instance_name) is None
    assert inst.flush(timeout=1) is True
    stats = assert_ledger(inst)
    assert stats["dropped"]["stopped"] >= 2  # the queued one and the later ones
    assert stats["captured"] == 3

    # Other instances are unaffected.
    assert all(other.children().values())
    other.capture("still_works", "u2")
    assert other.flush(timeout=5)
    assert devserver.wait_for(1)
    assert devserver.count(api_key="phc_other") == 1
    assert devserver.count(api_key=KEY) == 0
    assert_ledger(other)

    # The failed instance can still be stopped and its name reused.
    assert phactor.stop(instance_name, timeout=2)
    assert instance_name not in phactor.instances()
    assert_ledger(inst)
    again = phactor.start(instance_name, api_key=KEY, host=devserver.url)
    assert all(again.children().values())


def test_a_name_whose_tree_gave_up_can_be_started_again(
    devserver: DevServer, instance_name: str
) -> None:
    failed = phactor.start(instance_name, api_key=KEY, host=devserver.url, max_restarts=0)
    failed._crash_child("batcher")
    assert wait_until(lambda: not failed.running)
    fresh = phactor.start(instance_name, api_key=KEY, host=devserver.url)
    assert phactor.instance(instance_name) is fresh
    assert all(fresh.children().values())
    fresh.capture("e", "u1")
    assert fresh.flush(timeout=5)
    assert devserver.count() == 1
    assert_ledger(failed)


def test_stop_one_instance_leaves_the_others_running(
    devserver: DevServer, instance_name: str
) -> None:
    a = phactor.start(f"{instance_name}-a", api_key="phc_a", host=devserver.url, **HOLD)
    b = phactor.start(f"{instance_name}-b", api_key="phc_b", host=devserver.url, **HOLD)
    for i in range(5):
        a.capture("from_a", f"u{i}")
        b.capture("from_b", f"u{i}")
    assert phactor.stop(a.name, timeout=5)
    # stop() drained a's queue.
    assert devserver.count(api_key="phc_a") == 5
    assert a.name not in phactor.instances() and b.name in phactor.instances()
    with pytest.raises(phactor.NotStarted):
        phactor.instance(a.name)
    assert a.children() == {}
    assert not a.running
    # stats() keeps answering after stop with the final figures.
    final = assert_ledger(a)
    assert final["captured"] == 5 and final["sent"] == 5
    # b was not touched: its queue is still there and it still delivers.
    assert b.queue_length() == 5
    assert all(b.children().values())
    assert b.flush(timeout=5)
    assert devserver.wait_for(10)
    assert devserver.count(api_key="phc_b") == 5
    assert_ledger(b)


def test_stop_twice_and_stop_unknown(instance_name: str) -> None:
    inst = phactor.start(instance_name, test_mode=True)
    assert inst.stop(timeout=2)
    assert inst.stop(timeout=2)
    assert phactor.stop(instance_name) is False  # not running: False (issue 12 #6)


def test_a_wake_told_while_a_child_starts_is_told_again_once_it_is_registered() -> None:
    # The spool's replay loads a dead process's backlog on its writer thread and wakes the
    # Batcher by name; while the Batcher was starting the name was not yet registered, the
    # wake was lost and, with nothing else to come, the backlog waited for ever (seen as a
    # 1-in-12 hang of the spool kill test). `ChildSpec.registered` tells it again.
    import threading

    import pykka

    from phactor.supervisor import ChildSpec, Registry, StartChild, SupervisedActor, Supervisor

    woken = threading.Event()

    class Child(SupervisedActor):
        def handle(self, message: object) -> None:
            if message == "wake":
                woken.set()

    registry = Registry()
    supervisor = Supervisor.start(
        "wake-test", registry, max_restarts=3, max_seconds=5.0,
        on_restart=lambda name: None, on_give_up=lambda reason: None,
    )  # fmt: skip

    def start(generation: int) -> pykka.ActorRef[object]:
        ref = Child.start("child", generation, supervisor)
        assert registry.tell("child", "wake") is False  # told before registration: lost
        return ref

    spec = ChildSpec("child", start, registered=lambda ref: ref.tell("wake"))
    try:
        assert supervisor.ask(StartChild(spec), timeout=5)
        assert woken.wait(5)
    finally:
        ref = registry.get("child")
        if ref is not None:
            ref.stop(timeout=5)
