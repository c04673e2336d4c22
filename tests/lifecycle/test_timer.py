"""The shared scheduler thread: delayed callbacks run in order, cancelled ones never run, and a
cancel leaves nothing behind (after the callback ran, or before: the entry and what its callback
holds are released at once, the heap stays bounded)."""

from __future__ import annotations

import gc
import os
import threading
import weakref
from collections.abc import Callable
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phactor.timer import Scheduler, scheduler


def test_callbacks_run_in_due_order_and_a_cancelled_one_never_runs():
    ran: list[str] = []
    done = threading.Event()
    cancelled = scheduler.call_later(0.05, lambda: ran.append("cancelled"))
    scheduler.call_later(0.02, lambda: ran.append("first"))
    scheduler.cancel(cancelled)
    # Due after the cancelled one: once it ran, the cancelled one's time has passed too.
    scheduler.call_later(0.1, lambda: (ran.append("last"), done.set()))
    assert done.wait(5)
    assert ran == ["first", "last"]
    assert cancelled not in scheduler._pending


def test_cancelling_a_callback_that_already_ran_remembers_nothing():
    done = threading.Event()
    handle = scheduler.call_later(0, done.set)
    assert done.wait(5)
    scheduler.cancel(handle)
    scheduler.cancel(handle + 10**9)  # never scheduled
    assert handle not in scheduler._pending
    assert handle + 10**9 not in scheduler._pending


# -- cancelled timers leave the heap ------------------------------------------------------------


class _Referent:
    """Something a timer's closure holds (a Batcher, a session...), to watch with a weakref."""


def test_the_heap_does_not_grow_under_arm_and_cancel_cycles():
    # A timer re-armed and cancelled over and over (a flush tick, a retry timer cancelled at
    # stop): each cycle used to leave its entry in the heap until its deadline, an hour away.
    sched = Scheduler()
    for _ in range(100_000):
        sched.cancel(sched.call_later(3600, _noop))
    assert len(sched._heap) <= 200
    live = sched.call_later(3600, _noop)  # a live timer survives compaction
    for _ in range(1_000):
        sched.cancel(sched.call_later(3600, _noop))
    assert live in sched._pending
    assert len(sched._heap) <= 200
    sched.cancel(live)


def test_a_cancelled_callback_releases_what_it_holds_at_once():
    sched = Scheduler()
    referent = _Referent()
    watch = weakref.ref(referent)
    handle = sched.call_later(3600, _holding(referent))
    del referent
    assert watch() is not None
    sched.cancel(handle)
    gc.collect()
    assert watch() is None  # not kept alive for an hour by the heap


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("arm"), st.sampled_from([0.0, 0.001, 0.003, 3600.0])),
            st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=200)),
        ),
        max_size=120,
    )
)
def test_any_arm_and_cancel_sequence_runs_exactly_the_live_due_callbacks(ops):
    sched = _PROPERTY_SCHEDULER
    ran: list[int] = []
    handles: list[tuple[int, float]] = []
    live: dict[int, float] = {}
    for op, arg in ops:
        if op == "arm":
            index = len(handles)
            handle = sched.call_later(arg, lambda index=index: ran.append(index))
            handles.append((handle, arg))
            live[index] = arg
        elif handles:
            index = arg % len(handles)
            sched.cancel(handles[index][0])
            live.pop(index, None)
    # Bounded: cancelled entries never outnumber the live ones by more than the slack.
    far = [i for i, delay in live.items() if delay > 60]
    done = threading.Event()
    sched.call_later(0.01, done.set)  # due after every near one: they ran before it
    assert done.wait(5)
    near = sorted(i for i, delay in live.items() if delay <= 60)
    assert sorted(ran) == near  # every live due callback ran once, no cancelled one did
    assert len(sched._heap) <= 2 * len(far) + 130
    for index in far:
        sched.cancel(handles[index][0])


def _noop() -> None:
    pass


def _holding(referent: object) -> Callable[[], None]:
    return lambda: print(referent)  # a closure over the referent


_PROPERTY_SCHEDULER = Scheduler()


class _CountingCondition(threading.Condition):
    notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        super().notify(n)


def _scheduler(thread: bool = True) -> tuple[Scheduler, _CountingCondition]:
    own = Scheduler()
    cond = own._cond = _CountingCondition()
    if not thread:
        own._thread = threading.main_thread()  # "running": no thread is started for it
    return own, cond


@given(
    st.lists(st.tuples(st.integers(1, 10_000), st.booleans()), min_size=1, max_size=40),
    st.randoms(use_true_random=False),
)
def test_cancelled_entries_due_first_leave_the_heap_at_once(
    entries: list[tuple[int, bool]], rnd: Random
) -> None:
    # Request deadlines are cancelled as their request ends: left in the heap until due, each
    # woke the scheduler thread once, request_timeout later, only to be dropped.
    own, _ = _scheduler(thread=False)
    handles = [(own.call_later(600 + ms / 1000, lambda: None), cancel) for ms, cancel in entries]
    doomed = [h for h, cancel in handles if cancel]
    rnd.shuffle(doomed)
    for handle in doomed:
        own.cancel(handle)
    live = {h for h, cancel in handles if not cancel}
    with own._cond:
        if not live:
            assert own._heap == [] and own._pending == {} and own._cancelled == 0
        else:
            assert own._heap[0][1] in live  # the thread never waits for a cancelled entry
            assert {h for _, h, cb in own._heap if cb is not None} == live
            assert set(own._pending) == {h for _, h, cb in own._heap if cb is not None}


def test_a_callback_due_after_the_first_one_does_not_wake_the_thread() -> None:
    own, cond = _scheduler()
    done = threading.Event()
    own.call_later(0.05, done.set)
    first = cond.notified
    for _ in range(200):  # e.g. one request deadline each, cancelled as the request ends
        own.cancel(own.call_later(10.0, lambda: None))
    assert cond.notified == first
    assert done.wait(5)
    with own._cond:
        assert own._heap == []


def _voluntary_switches(native_id: int | None) -> int:
    with open(f"/proc/self/task/{native_id}/status") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="Linux /proc only")
def test_a_timer_due_after_the_next_one_does_not_wake_the_scheduler_thread():
    # Every HTTP request arms a deadline and cancels it when answered: with a wake-up per arm,
    # the scheduler thread took a GIL turn from the app for every batch sent.
    sched = Scheduler()
    ran = threading.Event()
    sched.call_later(0.2, ran.set)  # starts the thread; it waits for this one
    first = sched.call_later(3600, lambda: None)
    thread = sched._thread
    assert thread is not None
    pause = threading.Event()  # never set: a short pause lets the thread run, as between POSTs
    before = _voluntary_switches(thread.native_id)
    for i in range(200):
        sched.cancel(sched.call_later(3600 + i, lambda: None))
        pause.wait(0.0005)
    after = _voluntary_switches(thread.native_id)
    sched.cancel(first)
    assert after - before < 20, f"{after - before} wake-ups for 200 later timers"
    assert ran.wait(5)  # an earlier one still runs on time


def test_a_timer_due_before_the_next_one_still_runs_on_time():
    sched = Scheduler()
    sched.call_later(3600, lambda: None)
    ran = threading.Event()
    sched.call_later(0.01, ran.set)
    assert ran.wait(5)
