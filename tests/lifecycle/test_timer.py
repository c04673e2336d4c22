"""The shared scheduler thread: delayed callbacks run in order, cancelled ones never run, and a
cancel after the callback ran leaves nothing behind."""

from __future__ import annotations

import threading

from phactor.timer import scheduler


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
