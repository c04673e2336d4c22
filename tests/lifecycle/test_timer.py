"""The shared scheduler thread: delayed callbacks run in order, cancelled ones never run, and a
cancel after the callback ran leaves nothing behind."""

from __future__ import annotations

import threading
from random import Random

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
    assert cancelled not in scheduler._cancelled  # consumed when its entry came due


def test_cancelling_a_callback_that_already_ran_remembers_nothing():
    done = threading.Event()
    handle = scheduler.call_later(0, done.set)
    assert done.wait(5)
    scheduler.cancel(handle)
    scheduler.cancel(handle + 10**9)  # never scheduled
    assert handle not in scheduler._cancelled
    assert handle + 10**9 not in scheduler._cancelled


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
            assert own._heap == [] and own._waiting == set() and own._cancelled == set()
        else:
            assert own._heap[0][1] in live  # the thread never waits for a cancelled entry
            assert {h for _, h, _ in own._heap} >= live
            assert own._waiting == {h for _, h, _ in own._heap}


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
