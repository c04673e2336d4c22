"""The shared scheduler thread: delayed callbacks run in order, cancelled ones never run, and a
cancel after the callback ran leaves nothing behind."""

from __future__ import annotations

import os
import threading

import pytest

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
